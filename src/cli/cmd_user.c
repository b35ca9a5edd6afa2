/* cmd_user: `posthorn user add|passwd|del ADDRESS`, `posthorn user list`
 * and `posthorn user test ADDRESS | --principal PRINCIPAL` (posthorn(8)).  The password is the first line of stdin, read without echo
 * when stdin is a terminal; it is wiped after use and never written out. */
#include "cli/cmd_user.h"
#include "cli/cmd_quota.h"
#include "cli/cmd_vacation.h"

#include <errno.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "conf/conf.h"
#include "auth/directory.h"
#include "auth/userdb.h"
#include "lib/util.h"

enum {
	CMD_USER_PASSWORD_MAX = 1024,   /* bytes, line end excluded */
	CMD_USER_EXIT_OK = 0,
	CMD_USER_EXIT_ERROR = 1,
	CMD_USER_EXIT_USAGE = 2,
};

static const char cmd_user_usage_line[] =
    "usage: posthorn [-c FILE] user add ADDRESS | passwd ADDRESS | del ADDRESS | list |\n"
    "       vacation ADDRESS [on|off] [options] | quota ADDRESS [SIZE [MESSAGES] | none |\n"
    "       default] | test ADDRESS | test --principal PRINCIPAL\n";

struct cmd_user_command {
	const char *name;
	int nargs;              /* arguments after the sub-command */
	bool edit;              /* changes the file (else: list) */
	enum userdb_edit op;
	bool password;          /* reads a password from stdin */
};

static const struct cmd_user_command cmd_user_commands[] = {
	{"add", 1, true, USERDB_ADD, true},
	{"passwd", 1, true, USERDB_PASSWD, true},
	{"del", 1, true, USERDB_DELETE, false},
	{"list", 0, false, USERDB_ADD, false},
};

/* A password, wiped by cmd_user_password_clear(). */
struct cmd_user_password {
	char buf[CMD_USER_PASSWORD_MAX + 1];
	size_t len;
};

static void cmd_user_password_clear(struct cmd_user_password *pw)
{
	OPENSSL_cleanse(pw, sizeof *pw);
}

static int cmd_user_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int cmd_user_fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vcomplain(fmt, ap);
	va_end(ap);
	return CMD_USER_EXIT_ERROR;
}

static int cmd_user_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int cmd_user_usage(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vcomplain(fmt, ap);
	va_end(ap);
	stderr_puts(cmd_user_usage_line);
	return CMD_USER_EXIT_USAGE;
}

/* ---- reading the password --------------------------------------------- */

enum cmd_user_read {
	CMD_USER_READ_OK,
	CMD_USER_READ_EOF,      /* nothing at all before end of file */
	CMD_USER_READ_TOO_LONG,
	CMD_USER_READ_INTERRUPTED,
	CMD_USER_READ_ERROR,
};

static volatile sig_atomic_t cmd_user_signalled;

static void cmd_user_on_signal(int sig)
{
	(void)sig;
	cmd_user_signalled = 1;
}

/* One line from fd 0, a byte at a time so that no stdio buffer keeps a
 * copy of the password.  The LF is dropped, so is a CR before it. */
static enum cmd_user_read cmd_user_read_line(struct cmd_user_password *pw)
{
	size_t n = 0;
	bool any = false;
	for (;;) {
		char c;
		ssize_t r = read(STDIN_FILENO, &c, 1);
		if (r < 0 && errno == EINTR && !cmd_user_signalled)
			continue;
		if (r < 0)
			return errno == EINTR ? CMD_USER_READ_INTERRUPTED : CMD_USER_READ_ERROR;
		if (r == 0 || c == '\n') {
			if (r == 0 && !any)
				return CMD_USER_READ_EOF;
			break;
		}
		any = true;
		if (n == CMD_USER_PASSWORD_MAX)
			return CMD_USER_READ_TOO_LONG;
		pw->buf[n++] = c;
	}
	if (n > 0 && pw->buf[n - 1] == '\r')
		n--;
	pw->buf[n] = '\0';
	pw->len = n;
	return CMD_USER_READ_OK;
}

/* Terminal state and signal dispositions saved while echo is off. */
struct cmd_user_tty {
	struct termios saved;
	struct sigaction old[5];
};

static const int cmd_user_signals[5] = {SIGINT, SIGQUIT, SIGTERM, SIGHUP, SIGTSTP};

/* Echo off; a signal interrupts the read (no SA_RESTART) so that the
 * terminal is always restored before we leave. */
static int cmd_user_echo_off(struct cmd_user_tty *t)
{
	if (tcgetattr(STDIN_FILENO, &t->saved) < 0)
		return -1;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = cmd_user_on_signal;
	sigemptyset(&sa.sa_mask);
	cmd_user_signalled = 0;
	for (size_t i = 0; i < ARRAY_LEN(cmd_user_signals); i++)
		sigaction(cmd_user_signals[i], &sa, &t->old[i]);
	struct termios quiet = t->saved;
	quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHOE | ECHOK);
	quiet.c_lflag |= ECHONL;
	if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) < 0) {
		for (size_t i = 0; i < ARRAY_LEN(cmd_user_signals); i++)
			sigaction(cmd_user_signals[i], &t->old[i], NULL);
		return -1;
	}
	return 0;
}

static void cmd_user_echo_restore(struct cmd_user_tty *t)
{
	tcsetattr(STDIN_FILENO, TCSAFLUSH, &t->saved);
	for (size_t i = 0; i < ARRAY_LEN(cmd_user_signals); i++)
		sigaction(cmd_user_signals[i], &t->old[i], NULL);
}

static enum cmd_user_read cmd_user_prompt(const char *prompt, struct cmd_user_password *pw)
{
	struct cmd_user_tty t;
	stderr_puts(prompt);
	if (cmd_user_echo_off(&t) < 0)
		return CMD_USER_READ_ERROR;
	enum cmd_user_read r = cmd_user_read_line(pw);
	int saved = errno;
	cmd_user_echo_restore(&t);
	if (r != CMD_USER_READ_OK)
		stderr_puts("\n");
	errno = saved;
	return r;
}

static int cmd_user_read_status(enum cmd_user_read r)
{
	switch (r) {
	case CMD_USER_READ_OK:
		return 0;
	case CMD_USER_READ_EOF:
		return cmd_user_fail("no password on standard input");
	case CMD_USER_READ_TOO_LONG:
		return cmd_user_fail("password longer than %d bytes", CMD_USER_PASSWORD_MAX);
	case CMD_USER_READ_INTERRUPTED:
		return cmd_user_fail("interrupted");
	case CMD_USER_READ_ERROR:
		break;
	}
	return cmd_user_fail("cannot read the password: %s", strerror(errno));
}

/* On a terminal, ask twice: a typo made without echo would lock the user
 * out.  Piped input is taken as is. */
static int cmd_user_read_password(struct cmd_user_password *pw)
{
	if (!isatty(STDIN_FILENO))
		return cmd_user_read_status(cmd_user_read_line(pw));
	int r = cmd_user_read_status(cmd_user_prompt("Password: ", pw));
	if (r != 0 || pw->len == 0)
		return r;
	struct cmd_user_password again;
	memset(&again, 0, sizeof again);
	r = cmd_user_read_status(cmd_user_prompt("Retype password: ", &again));
	if (r == 0 && (again.len != pw->len || CRYPTO_memcmp(again.buf, pw->buf, pw->len) != 0))
		r = cmd_user_fail("passwords do not match");
	cmd_user_password_clear(&again);
	return r;
}

static int cmd_user_check_password(const struct cmd_user_password *pw)
{
	if (pw->len == 0)
		return cmd_user_fail("empty password");
	/* SASL PLAIN separates its fields with NUL (RFC 4616 §2). */
	if (memchr(pw->buf, '\0', pw->len))
		return cmd_user_fail("password contains a NUL byte");
	return 0;
}

/* ---- the commands ----------------------------------------------------- */

/* Print what a module wrote to its error stream, one "posthorn: " line
 * per line. */
static void cmd_user_relay(char *text)
{
	for (char *line = text; line && *line;) {
		char *nl = strchr(line, '\n');
		if (nl)
			*nl = '\0';
		complain("%s", line);
		line = nl ? nl + 1 : NULL;
	}
}

struct cmd_user_errbuf {
	FILE *fp;
	char *text;
	size_t len;
};

static FILE *cmd_user_errbuf_open(struct cmd_user_errbuf *e)
{
	e->text = NULL;
	e->len = 0;
	e->fp = open_memstream(&e->text, &e->len);
	if (!e->fp)
		fatal("open_memstream: %s", strerror(errno));
	return e->fp;
}

static void cmd_user_errbuf_close(struct cmd_user_errbuf *e)
{
	if (fclose(e->fp) == EOF)
		fatal("cannot collect the error messages: %s", strerror(errno));
	cmd_user_relay(e->text);
	free(e->text);
}

static int cmd_user_list(const struct conf *conf)
{
	struct cmd_user_errbuf e;
	struct userdb *db;
	int r = userdb_load(conf->users, &db, cmd_user_errbuf_open(&e));
	cmd_user_errbuf_close(&e);
	if (r < 0)
		return CMD_USER_EXIT_ERROR;
	for (size_t i = 0; i < userdb_count(db); i++)
		printf("%s\n", userdb_at(db, i)->address);
	userdb_free(db);
	if (fflush(stdout) != 0 || ferror(stdout))
		return cmd_user_fail("cannot write to standard output: %s", strerror(errno));
	return CMD_USER_EXIT_OK;
}

/* When root writes the file for a daemon that drops to run-as, that user
 * must own it (mode 0600). */
static int cmd_user_owner(const struct conf *conf, long *uid, long *gid)
{
	*uid = -1;
	*gid = -1;
	if (!conf->run_as || geteuid() != 0)
		return 0;
	errno = 0;
	const struct passwd *pw = getpwnam(conf->run_as);
	if (!pw)
		return cmd_user_fail("run-as user %s does not exist%s%s", conf->run_as,
				     errno ? ": " : "", errno ? strerror(errno) : "");
	*uid = (long)pw->pw_uid;
	*gid = (long)pw->pw_gid;
	return 0;
}

static void cmd_user_warn_domain(const struct conf *conf, const char *address)
{
	/* NOLINTNEXTLINE(clang-analyzer-core.NonNullParamChecker): every command that edits takes ADDRESS (nargs 1 in cmd_user_commands) */
	const char *domain = strchr(address, '@') + 1;
	if (conf_is_local_domain(conf, domain))
		return;
	complain("warning: %s is not a local domain (\"domains\" in %s): "
		 "mail to %s will not be delivered here",
		 domain, conf->path ? conf->path : "the configuration", address);
}

static int cmd_user_edit(const struct conf *conf, const struct cmd_user_command *cmd,
			 const char *address)
{
	long uid, gid;
	if (cmd_user_owner(conf, &uid, &gid) != 0)
		return CMD_USER_EXIT_ERROR;
	struct cmd_user_password pw;
	memset(&pw, 0, sizeof pw);
	if (cmd->password &&
	    (cmd_user_read_password(&pw) != 0 || cmd_user_check_password(&pw) != 0)) {
		cmd_user_password_clear(&pw);
		return CMD_USER_EXIT_ERROR;
	}
	struct cmd_user_errbuf e;
	int r = userdb_edit(conf->users, cmd->op, address, pw.buf, pw.len, uid, gid,
			    cmd_user_errbuf_open(&e));
	cmd_user_password_clear(&pw);
	cmd_user_errbuf_close(&e);
	if (r < 0)
		return CMD_USER_EXIT_ERROR;
	if (cmd->op == USERDB_ADD)
		cmd_user_warn_domain(conf, address);
	return CMD_USER_EXIT_OK;
}

/* ---- user test: what the configured backend says ------------------------ */

/* A directory's answer, kept by the callback (without workers it comes
 * before the question returns). */
struct cmd_user_answer {
	enum directory_status status;
	char *mailbox;
};

static void cmd_user_answered(void *owner, const struct directory_answer *a)
{
	struct cmd_user_answer *out = owner;
	out->status = a->status;
	out->mailbox = a->mailbox ? xstrdup(a->mailbox) : NULL;
}

/* "what: NAME is the user M" and the like; true when found. */
static bool cmd_user_say(const char *what, const char *name, const struct cmd_user_answer *a)
{
	if (a->status == DIRECTORY_FOUND)
		printf("%s: %s is the user %s\n", what, name, a->mailbox);
	else if (a->status == DIRECTORY_NOT_FOUND)
		printf("%s: %s is nobody's\n", what, name);
	else
		printf("%s: the directory cannot be reached (temporary failure)\n", what);
	return a->status == DIRECTORY_FOUND;
}

static bool cmd_user_say_login(const struct cmd_user_answer *a)
{
	if (a->status == DIRECTORY_FOUND)
		printf("login: ok as %s\n", a->mailbox);
	else if (a->status == DIRECTORY_NOT_FOUND)
		printf("login: refused (unknown user or wrong password)\n");
	else
		printf("login: the directory cannot be reached (temporary failure)\n");
	return a->status == DIRECTORY_FOUND;
}

/* The password for the login test: none (EOF) only tests the lookup. */
static int cmd_user_test_password(struct cmd_user_password *pw, bool *given)
{
	enum cmd_user_read r = isatty(STDIN_FILENO) ? cmd_user_prompt("Password: ", pw)
						    : cmd_user_read_line(pw);
	*given = r == CMD_USER_READ_OK && pw->len > 0;
	return r == CMD_USER_READ_EOF ? 0 : cmd_user_read_status(r);
}

static bool cmd_user_test_directory(struct directory *d, const char *address,
				    const struct cmd_user_password *pw, bool given)
{
	struct cmd_user_answer a = {0}, l = {0};
	printf("users: from the directory at %s\n", directory_uri(d));
	(void)directory_lookup(d, address, cmd_user_answered, &a);
	bool ok = cmd_user_say("lookup", address, &a);
	if (given) {
		(void)directory_login(d, address, strlen(address), pw->buf, pw->len,
				      cmd_user_answered, &l);
		ok = cmd_user_say_login(&l) && ok;
	}
	free(a.mailbox);
	free(l.mailbox);
	return ok;
}

static bool cmd_user_test_file(const struct userdb *db, const char *path, const char *address,
			       const struct cmd_user_password *pw, bool given)
{
	const struct user_record *rec = userdb_find(db, address);
	struct cmd_user_answer a = {.status = rec ? DIRECTORY_FOUND : DIRECTORY_NOT_FOUND,
				    .mailbox = rec ? rec->address : NULL};
	printf("users: from the file %s\n", path);
	bool ok = cmd_user_say("lookup", address, &a);
	if (given) {
		bool right = rec && userdb_verify_password(rec, pw->buf, pw->len);
		struct cmd_user_answer l = {.status = right ? DIRECTORY_FOUND : DIRECTORY_NOT_FOUND,
					    .mailbox = right ? rec->address : NULL};
		ok = cmd_user_say_login(&l) && ok;
	}
	return ok;
}

/* user test --principal P: the directory's `principal` attribute. */
static int cmd_user_test_principal(const struct conf *conf, const char *principal)
{
	if (!conf->ldap || !conf->ldap->principal)
		return cmd_user_fail("no principal attribute: principals are looked up only in a "
				     "directory with \"principal\" (users ldap)");
	struct directory *d = directory_new(conf->ldap, NULL, stderr);
	if (!d)
		return CMD_USER_EXIT_ERROR;
	struct cmd_user_answer a = {0};
	printf("users: from the directory at %s\n", directory_uri(d));
	(void)directory_find_by_principal(d, principal, cmd_user_answered, &a);
	bool ok = cmd_user_say("principal", principal, &a);
	free(a.mailbox);
	directory_free(d);
	return ok ? CMD_USER_EXIT_OK : CMD_USER_EXIT_ERROR;
}

static int cmd_user_test_address(const struct conf *conf, const char *address)
{
	struct cmd_user_password pw;
	memset(&pw, 0, sizeof pw);
	bool given = false;
	if (cmd_user_test_password(&pw, &given) != 0)
		return CMD_USER_EXIT_ERROR;
	bool ok = false;
	int r = CMD_USER_EXIT_ERROR;
	if (conf->ldap) {
		struct directory *d = directory_new(conf->ldap, NULL, stderr);
		if (d) {
			ok = cmd_user_test_directory(d, address, &pw, given);
			directory_free(d);
			r = CMD_USER_EXIT_OK;
		}
	} else {
		struct cmd_user_errbuf e;
		struct userdb *db;
		r = userdb_load(conf->users, &db, cmd_user_errbuf_open(&e)) < 0 ? CMD_USER_EXIT_ERROR
										 : CMD_USER_EXIT_OK;
		cmd_user_errbuf_close(&e);
		if (r == CMD_USER_EXIT_OK) {
			ok = cmd_user_test_file(db, conf->users, address, &pw, given);
			userdb_free(db);
		}
	}
	cmd_user_password_clear(&pw);
	if (fflush(stdout) != 0 || ferror(stdout))
		return cmd_user_fail("cannot write to standard output: %s", strerror(errno));
	return r == CMD_USER_EXIT_OK && !ok ? CMD_USER_EXIT_ERROR : r;
}

static int cmd_user_test(const char *conf_path, int argc, char **argv)
{
	bool principal = argc == 2 && strcmp(argv[0], "--principal") == 0;
	if (argc != 1 && !principal)
		return cmd_user_usage("%s", "user test: needs ADDRESS or --principal PRINCIPAL");
	const char *name = argv[argc - 1];
	if (!principal && name[0] == '-')
		return cmd_user_usage("user test: unknown option \"%s\"", name);
	struct conf *conf;
	if (conf_load(conf_path, &conf, stderr) != 0)
		return CMD_USER_EXIT_ERROR;
	int r = principal ? cmd_user_test_principal(conf, name) : cmd_user_test_address(conf, name);
	conf_free(conf);
	return r;
}

static const struct cmd_user_command *cmd_user_find(const char *name)
{
	for (size_t i = 0; i < ARRAY_LEN(cmd_user_commands); i++)
		if (strcmp(cmd_user_commands[i].name, name) == 0)
			return &cmd_user_commands[i];
	return NULL;
}

int cmd_user(const char *conf_path, int argc, char **argv)
{
	if (argc < 1)
		return cmd_user_usage("%s", "missing user command");
	if (strcmp(argv[0], "vacation") == 0)
		return cmd_vacation(conf_path, argc - 1, argv + 1);
	if (strcmp(argv[0], "quota") == 0)
		return cmd_quota(conf_path, argc - 1, argv + 1);
	if (strcmp(argv[0], "test") == 0)
		return cmd_user_test(conf_path, argc - 1, argv + 1);
	const struct cmd_user_command *cmd = cmd_user_find(argv[0]);
	if (!cmd)
		return cmd_user_usage("unknown user command \"%s\"", argv[0]);
	/* an address has an '@': what starts with '-' without one is an option */
	for (int i = 1; i < argc; i++)
		if (argv[i][0] == '-' && !strchr(argv[i], '@'))
			return cmd_user_usage("user %s: unknown option \"%s\"", cmd->name, argv[i]);
	if (argc - 1 < cmd->nargs)
		return cmd_user_usage("user %s: missing ADDRESS", cmd->name);
	if (argc - 1 > cmd->nargs)
		return cmd_user_usage("user %s: unexpected argument \"%s\"", cmd->name,
				      argv[cmd->nargs + 1]);
	const char *address = cmd->nargs ? argv[1] : NULL;
	const char *why = address ? userdb_check_address(address) : NULL;
	if (why)
		return cmd_user_fail("invalid address \"%s\": %s", address, why);

	struct conf *conf;
	if (conf_load(conf_path, &conf, stderr) != 0)
		return CMD_USER_EXIT_ERROR;
	int r;
	if (conf->ldap) /* nothing here can change a directory */
		r = cmd_user_fail("users live in the directory at %s (users ldap in %s): manage them "
				  "there; posthorn user test ADDRESS checks one",
				  conf->ldap->uris[0], conf->path ? conf->path : conf_path);
	else
		r = cmd->edit ? cmd_user_edit(conf, cmd, address) : cmd_user_list(conf);
	conf_free(conf);
	return r;
}
