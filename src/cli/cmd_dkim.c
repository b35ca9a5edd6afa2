/* cmd_dkim: `posthorn dkim new DOMAIN SELECTOR [rsa|ed25519]` writes a
 * key and prints its DNS record (RFC 6376 §3.6.1, RFC 8463 §4.2); `dkim
 * sign [FILE]` signs a message with the configured keys; `dkim verify
 * [FILE]` verifies every signature of one; check-dns's DKIM part. */
#include "cli/cmd_dkim.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/pem.h>

#include "conf/conf.h"
#include "lib/util.h"
#include "mailauth/dkim_key.h"
#include "mailauth/dkim_sign.h"
#include "mailauth/dkim_verify.h"
#include "net/dns.h"

enum {
	DKIM_FILE_MAX = 64 * 1024 * 1024, /* a message read by sign or verify */
	TXT_STRING_MAX = 255,             /* one character-string (RFC 1035 §3.3) */
};

static int dkim_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int dkim_fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vcomplain(fmt, ap);
	va_end(ap);
	return 1;
}

/* A domain or selector as `dkim new` takes it: DNS labels of letters,
 * digits, '-' and '_'. */
static bool name_is_valid(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 253 || s[0] == '.' || s[n - 1] == '.' || strstr(s, ".."))
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-' || *s == '_' ||
		      *s == '.'))
			return false;
	return true;
}

/* ---- dkim new ------------------------------------------------------------------ */

/* The record as a zone file line, in strings of at most 255 bytes. */
static void print_record(FILE *out, const char *selector, const char *domain, const char *rec)
{
	report(out, "%s._domainkey.%s. IN TXT (", selector, domain);
	size_t n = strlen(rec);
	for (size_t i = 0; i < n; i += TXT_STRING_MAX)
		report(out, " \"%.*s\"", (int)(n - i < TXT_STRING_MAX ? n - i : TXT_STRING_MAX),
		       rec + i);
	report(out, " )\n");
}

/* The run-as user owns the key when root writes it (the daemon reads it
 * after dropping privileges). */
static int key_owner(const struct conf *conf, uid_t *uid, gid_t *gid, bool *set)
{
	*set = false;
	if (!conf->run_as || geteuid() != 0)
		return 0;
	errno = 0;
	const struct passwd *pw = getpwnam(conf->run_as);
	if (!pw)
		return dkim_fail("run-as user %s does not exist", conf->run_as);
	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
	*set = true;
	return 0;
}

static char *pem_of(EVP_PKEY *pkey, size_t *len)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *out = NULL;
	if (bio && PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL) == 1) {
		char *p = NULL;
		long n = BIO_get_mem_data(bio, &p);
		if (n > 0) {
			out = xmalloc((size_t)n);
			memcpy(out, p, (size_t)n);
			*len = (size_t)n;
		}
	}
	BIO_free(bio);
	return out;
}

/* Write the key mode 0600, never over an existing file. */
static int write_key(const struct conf *conf, const char *path, EVP_PKEY *pkey)
{
	uid_t uid = 0;
	gid_t gid = 0;
	bool chown_it;
	if (key_owner(conf, &uid, &gid, &chown_it) != 0)
		return 1;
	size_t len = 0;
	char *pem = pem_of(pkey, &len);
	if (!pem)
		return dkim_fail("cannot encode the key");
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	int r = 0;
	if (fd < 0)
		r = dkim_fail("cannot create %s: %s", path, strerror(errno));
	else if ((chown_it && fchown(fd, uid, gid) < 0) || write_all(fd, pem, len) < 0 ||
		 fsync(fd) < 0)
		r = dkim_fail("cannot write %s: %s", path, strerror(errno));
	if (fd >= 0 && close(fd) < 0 && r == 0)
		r = dkim_fail("cannot write %s: %s", path, strerror(errno));
	if (r != 0 && fd >= 0 && unlink(path) < 0)
		complain("cannot remove %s: %s", path, strerror(errno));
	OPENSSL_cleanse(pem, len);
	free(pem);
	return r;
}

static int dkim_new(const struct conf *conf, int argc, char **argv)
{
	if (argc < 3 || argc > 4)
		return 2;
	enum dkim_key_type type = DKIM_KEY_RSA;
	if (argc == 4 && strcmp(argv[3], "ed25519") == 0)
		type = DKIM_KEY_ED25519;
	else if (argc == 4 && strcmp(argv[3], "rsa") != 0) {
		complain("dkim new: unknown key type \"%s\" (rsa or ed25519)", argv[3]);
		return 2;
	}
	char *domain = str_lower(xstrdup(argv[1])), *selector = str_lower(xstrdup(argv[2]));
	int r = 1;
	char *conf_abs = realpath(conf->path, NULL);
	char *dir = path_dirname(conf_abs ? conf_abs : conf->path), *kdir = xasprintf("%s/dkim", dir);
	free(conf_abs);
	char *path = xasprintf("%s/%s.%s.%s.key", kdir, domain, selector, dkim_key_type_name(type));
	EVP_PKEY *pkey = NULL;
	if (!name_is_valid(domain) || !name_is_valid(selector)) {
		r = dkim_fail("bad domain or selector: %s %s", argv[1], argv[2]);
	} else if (!conf_is_local_domain(conf, domain)) {
		r = dkim_fail("%s is not a local domain (\"domains\" in %s)", domain, conf->path);
	} else if (mkdir_p(kdir, 0750) < 0) {
		r = dkim_fail("cannot create %s: %s", kdir, strerror(errno));
	} else if (!(pkey = dkim_key_generate(type))) {
		r = dkim_fail("cannot make a key");
	} else if (write_key(conf, path, pkey) == 0) {
		char *rec = dkim_key_record(pkey);
		char size[32] = "";
		if (type == DKIM_KEY_RSA)
			xsnprintf(size, sizeof size, ", %d bits", EVP_PKEY_get_bits(pkey));
		report(stdout, "wrote %s (%s%s)\n\nadd to the dkim block of %s:\n"
			       "    key %s %s %s\n\npublish this DNS record:\n",
		       path, dkim_key_type_name(type), size, conf->path, domain, selector, path);
		print_record(stdout, selector, domain, rec ? rec : "?");
		free(rec);
		r = report_end(stdout) == 0 ? 0 : 1;
	}
	EVP_PKEY_free(pkey);
	free(path);
	free(kdir);
	free(dir);
	free(domain);
	free(selector);
	return r;
}

/* ---- reading a message ------------------------------------------------------------ */

/* The file (or standard input for "-" or NULL) with CRLF line ends. */
static char *read_message(const char *path, size_t *len)
{
	FILE *f = !path || strcmp(path, "-") == 0 ? stdin : fopen(path, "re");
	if (!f) {
		complain("cannot open %s: %s", path, strerror(errno));
		return NULL;
	}
	size_t cap = 65536, n = 0;
	char *buf = xmalloc(cap);
	int c, prev = 0;
	while ((c = getc(f)) != EOF) {
		if (n + 2 > cap) {
			if (cap >= DKIM_FILE_MAX) {
				complain("%s: more than %d bytes", path ? path : "message", DKIM_FILE_MAX);
				free(buf);
				buf = NULL;
				break;
			}
			cap *= 2;
			buf = xrealloc(buf, cap);
		}
		if (c == '\n' && prev != '\r')
			buf[n++] = '\r';
		buf[n++] = (char)c;
		prev = c;
	}
	if (buf && ferror(f)) {
		complain("cannot read %s: %s", path ? path : "standard input", strerror(errno));
		free(buf);
		buf = NULL;
	}
	if (f != stdin)
		(void)fclose(f); /* read only */
	*len = n;
	return buf;
}

/* ---- dkim sign ------------------------------------------------------------------ */

static int load_keys(const struct conf *conf, struct dkim_privkey *keys, size_t *n)
{
	*n = 0;
	for (size_t i = 0; i < conf->ndkim_keys; i++) {
		const struct conf_dkim_key *k = &conf->dkim_keys[i];
		char why[512];
		if (dkim_privkey_load(k->file, k->domain, k->selector, &keys[*n], why, sizeof why) < 0) {
			complain("%s:%u:%u: dkim key: %s", k->pos.file, k->pos.line, k->pos.col, why);
			return -1;
		}
		(*n)++;
	}
	return 0;
}

static int dkim_sign_file(const struct conf *conf, int argc, char **argv)
{
	if (argc > 2)
		return 2;
	struct dkim_privkey keys[CONF_DKIM_KEYS_MAX];
	size_t nkeys = 0, len = 0;
	int r = 1;
	char *msg = NULL;
	if (load_keys(conf, keys, &nkeys) == 0 && (msg = read_message(argc == 2 ? argv[1] : NULL, &len))) {
		struct dkim_sign *s = dkim_sign_new();
		dkim_sign_feed(s, msg, len);
		char err[256];
		char *sig = dkim_sign_finish(s, keys, nkeys, time(NULL), err, sizeof err);
		dkim_sign_free(s);
		if (!sig)
			r = dkim_fail("not signed: %s", err);
		else if (fputs(sig, stdout) == EOF || fwrite(msg, 1, len, stdout) != len ||
			 fflush(stdout) == EOF)
			r = dkim_fail("cannot write: %s", strerror(errno));
		else
			r = 0;
		free(sig);
	}
	for (size_t i = 0; i < nkeys; i++)
		dkim_privkey_clear(&keys[i]);
	free(msg);
	return r;
}

/* ---- dkim verify ------------------------------------------------------------------ */

struct verify_wait {
	bool done;
	int status;
};

static void verify_print(void *arg, const struct dkim_result *res, size_t n)
{
	struct verify_wait *w = arg;
	w->done = true;
	w->status = n == 0;
	if (n == 0)
		report(stdout, "dkim=none (no signature)\n");
	for (size_t i = 0; i < n; i++) {
		const struct dkim_result *r = &res[i];
		report(stdout, "dkim=%s header.d=%s header.s=%s header.a=%s header.b=%s",
		       dkim_status_name(r->status), r->domain, r->selector, r->algorithm,
		       r->header_b);
		if (r->key_bits)
			report(stdout, " bits=%u", r->key_bits);
		report(stdout, r->reason[0] ? " (%s)\n" : "%s\n", r->reason);
		if (r->status != DKIM_PASS)
			w->status = 1;
	}
}

static int dkim_verify_file(const struct conf *conf, int argc, char **argv)
{
	if (argc > 2)
		return 2;
	size_t len = 0;
	char *msg = read_message(argc == 2 ? argv[1] : NULL, &len);
	if (!msg)
		return 1;
	struct event_base *base = event_base_new();
	if (!base)
		fatal("event_base_new failed");
	char err[256];
	struct dns_resolver *dns = dns_resolver_new(base, &conf->dns, NULL, err, sizeof err);
	struct verify_wait w = {false, 1};
	if (!dns) {
		complain("dns: %s", err);
	} else {
		(void)dkim_verify_start(dns, msg, len, time(NULL), verify_print, &w); /* runs to the end */
		while (!w.done)
			event_base_loop(base, EVLOOP_ONCE);
		dns_resolver_free(dns);
	}
	event_base_free(base);
	free(msg);
	if (report_end(stdout) != 0)
		return 1;
	return w.status;
}

int cmd_dkim(const char *conf_path, int argc, char **argv)
{
	if (argc < 1)
		return 2;
	struct conf *conf;
	if (conf_load(conf_path, &conf, stderr) != 0)
		return 1;
	int r = 2;
	if (strcmp(argv[0], "new") == 0)
		r = dkim_new(conf, argc, argv);
	else if (strcmp(argv[0], "sign") == 0)
		r = dkim_sign_file(conf, argc, argv);
	else if (strcmp(argv[0], "verify") == 0)
		r = dkim_verify_file(conf, argc, argv);
	conf_free(conf);
	return r;
}

/* ---- check-dns ---------------------------------------------------------------------- */

struct txt_wait {
	bool done;
	enum dns_status st;
	char *text;             /* the first record's, owned */
	size_t len;
	size_t n;
};

static void txt_answer(void *arg, enum dns_status st, const struct dns_txt *txt, size_t n,
		       uint32_t ttl)
{
	struct txt_wait *w = arg;
	w->done = true;
	w->st = st;
	w->n = n;
	if (st == DNS_OK && n > 0) {
		w->text = xmalloc(txt[0].len + 1);
		memcpy(w->text, txt[0].text, txt[0].len + 1);
		w->len = txt[0].len;
	}
	(void)ttl;
}

/* One selector: 0 when its record holds its key, else 1 (with what to
 * publish). */
static int check_dkim_key(const struct conf_dkim_key *k, struct event_base *base,
			  struct dns_resolver *dns)
{
	char why[512];
	struct dkim_privkey key;
	if (dkim_privkey_load(k->file, k->domain, k->selector, &key, why, sizeof why) < 0) {
		report(stdout, "  dkim %s: cannot read the key: %s\n", k->selector, why);
		return 1;
	}
	char *name = xasprintf("%s._domainkey.%s", k->selector, k->domain);
	struct txt_wait w = {0};
	dns_lookup_txt(dns, name, txt_answer, &w);
	while (!w.done)
		event_base_loop(base, EVLOOP_ONCE);
	struct dkim_pubkey pub = {0};
	int problem = 1;
	if (w.st != DNS_OK)
		report(stdout, "  dkim %s: no TXT record at %s (%s)\n", k->selector, name,
		       dns_status_name(w.st));
	else if (w.n > 1)
		report(stdout, "  dkim %s: %zu TXT records at %s: publish one\n", k->selector, w.n, name);
	else if (dkim_pubkey_parse(w.text, w.len, &pub, why, sizeof why) < 0)
		report(stdout, "  dkim %s: the record at %s is not a DKIM key: %s\n", k->selector, name,
		       why);
	else if (!dkim_key_same_public(pub.pkey, key.pkey))
		report(stdout, "  dkim %s: the record at %s holds %s\n", k->selector, name,
		       pub.pkey ? "another key" : "no key (revoked)");
	else {
		report(stdout, "  dkim %s: the record at %s matches the key (%s", k->selector, name,
		       dkim_key_type_name(key.type));
		if (key.type == DKIM_KEY_RSA)
			report(stdout, ", %u bits)\n", key.bits);
		else
			report(stdout, ")\n");
		problem = 0;
	}
	if (problem) {
		char *rec = dkim_key_record(key.pkey);
		report(stdout, "  publish:\n    ");
		print_record(stdout, k->selector, k->domain, rec ? rec : "?");
		free(rec);
	}
	dkim_pubkey_clear(&pub);
	dkim_privkey_clear(&key);
	free(w.text);
	free(name);
	return problem;
}

int check_dns_dkim(const struct conf *conf, struct event_base *base, struct dns_resolver *dns)
{
	int problems = 0;
	for (size_t i = 0; i < conf->ndkim_keys; i++) {
		const struct conf_dkim_key *k = &conf->dkim_keys[i];
		if (i == 0 || strcmp(k->domain, conf->dkim_keys[i - 1].domain) != 0)
			report(stdout, "domain %s:\n", k->domain);
		problems += check_dkim_key(k, base, dns);
	}
	return problems;
}
