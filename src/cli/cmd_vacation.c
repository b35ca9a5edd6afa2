/* cmd_vacation: `posthorn user vacation ADDRESS on|off [--subject S]
 * [--message-file F] [--until YYYY-MM-DD] [--days N]` (posthorn(8)): the
 * setting is checked here and written into the user's Maildir as the
 * daemon's run-as user, so that the daemon can read it and keep the record
 * of the senders it answered beside it. */
#include "cli/cmd_vacation.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "auth/userdb.h"
#include "conf/conf.h"
#include "lib/util.h"
#include "store/maildir.h"
#include "store/vacation.h"

enum {
	CMD_VACATION_EXIT_OK = 0,
	CMD_VACATION_EXIT_ERROR = 1,
	CMD_VACATION_EXIT_USAGE = 2,
	CMD_VACATION_LINE_MAX = 998,    /* RFC 5322 §2.1.1, without CRLF */
	CMD_VACATION_ERR_MAX = 512,
};

static const char cmd_vacation_usage_line[] =
    "usage: posthorn [-c FILE] user vacation ADDRESS [on|off] [--subject TEXT] "
    "[--message-file FILE] [--until YYYY-MM-DD] [--days N]\n";

/* What the command line asks for. */
struct cmd_vacation_args {
	const char *address;
	const char *state;      /* "on", "off" or NULL: show */
	const char *subject;
	const char *message_file;
	const char *until;
	const char *days;
};

static int cmd_vacation_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int cmd_vacation_fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vcomplain(fmt, ap);
	va_end(ap);
	return CMD_VACATION_EXIT_ERROR;
}

static int cmd_vacation_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int cmd_vacation_usage(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vcomplain(fmt, ap);
	va_end(ap);
	stderr_puts(cmd_vacation_usage_line);
	return CMD_VACATION_EXIT_USAGE;
}

/* ---- the command line ---------------------------------------------------- */

static const char **cmd_vacation_option(struct cmd_vacation_args *a, const char *name)
{
	if (strcmp(name, "--subject") == 0)
		return &a->subject;
	if (strcmp(name, "--message-file") == 0)
		return &a->message_file;
	if (strcmp(name, "--until") == 0)
		return &a->until;
	if (strcmp(name, "--days") == 0)
		return &a->days;
	return NULL;
}

static int cmd_vacation_parse_args(int argc, char **argv, struct cmd_vacation_args *a)
{
	memset(a, 0, sizeof *a);
	if (argc < 1 || argv[0][0] == '-')
		return cmd_vacation_usage("%s", "user vacation: missing ADDRESS");
	a->address = argv[0];
	int i = 1;
	if (i < argc && argv[i][0] != '-') {
		if (strcmp(argv[i], "on") != 0 && strcmp(argv[i], "off") != 0)
			return cmd_vacation_usage("user vacation: \"%s\" is neither on nor off", argv[i]);
		a->state = argv[i++];
	}
	for (; i < argc; i += 2) {
		const char **slot = cmd_vacation_option(a, argv[i]);
		if (!slot)
			return cmd_vacation_usage("user vacation: unknown option \"%s\"", argv[i]);
		if (i + 1 >= argc)
			return cmd_vacation_usage("user vacation: %s needs a value", argv[i]);
		if (*slot)
			return cmd_vacation_usage("user vacation: %s given twice", argv[i]);
		*slot = argv[i + 1];
	}
	bool options = a->subject || a->message_file || a->until || a->days;
	if (options && (!a->state || strcmp(a->state, "on") != 0))
		return cmd_vacation_usage("%s", "user vacation: the options go with \"on\"");
	return 0;
}

/* ---- the setting ----------------------------------------------------------- */

/* The reply's text from path: text lines of at most 998 bytes, no NUL,
 * at most VACATION_MESSAGE_MAX bytes. */
static int cmd_vacation_read_message(const char *path, char **out)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return cmd_vacation_fail("cannot read the message file %s: %s", path, strerror(errno));
	char *text = xmalloc(VACATION_MESSAGE_MAX + 2);
	size_t n = fread(text, 1, VACATION_MESSAGE_MAX + 1, f);
	bool err = ferror(f) != 0;
	(void)fclose(f); /* read only: nothing to lose */
	int r = 0;
	if (err)
		r = cmd_vacation_fail("cannot read the message file %s", path);
	else if (n > VACATION_MESSAGE_MAX)
		r = cmd_vacation_fail("the message file %s is longer than %d bytes", path,
				      VACATION_MESSAGE_MAX);
	else if (memchr(text, '\0', n))
		r = cmd_vacation_fail("the message file %s is not text (it holds a NUL byte)", path);
	text[n] = '\0';
	for (size_t i = 0, line = 1; r == 0 && i < n; line++) {
		size_t len = strcspn(text + i, "\n");
		if (len > CMD_VACATION_LINE_MAX)
			r = cmd_vacation_fail("the message file %s: line %zu is longer than %d bytes",
					      path, line, CMD_VACATION_LINE_MAX);
		i += len + 1;
	}
	if (r != 0) {
		free(text);
		return r;
	}
	*out = text;
	return 0;
}

static int cmd_vacation_check_subject(const char *s)
{
	if (strlen(s) > VACATION_SUBJECT_MAX)
		return cmd_vacation_fail("--subject is longer than %d bytes", VACATION_SUBJECT_MAX);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return cmd_vacation_fail("%s", "--subject holds a control character");
	return 0;
}

/* Turn v on with what the options say, keeping what they do not. */
static int cmd_vacation_apply(const struct cmd_vacation_args *a, struct vacation *v)
{
	v->on = true;
	if (!v->days)
		v->days = VACATION_DAYS_DEFAULT;
	if (a->days) {
		char *end;
		unsigned long d = strtoul(a->days, &end, 10);
		if (a->days[0] < '1' || a->days[0] > '9' || *end || d > VACATION_DAYS_MAX)
			return cmd_vacation_fail("--days \"%s\": use a whole number from 1 to %d",
						 a->days, VACATION_DAYS_MAX);
		v->days = (unsigned)d;
	}
	time_t end;
	if (a->until && !vacation_parse_date(a->until, &end))
		return cmd_vacation_fail("--until \"%s\": use a date YYYY-MM-DD", a->until);
	if (a->until)
		memcpy(v->until, a->until, sizeof v->until);
	if (a->subject && cmd_vacation_check_subject(a->subject) != 0)
		return CMD_VACATION_EXIT_ERROR;
	if (a->subject) {
		free(v->subject);
		v->subject = xstrdup(a->subject);
	}
	if (a->message_file) {
		char *text = NULL;
		if (cmd_vacation_read_message(a->message_file, &text) != 0)
			return CMD_VACATION_EXIT_ERROR;
		free(v->message);
		v->message = text;
	}
	if (!v->message || !*v->message)
		return cmd_vacation_fail("%s", "user vacation on: no message yet: give --message-file FILE");
	return 0;
}

static void cmd_vacation_show(const char *address, const struct vacation *v, bool any)
{
	if (!any) {
		printf("%s: no out-of-office reply set\n", address);
		return;
	}
	printf("%s: out-of-office reply %s%s%s%s; one reply per sender in %u day%s\n", address,
	       vacation_active(v, time(NULL)) ? "on" : "off",
	       v->until[0] ? (v->on ? " through " : " (was through ") : "", v->until,
	       v->until[0] && !v->on ? ")" : "", v->days, v->days == 1 ? "" : "s");
	printf("subject: %s\n", v->subject ? v->subject : "Auto: (the original's subject)");
	printf("\n%s", v->message ? v->message : "");
}

/* ---- files, as the daemon's user ------------------------------------------------ */

/* Root writing for a daemon that drops to run-as: become that user for the
 * files (the Maildir and the setting must be its own). */
static int cmd_vacation_become_owner(const struct conf *conf)
{
	if (!conf->run_as || geteuid() != 0)
		return 0;
	errno = 0;
	const struct passwd *pw = getpwnam(conf->run_as);
	if (!pw)
		return cmd_vacation_fail("run-as user %s does not exist%s%s", conf->run_as,
					 errno ? ": " : "", errno ? strerror(errno) : "");
	if (setegid(pw->pw_gid) < 0 || seteuid(pw->pw_uid) < 0)
		return cmd_vacation_fail("cannot act as %s: %s", conf->run_as, strerror(errno));
	return 0;
}

static int cmd_vacation_store(const char *dir, const struct vacation *v)
{
	char err[CMD_VACATION_ERR_MAX];
	if (maildir_create(dir, err, sizeof err) < 0 || vacation_write(dir, v, err, sizeof err) < 0)
		return cmd_vacation_fail("%s", err);
	return 0;
}

static int cmd_vacation_user_exists(const struct conf *conf, const char *address)
{
	struct userdb *db;
	if (userdb_load(conf->users, &db, stderr) < 0)
		return CMD_VACATION_EXIT_ERROR;
	bool found = userdb_find(db, address) != NULL;
	userdb_free(db);
	if (!found)
		return cmd_vacation_fail("no user %s in %s", address, conf->users);
	return 0;
}

static int cmd_vacation_run(const struct conf *conf, const struct cmd_vacation_args *a,
			    const char *address)
{
	if (cmd_vacation_user_exists(conf, address) != 0)
		return CMD_VACATION_EXIT_ERROR;
	if (cmd_vacation_become_owner(conf) != 0)
		return CMD_VACATION_EXIT_ERROR;
	char *dir = maildir_path(conf->mailboxes, address);
	if (!dir)
		return cmd_vacation_fail("%s names no mailbox folder", address);
	struct vacation v;
	char err[CMD_VACATION_ERR_MAX];
	int have = vacation_read(dir, &v, err, sizeof err);
	int r = 0;
	if (have < 0 && a->state) /* a damaged setting is replaced by a whole new one */
		complain("warning: %s; writing a new setting", err);
	else if (have < 0)
		r = cmd_vacation_fail("%s", err);
	if (r == 0 && !a->state)
		cmd_vacation_show(address, &v, have > 0);
	else if (r == 0 && strcmp(a->state, "on") == 0)
		r = cmd_vacation_apply(a, &v);
	else if (r == 0)
		v.on = false;
	if (r == 0 && a->state)
		r = cmd_vacation_store(dir, &v);
	if (r == 0 && a->state && v.on && !vacation_active(&v, time(NULL)))
		complain("warning: --until %s is past: no reply will be sent", v.until);
	if (r == 0 && a->state)
		printf("%s: out-of-office reply %s\n", address, a->state);
	vacation_clear(&v);
	free(dir);
	return r;
}

int cmd_vacation(const char *conf_path, int argc, char **argv)
{
	struct cmd_vacation_args a;
	int r = cmd_vacation_parse_args(argc, argv, &a);
	if (r != 0)
		return r;
	const char *why = userdb_check_address(a.address);
	if (why)
		return cmd_vacation_fail("invalid address \"%s\": %s", a.address, why);
	struct conf *conf;
	if (conf_load(conf_path, &conf, stderr) != 0)
		return CMD_VACATION_EXIT_ERROR;
	char *address = str_lower(xstrdup(a.address));
	r = cmd_vacation_run(conf, &a, address);
	free(address);
	conf_free(conf);
	if (r == 0 && (fflush(stdout) != 0 || ferror(stdout)))
		r = cmd_vacation_fail("cannot write to standard output: %s", strerror(errno));
	return r;
}
