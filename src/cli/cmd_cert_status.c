/* cmd_cert_status: what the ACME client has, for the administrator: read
 * from the files it keeps in SPOOL/acme/ (certificate.pem, status); the daemon
 * need not run. */
#define _GNU_SOURCE
#include "cli/cmd_cert_status.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "conf/conf.h"
#include "lib/util.h"

enum {
	STATUS_FILE_MAX = 4096,
	STATUS_EXIT_OK = 0,
	STATUS_EXIT_ERROR = 1,
};

static void status_time(long t, char *out, size_t outsz)
{
	struct tm tm;
	time_t tt = (time_t)t;
	if (!gmtime_r(&tt, &tm) || strftime(out, outsz, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
		xsnprintf(out, outsz, "%ld", t);
}

/* "in 3 days", "in 42 s", "expired 5 s ago" */
static void status_left(long secs, char *out, size_t outsz)
{
	long a = secs < 0 ? -secs : secs;
	const char *unit = "s";
	long n = a;
	if (a >= 2 * 86400) {
		n = a / 86400;
		unit = "days";
	} else if (a >= 2 * 3600) {
		n = a / 3600;
		unit = "hours";
	}
	if (secs >= 0)
		xsnprintf(out, outsz, "in %ld %s", n, unit);
	else
		xsnprintf(out, outsz, "expired %ld %s ago", n, unit);
}

static long status_asn1_epoch(const ASN1_TIME *t)
{
	struct tm tm;
	return t && ASN1_TIME_to_tm(t, &tm) == 1 ? (long)timegm(&tm) : 0;
}

static void status_print_sans(X509 *x)
{
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	printf("  names:      ");
	for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		if (g->type == GEN_DNS)
			printf("%s%.*s", i ? " " : "", ASN1_STRING_length(g->d.dNSName),
			       (const char *)ASN1_STRING_get0_data(g->d.dNSName));
	}
	printf("\n");
	GENERAL_NAMES_free(gens);
}

static void status_print_cert(const char *path)
{
	FILE *f = fopen(path, "re");
	X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
	if (f)
		(void)fclose(f); /* read only */
	printf("certificate:  %s\n", path);
	if (!x) {
		printf("  none yet (a self-signed stand-in is served until the CA issues one)\n");
		return;
	}
	status_print_sans(x);
	char issuer[256] = "";
	BIO *b = BIO_new(BIO_s_mem());
	if (b && X509_NAME_print_ex(b, X509_get_issuer_name(x), 0, XN_FLAG_ONELINE) >= 0) {
		int n = BIO_read(b, issuer, sizeof issuer - 1);
		issuer[n > 0 ? n : 0] = '\0';
	}
	BIO_free(b);
	printf("  issuer:     %s\n", issuer);
	long na = status_asn1_epoch(X509_get0_notAfter(x));
	char when[64], left[64];
	status_time(na, when, sizeof when);
	status_left(na - (long)time(NULL), left, sizeof left);
	printf("  expires:    %s (%s)\n", when, left);
	X509_free(x);
}

/* The value of key= in the status file's text, or NULL. */
static const char *status_value(char *text, const char *key)
{
	size_t k = strlen(key);
	for (char *line = text; line && *line;) {
		char *nl = strchr(line, '\n');
		if (strncmp(line, key, k) == 0 && line[k] == '=') {
			if (nl)
				*nl = '\0';
			return line + k + 1;
		}
		line = nl ? nl + 1 : NULL;
	}
	return NULL;
}

static void status_print_attempt(const char *path)
{
	char text[STATUS_FILE_MAX + 1];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, text, STATUS_FILE_MAX) : -1;
	if (fd >= 0)
		close(fd);
	if (n <= 0) {
		printf("last attempt: none yet\n");
		return;
	}
	text[n] = '\0';
	/* three copies: status_value() cuts its line out of the text */
	char a[sizeof text], r[sizeof text];
	memcpy(a, text, (size_t)n + 1);
	memcpy(r, text, (size_t)n + 1);
	const char *attempt = status_value(a, "attempt");
	const char *result = status_value(r, "result");
	const char *error = status_value(text, "error");
	char when[64];
	status_time(attempt ? strtol(attempt, NULL, 10) : 0, when, sizeof when);
	if (result && strcmp(result, "ok") == 0)
		printf("last attempt: %s: ok\n", when);
	else
		printf("last attempt: %s: failed: %s\n", when, error ? error : "no reason recorded");
}

int cmd_cert_status(const char *conf_path)
{
	struct conf *conf;
	if (conf_load(conf_path, &conf, stderr) != 0)
		return STATUS_EXIT_ERROR;
	if (!conf->acme.set) {
		complain("%s has no acme block: no certificate from ACME", conf_path);
		conf_free(conf);
		return STATUS_EXIT_ERROR;
	}
	printf("directory:    %s\nwanted names:", conf->acme.directory);
	for (size_t i = 0; i < conf->acme.nnames; i++)
		printf(" %s", conf->acme.names[i]);
	printf("\n");
	char *cert = conf_acme_path(conf, ACME_CERT_FILE);
	char *status = conf_acme_path(conf, "status");
	status_print_cert(cert);
	status_print_attempt(status);
	free(cert);
	free(status);
	conf_free(conf);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		complain("cannot write to standard output: %s", strerror(errno));
		return STATUS_EXIT_ERROR;
	}
	return STATUS_EXIT_OK;
}
