/* main: the command line of posthorn(8) — `posthorn [-c FILE] COMMAND ...`.
 * Exit status: 0 success, 1 an error the user can fix, 2 bad usage. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "auth/sasl_gssapi.h"
#include "cli/check_dns.h"
#include "cli/check_spf.h"
#include "cli/check_hosts.h"
#include "cli/cmd_cert_status.h"
#include "cli/cmd_dkim.h"
#include "cli/cmd_queue.h"
#include "cli/cmd_user.h"
#include "conf/conf.h"
#include "lib/log.h"
#include "daemon/preflight.h"
#include "daemon/server.h"
#include "net/tls.h"
#include "lib/util.h"
#include "runtime/runtime.h"

#define DEFAULT_CONF "/etc/posthorn/posthorn.conf"

struct command {
	const char *name;
	int (*run)(const char *conf_path, int argc, char **argv);
	const char *usage;
	const char *help;
};

static int cmd_serve(const char *conf_path, int argc, char **argv);
static int cmd_check(const char *conf_path, int argc, char **argv);
static int cmd_help(const char *conf_path, int argc, char **argv);
static int cmd_user_main(const char *conf_path, int argc, char **argv);
static int cmd_queue_main(const char *conf_path, int argc, char **argv);
static int cmd_cert_main(const char *conf_path, int argc, char **argv);
static int cmd_queue_main(const char *conf_path, int argc, char **argv)
{
	return cmd_queue(conf_path, argc - 1, argv + 1);
}

static int cmd_check_dns_main(const char *conf_path, int argc, char **argv);
static int cmd_dkim_main(const char *conf_path, int argc, char **argv)
{
	int r = cmd_dkim(conf_path, argc - 1, argv + 1);
	if (r == 2) {
		report(stderr, "usage: posthorn dkim new DOMAIN SELECTOR [rsa|ed25519], "
			       "dkim sign|verify [FILE]\n");
		(void)report_end(stderr); /* nobody is left to tell when stderr fails */
	}
	return r;
}

static const struct command commands[] = {
	{"serve", cmd_serve, "serve [-c FILE]",
	 "Run the daemon in the foreground, logging to stderr.\n"
	 "SIGTERM/SIGINT stop it cleanly; SIGHUP reloads the configuration, users\n"
	 "and aliases without dropping established sessions (a configuration with\n"
	 "errors is refused and the running one stays)."},
	{"check", cmd_check, "check [-c FILE]",
	 "Parse and validate the configuration.  On error print FILE:LINE:COL: message\n"
	 "for every error and exit 1; otherwise print each virtual server's effective\n"
	 "policy in plain words, then any warnings."},
	{"check-dns", cmd_check_dns_main, "check-dns [-c FILE]",
	 "For each virtual server, resolve its hostname with the configured DNS\n"
	 "servers and report whether it resolves, whether it resolves to the\n"
	 "addresses the server listens on, and whether their reverse (PTR) records\n"
	 "point back to it.  Exit 1 when anything is missing or does not match."},
	{"check-spf", cmd_check_spf, "check-spf [-c FILE] IP SENDER HELO | -",
	 "What the SPF check (RFC 7208) that the SMTP servers make on MAIL FROM decides\n"
	 "for a client address IP, a sender address (<> for the null sender: the HELO\n"
	 "name is checked then) and a HELO name, with the configured DNS servers: the\n"
	 "result (none, neutral, pass, fail, softfail, temperror, permerror) and what\n"
	 "decided it.  With - one \"IP SENDER HELO\" per line of standard input."},
	{"user", cmd_user_main,
	 "user add|passwd|del|test ADDRESS, user list, user vacation ADDRESS [on|off] [-c FILE]",
	 "Manage the user database.  add and passwd read the password from the first\n"
	 "line of standard input (prompting without echo on a terminal).  Only salted\n"
	 "SCRAM-SHA-256 keys are stored, never the password; the file is rewritten\n"
	 "atomically with mode 0600.\n"
	 "vacation ADDRESS on [--message-file F] [--subject S] [--until YYYY-MM-DD]\n"
	 "      [--days N]: the user's out-of-office reply; off stops it; without\n"
	 "      on|off: show it."},
	{"queue", cmd_queue_main, "queue list|show ID|flush|delete ID|tls-report [-c FILE]",
	 "Inspect and act on the outbound queue of the running daemon, through the\n"
	 "control socket in its spool folder (run as root or as the daemon's user).\n"
	 "list: each message waiting for remote delivery: ID, age, size, sender,\n"
	 "      pending recipients, attempts and the last error.\n"
	 "show ID: a message's envelope, the state of each recipient, its header.\n"
	 "flush: try every waiting message now instead of at its next retry.\n"
	 "delete ID: remove a message from the queue; nothing is bounced to the\n"
	 "      sender.\n"
	 "tls-report: send the TLS reports (RFC 8460) of every day counted so far,\n"
	 "      today's included, instead of after the day ends.\n"
	 "Exit 1 when the daemon is not running."},
	{"cert", cmd_cert_main, "cert new --hostname H --out DIR [--rsa BITS], cert status [-c FILE]",
	 "new: create a private key (ECDSA P-256, or RSA of BITS bits; mode 0600), a\n"
	 "self-signed certificate for H (subjectAltName H, valid one year) and a\n"
	 "certificate signing request (CSR) to send to a certification authority:\n"
	 "DIR/H.key, DIR/H.crt, DIR/H.csr.  Existing files are never overwritten.\n"
	 "status: the certificate of the acme block: the names wanted, the names,\n"
	 "issuer and expiry of the one in use, and the last attempt to get one\n"
	 "(when, ok or the reason it failed)."},
	{"dkim", cmd_dkim_main, "dkim new DOMAIN SELECTOR [rsa|ed25519], dkim sign|verify [FILE] [-c FILE]",
	 "new: write a DKIM signing key (RSA 2048 bits, or Ed25519) for a local\n"
	 "domain to dkim/DOMAIN.SELECTOR.TYPE.key beside the configuration (mode\n"
	 "0600, owned by run-as; never over an existing file) and print the line\n"
	 "for the dkim block and the DNS TXT record to publish.\n"
	 "sign: print the message in FILE (or standard input) signed with the\n"
	 "configured keys of its From domain.\n"
	 "verify: check every DKIM signature of the message, with the keys from\n"
	 "DNS (the configured dns servers); one line per signature.  Exit 1\n"
	 "unless every signature passes."},
	{"help", cmd_help, "help [COMMAND]", "Show usage, or the help of one command."},
};

static void usage(FILE *out)
{
	report(out, "usage: posthorn [-c FILE] COMMAND [ARGS]\n\ncommands:\n");
	for (size_t i = 0; i < ARRAY_LEN(commands); i++)
		report(out, "  posthorn %s\n", commands[i].usage);
	report(out, "  posthorn --version\n\n"
		    "-c FILE: the configuration (default: $POSTHORN_CONF, else %s)\n",
	       DEFAULT_CONF);
}

static const struct command *find_command(const char *name)
{
	for (size_t i = 0; i < ARRAY_LEN(commands); i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

/* A command's usage and help on stdout: `posthorn help COMMAND`, and
 * --help or -h given to any command or sub-command. */
static int command_help(const struct command *c)
{
	printf("usage: posthorn %s\n\n%s\n", c->usage, c->help);
	return 0;
}

static bool wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
			return true;
	return false;
}

/* For the commands that take no arguments: name the first one given
 * (argv[1]), then the usage line; exit status 2. */
static int command_no_arguments(int argc, char **argv)
{
	const struct command *c = find_command(argv[0]);
	if (argv[1][0] == '-')
		complain("%s: unknown option \"%s\"", argv[0], argv[1]);
	else
		complain("%s: unexpected argument \"%s\"", argv[0], argv[1]);
	report(stderr, "usage: posthorn %s\n", c ? c->usage : argv[0]);
	(void)report_end(stderr); /* nobody is left to tell when stderr fails */
	return 2;
}

static int cmd_serve(const char *conf_path, int argc, char **argv)
{
	if (argc != 1)
		return command_no_arguments(argc, argv);
	log_init(false, getenv("POSTHORN_DEBUG") ? LOG_DEBUG : LOG_INFO);
	return server_run(conf_path);
}

/* Every certificate/key pair of every server, with its warnings. */
static int check_report_certificates(const struct conf *conf)
{
	int errors = 0;
	for (size_t i = 0; i < conf->nservers; i++)
		if (conf->servers[i].tls.ncerts > 0) {
			printf("\n");
			break;
		}
	for (size_t i = 0; i < conf->nservers; i++) {
		const struct conf_server *srv = &conf->servers[i];
		errors += tls_report(&srv->tls, srv->name, srv->hostname, stderr, stdout);
	}
	/* the HTTPS of the metrics listener, named as its block is */
	errors += tls_report(&conf->metrics_tls, "metrics-tls", conf->hostname, stderr, stdout);
	return errors;
}

static int cmd_check(const char *conf_path, int argc, char **argv)
{
	if (argc != 1)
		return command_no_arguments(argc, argv);
	struct event_base *base = event_base_new();
	if (!base)
		fatal("event_base_new failed");
	/* what the daemon checks before it serves, by the same function */
	struct runtime *rt = preflight(conf_path, NULL, base, stderr);
	int errors = rt ? 0 : 1;
	if (rt) {
		printf("%s: configuration is valid\n\n", conf_path);
		if (conf_print_policy(rt->conf, stdout) < 0) {
			complain("cannot write to standard output: %s", strerror(errno));
			errors++;
		}
		errors += check_report_certificates(rt->conf);
		if (check_hosts(rt->conf, stdout) < 0)
			errors++;
		for (size_t i = 0; i < rt->conf->nservers; i++)
			if (sasl_gssapi_check_keytab(&rt->conf->servers[i], stdout) < 0)
				errors++;
	}
	runtime_unref(rt);
	event_base_free(base);
	return errors ? 1 : 0;
}

static int cmd_user_main(const char *conf_path, int argc, char **argv)
{
	return cmd_user(conf_path, argc - 1, argv + 1);
}

static int cmd_check_dns_main(const char *conf_path, int argc, char **argv)
{
	if (argc != 1)
		return command_no_arguments(argc, argv);
	return cmd_check_dns(conf_path);
}

static int cmd_cert_main(const char *conf_path, int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "status") == 0) {
		if (argc != 2)
			return command_no_arguments(argc - 1, argv + 1);
		return cmd_cert_status(conf_path);
	}
	return cmd_cert(argc - 1, argv + 1);
}

static int cmd_help(const char *conf_path, int argc, char **argv)
{
	if (argc == 1) {
		usage(stdout);
		return 0;
	}
	const struct command *c = find_command(argv[1]);
	if (argc > 2 || !c) {
		complain("help: %s \"%s\"", argc > 2 ? "unexpected argument" : "unknown command",
			 argv[argc > 2 ? 2 : 1]);
		usage(stderr);
		return 2;
	}
	return command_help(c);
}

/* Take "-c FILE" out of argv wherever it stands; returns the new argc or
 * -1 on a dangling -c. */
static int take_conf_option(int argc, char **argv, const char **conf_path)
{
	int out = 0;
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0) {
			if (i + 1 >= argc)
				return -1;
			*conf_path = argv[++i];
		} else if (strncmp(argv[i], "-c", 2) == 0 && argv[i][2]) {
			*conf_path = argv[i] + 2;
		} else {
			argv[out++] = argv[i];
		}
	}
	argv[out] = NULL;
	return out;
}

/* Whatever a command printed on stdout must have been written: a full
 * disk or a closed pipe turns success into failure. */
static int finish(int status)
{
	if (status == 0 && report_end(stdout) < 0) {
		complain("cannot write to standard output: %s", strerror(errno));
		return 1;
	}
	return status;
}

static int run(int argc, char **argv);

int main(int argc, char **argv)
{
	return finish(run(argc, argv));
}

static int run(int argc, char **argv)
{
	const char *conf_path = getenv("POSTHORN_CONF");
	if (!conf_path || !*conf_path)
		conf_path = DEFAULT_CONF;
	argc = take_conf_option(argc - 1, argv + 1, &conf_path);
	argv++;
	if (argc < 0) {
		complain("-c needs a FILE");
		return 2;
	}
	if (argc == 0) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[0], "--version") == 0 || strcmp(argv[0], "-V") == 0) {
		printf("posthorn %s\n", POSTHORN_VERSION);
		return 0;
	}
	if (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0)
		return cmd_help(conf_path, 1, argv);
	const struct command *c = find_command(argv[0]);
	if (!c) {
		complain("unknown command \"%s\" (see posthorn help)", argv[0]);
		return 2;
	}
	if (wants_help(argc, argv))
		return command_help(c);
	return c->run(conf_path, argc, argv);
}
