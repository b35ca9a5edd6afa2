/* check_spf: `posthorn check-spf IP SENDER HELO` runs the same SPF check
 * (RFC 7208) as the SMTP server does on MAIL FROM, with the configured
 * DNS servers, and prints the result and what decided it.  With "-" it
 * reads one query per line of standard input (an administrator's list,
 * or a test suite). */
#include "cli/check_spf.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/event.h>

#include "conf/conf.h"
#include "lib/util.h"
#include "mailauth/spf.h"
#include "net/dns.h"

enum { CHECK_SPF_LINE_MAX = 2048 };

struct check_spf_wait {
	bool done;
	enum spf_result result;
	char detail[256];
	char identity[16];
};

static void check_spf_done(void *arg, const struct spf_outcome *o)
{
	struct check_spf_wait *w = arg;
	w->result = o->result;
	errfmt(w->detail, sizeof w->detail, "%s", o->detail);
	errfmt(w->identity, sizeof w->identity, "%s", o->identity);
	w->done = true;
}

/* sender: "<>" or "" is the null sender. */
static int check_spf_one(struct event_base *base, struct dns_resolver *r, const char *ip,
			 const char *sender, const char *helo, const char *receiver)
{
	struct spf_request req = {.sender = sender, .helo = helo, .receiver = receiver};
	if (strcmp(sender, "<>") == 0)
		req.sender = "";
	if (inet_pton(AF_INET, ip, req.ip) == 1) {
		req.family = AF_INET;
	} else if (inet_pton(AF_INET6, ip, req.ip) == 1) {
		req.family = AF_INET6;
	} else {
		complain("check-spf: \"%s\" is not an IP address", ip);
		return 2;
	}
	struct check_spf_wait w = {0};
	struct spf_check *c = spf_check_start(r, &req, check_spf_done, &w);
	while (!w.done)
		if (event_base_loop(base, EVLOOP_ONCE) < 0) {
			spf_check_cancel(c);
			fatal("event loop failed");
		}
	report(stdout, "%s identity=%s (%s)\n", spf_result_name(w.result), w.identity, w.detail);
	return 0;
}

/* "IP SENDER HELO", separated by tabs when the line has any, else by
 * spaces: the sender is then what lies between the first and the last
 * word (a local part may hold spaces). */
static bool check_spf_split(char *line, char **ip, char **sender, char **helo)
{
	line[strcspn(line, "\r\n")] = '\0';
	int sep = strchr(line, '\t') ? '\t' : ' ';
	char *first = strchr(line, sep), *last = strrchr(line, sep);
	if (!first || first == last)
		return false;
	*first = *last = '\0';
	*ip = line;
	*sender = first + 1;
	*helo = last + 1;
	return **ip && **sender && **helo;
}

static int check_spf_lines(struct event_base *base, struct dns_resolver *r, const char *receiver)
{
	char line[CHECK_SPF_LINE_MAX];
	int status = 0;
	while (fgets(line, sizeof line, stdin)) {
		char *ip, *sender, *helo;
		if (!strchr(line, '\n') && !feof(stdin)) {
			complain("check-spf: a line over %d bytes", CHECK_SPF_LINE_MAX - 2);
			return 2;
		}
		if (!check_spf_split(line, &ip, &sender, &helo)) {
			complain("check-spf: want \"IP SENDER HELO\" on each line");
			return 2;
		}
		int st = check_spf_one(base, r, ip, sender, helo, receiver);
		if (st)
			status = st;
	}
	return status;
}

int cmd_check_spf(const char *conf_path, int argc, char **argv)
{
	if (argc != 4 && !(argc == 2 && strcmp(argv[1], "-") == 0)) {
		complain("usage: posthorn check-spf [-c FILE] IP SENDER HELO | -");
		return 2;
	}
	struct conf *conf;
	if (conf_load(conf_path, &conf, stderr) != 0)
		return 1;
	struct event_base *base = event_base_new();
	if (!base)
		fatal("event_base_new failed");
	char err[256];
	struct dns_resolver *r = dns_resolver_new(base, &conf->dns, NULL, err, sizeof err);
	int status;
	if (!r) {
		complain("dns: %s", err);
		status = 1;
	} else if (argc == 2) {
		status = check_spf_lines(base, r, conf->hostname);
	} else {
		status = check_spf_one(base, r, argv[1], argv[2], argv[3], conf->hostname);
	}
	if (r)
		dns_resolver_free(r);
	event_base_free(base);
	conf_free(conf);
	if (report_end(stdout) != 0 && status == 0)
		status = 1;
	return status;
}
