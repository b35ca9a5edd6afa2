/* cmd_quota: `posthorn user quota ADDRESS [SIZE [MESSAGES] | none |
 * default]`: shows a user's limit and usage (RFC 9208 STORAGE and MESSAGE,
 * read from the Maildir's maildirsize or counted, never written), or sets
 * the user's own limit in the users file. */
#include "cli/cmd_quota.h"

#include <errno.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth/userdb.h"
#include "conf/conf.h"
#include "lib/util.h"
#include "store/maildir.h"
#include "store/quota.h"

enum {
	CMD_QUOTA_EXIT_OK = 0,
	CMD_QUOTA_EXIT_ERROR = 1,
	CMD_QUOTA_EXIT_USAGE = 2,
	CMD_QUOTA_MESSAGES_MAX = 1000000000, /* as the configuration's `quota` */
};

static const char cmd_quota_usage_line[] =
    "usage: posthorn [-c FILE] user quota ADDRESS [SIZE [MESSAGES] | none | default]\n";

static int cmd_quota_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int cmd_quota_fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vcomplain(fmt, ap);
	va_end(ap);
	return CMD_QUOTA_EXIT_ERROR;
}

static int cmd_quota_usage(const char *what)
{
	complain("%s", what);
	stderr_puts(cmd_quota_usage_line);
	return CMD_QUOTA_EXIT_USAGE;
}

/* SIZE [MESSAGES] | none | default into q; false when not valid. */
static bool cmd_quota_parse(int argc, char **argv, struct userdb_quota *q)
{
	memset(q, 0, sizeof *q);
	if (argc == 1 && strcmp(argv[0], "default") == 0)
		return true;
	q->set = true;
	if (argc == 1 && strcmp(argv[0], "none") == 0)
		return true;
	if (conf_parse_size(argv[0], &q->bytes) < 0 || q->bytes == 0)
		return false;
	if (argc < 2)
		return true;
	char *end;
	errno = 0;
	unsigned long long n = strtoull(argv[1], &end, 10);
	if (errno || *end || end == argv[1] || argv[1][0] == '-' || n == 0 ||
	    n > CMD_QUOTA_MESSAGES_MAX)
		return false;
	q->messages = n;
	return true;
}

/* "9 KiB of 20 KiB (9301 octets)", the limit "none" when there is none. */
static void cmd_quota_print(const char *address, const struct quota_limit *l,
			    const struct quota_usage *u, bool own)
{
	printf("user      %s\n", address);
	if (l->bytes)
		printf("storage   %" PRIu64 " KiB of %" PRIu64 " KiB (%" PRIu64 " octets)\n",
		       u->bytes / 1024, l->bytes / 1024, u->bytes);
	else
		printf("storage   %" PRIu64 " KiB, no limit (%" PRIu64 " octets)\n",
		       u->bytes / 1024, u->bytes);
	if (l->messages)
		printf("messages  %" PRIu64 " of %" PRIu64 "\n", u->messages, l->messages);
	else
		printf("messages  %" PRIu64 ", no limit\n", u->messages);
	printf("limit     %s\n", own ? "the user's own" : "the configuration's quota");
}

static int cmd_quota_show(const struct conf *conf, const struct user_record *rec)
{
	struct quota_limit l = {conf->quota_bytes, conf->quota_messages};
	if (rec->quota_set) {
		l.bytes = rec->quota_bytes;
		l.messages = rec->quota_messages;
	}
	char *root = maildir_path(conf->mailboxes, rec->address);
	if (!root)
		return cmd_quota_fail("%s names no mailbox folder", rec->address);
	struct quota_usage u;
	char err[256];
	int r = quota_usage_peek(root, &u, err, sizeof err);
	free(root);
	if (r < 0)
		return cmd_quota_fail("%s", err);
	cmd_quota_print(rec->address, &l, &u, rec->quota_set);
	if (fflush(stdout) != 0 || ferror(stdout))
		return cmd_quota_fail("cannot write to standard output: %s", strerror(errno));
	return CMD_QUOTA_EXIT_OK;
}

/* When root writes the users file for a daemon that drops to run-as,
 * that user keeps owning it. */
static int cmd_quota_owner(const struct conf *conf, long *uid, long *gid)
{
	*uid = -1;
	*gid = -1;
	if (!conf->run_as || geteuid() != 0)
		return 0;
	errno = 0;
	const struct passwd *pw = getpwnam(conf->run_as);
	if (!pw)
		return cmd_quota_fail("run-as user %s does not exist", conf->run_as);
	*uid = (long)pw->pw_uid;
	*gid = (long)pw->pw_gid;
	return 0;
}

static int cmd_quota_set(const struct conf *conf, const char *address,
			 const struct userdb_quota *q)
{
	long uid, gid;
	if (cmd_quota_owner(conf, &uid, &gid) != 0)
		return CMD_QUOTA_EXIT_ERROR;
	/* userdb_set_quota's messages are "posthorn: "-less lines for stderr */
	return userdb_set_quota(conf->users, address, q, uid, gid, stderr) == 0 &&
			   report_end(stderr) == 0
		   ? CMD_QUOTA_EXIT_OK
		   : CMD_QUOTA_EXIT_ERROR;
}

static int cmd_quota_run(const struct conf *conf, int argc, char **argv)
{
	if (conf->ldap)
		return cmd_quota_fail("users live in the directory (users ldap): the "
				      "configuration's quota applies to each");
	if (argc > 1) {
		struct userdb_quota q;
		if (!cmd_quota_parse(argc - 1, argv + 1, &q))
			return cmd_quota_usage("user quota: SIZE is a number with K, M or G, "
					       "MESSAGES a whole number");
		return cmd_quota_set(conf, argv[0], &q);
	}
	struct userdb *db;
	if (userdb_load(conf->users, &db, stderr) < 0)
		return CMD_QUOTA_EXIT_ERROR;
	const struct user_record *rec = userdb_find(db, argv[0]);
	int r = rec ? cmd_quota_show(conf, rec) : cmd_quota_fail("no such user %s", argv[0]);
	userdb_free(db);
	return r;
}

int cmd_quota(const char *conf_path, int argc, char **argv)
{
	if (argc < 1)
		return cmd_quota_usage("user quota: missing ADDRESS");
	if (argc > 3)
		return cmd_quota_usage("user quota: too many arguments");
	const char *why = userdb_check_address(argv[0]);
	if (why)
		return cmd_quota_fail("invalid address \"%s\": %s", argv[0], why);
	struct conf *conf;
	if (conf_load(conf_path, &conf, stderr) != 0)
		return CMD_QUOTA_EXIT_ERROR;
	int r = cmd_quota_run(conf, argc, argv);
	conf_free(conf);
	return r;
}
