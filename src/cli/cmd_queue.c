/* cmd_queue: `posthorn queue list|show ID|flush|delete ID`.  It sends one
 * command line to <spool>/control.sock, prints the daemon's answer and exits
 * 0, or prints the daemon's error as one line and exits 1.  The answer is
 * already escaped by the daemon; it is copied to stdout as it comes. */
#include "cli/cmd_queue.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "conf/conf.h"
#include "daemon/control.h"
#include "queue/spool.h"
#include "lib/util.h"

enum {
	CMD_QUEUE_EXIT_OK = 0,
	CMD_QUEUE_EXIT_ERROR = 1,
	CMD_QUEUE_EXIT_USAGE = 2,
	CMD_QUEUE_TIMEOUT = 60,         /* seconds without a byte from the daemon */
	CMD_QUEUE_BUF = 4096,
	CMD_QUEUE_FIRST_LINE_MAX = 1024,
};

static const char cmd_queue_usage_line[] =
    "usage: posthorn [-c FILE] queue list | show ID | flush | delete ID | tls-report\n";

static const struct cmd_queue_command {
	const char *name;
	const char *verb;       /* on the control socket */
	int nargs;
} cmd_queue_commands[] = {
	{"list", "LIST", 0},
	{"show", "SHOW", 1},
	{"flush", "FLUSH", 0},
	{"delete", "DELETE", 1},
	{"tls-report", "TLSREPORT", 0},
};

static bool cmd_queue_id_ok(const char *id)
{
	size_t n = strlen(id);
	return n > 0 && n < SPOOL_ID_SIZE && strspn(id, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") == n;
}

static int cmd_queue_connect(const char *spool, const char *path)
{
	struct sockaddr_un sun;
	socklen_t len;
	int dirfd;
	if (control_address(spool, &sun, &len, &dirfd) < 0) {
		if (errno == ENOENT)
			complain("the daemon is not running (no spool folder %s)", spool);
		else
			complain("cannot reach the daemon at %s: %s", path, strerror(errno));
		return -1;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		complain("socket: %s", strerror(errno));
		if (dirfd >= 0)
			close(dirfd);
		return -1;
	}
	int r = connect(fd, (struct sockaddr *)&sun, len);
	int e = errno;
	if (dirfd >= 0)
		close(dirfd);
	if (r == 0) {
		struct timeval tv = {.tv_sec = CMD_QUEUE_TIMEOUT};
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
		return fd;
	}
	close(fd);
	if (e == ENOENT || e == ECONNREFUSED)
		complain("the daemon is not running (nothing answers on %s)", path);
	else if (e == EACCES || e == EPERM)
		complain("cannot reach the daemon at %s: %s (run as root or as the daemon's user)",
			 path, strerror(e));
	else
		complain("cannot reach the daemon at %s: %s", path, strerror(e));
	return -1;
}

/* Copy the answer: the first line says ok or error, the rest goes to
 * stdout. */
static int cmd_queue_answer(int fd, const char *path)
{
	char buf[CMD_QUEUE_BUF];
	char first[CMD_QUEUE_FIRST_LINE_MAX];
	size_t flen = 0;
	bool have_first = false;
	for (;;) {
		ssize_t n = read(fd, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			complain("no answer from the daemon at %s: %s", path,
				 errno == EAGAIN ? "timed out" : strerror(errno));
			return CMD_QUEUE_EXIT_ERROR;
		}
		if (n == 0)
			break;
		size_t off = 0;
		while (!have_first && off < (size_t)n) {
			char c = buf[off++];
			if (c == '\n') {
				have_first = true;
				break;
			}
			if (flen + 1 < sizeof first)
				first[flen++] = c;
		}
		first[flen] = '\0';
		if (have_first && off < (size_t)n && strcmp(first, "ok") == 0 &&
		    fwrite(buf + off, 1, (size_t)n - off, stdout) != (size_t)n - off) {
			complain("cannot write the answer: %s", strerror(errno));
			return CMD_QUEUE_EXIT_ERROR;
		}
	}
	if (!have_first) {
		complain("the daemon at %s closed without an answer", path);
		return CMD_QUEUE_EXIT_ERROR;
	}
	if (strncmp(first, "error ", 6) == 0) {
		complain("%s", first + 6);
		return CMD_QUEUE_EXIT_ERROR;
	}
	if (strcmp(first, "ok") != 0) {
		complain("unexpected answer from the daemon at %s", path);
		return CMD_QUEUE_EXIT_ERROR;
	}
	if (fflush(stdout) != 0) {
		complain("cannot write the answer: %s", strerror(errno));
		return CMD_QUEUE_EXIT_ERROR;
	}
	return CMD_QUEUE_EXIT_OK;
}

static int cmd_queue_run(const char *spool, const char *line)
{
	char *path = xasprintf("%s/%s", spool, CONTROL_SOCKET_NAME);
	int fd = cmd_queue_connect(spool, path);
	int status = CMD_QUEUE_EXIT_ERROR;
	if (fd >= 0) {
		if (write_all(fd, line, strlen(line)) < 0)
			complain("cannot send to the daemon at %s: %s", path, strerror(errno));
		else
			status = cmd_queue_answer(fd, path);
		close(fd);
	}
	free(path);
	return status;
}

/* The index of the first argument after the sub-command that is an
 * option (queue IDs never start with '-'), or 0. */
static int cmd_queue_option(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (argv[i][0] == '-')
			return i;
	return 0;
}

/* What is wrong with argv for cmd (NULL: no such sub-command), then the
 * usage line; the exit status. */
static int cmd_queue_bad_usage(const struct cmd_queue_command *cmd, int argc, char **argv)
{
	int option = cmd_queue_option(argc, argv);
	if (argc == 0)
		complain("missing queue command");
	else if (!cmd)
		complain("unknown queue command \"%s\"", argv[0]);
	else if (option > 0)
		complain("queue %s: unknown option \"%s\"", cmd->name, argv[option]);
	else if (argc - 1 < cmd->nargs)
		complain("queue %s: missing ID", cmd->name);
	else
		complain("queue %s: unexpected argument \"%s\"", cmd->name, argv[cmd->nargs + 1]);
	stderr_puts(cmd_queue_usage_line);
	return CMD_QUEUE_EXIT_USAGE;
}

int cmd_queue(const char *conf_path, int argc, char **argv)
{
	const struct cmd_queue_command *cmd = NULL;
	for (size_t i = 0; argc > 0 && i < ARRAY_LEN(cmd_queue_commands); i++)
		if (strcmp(argv[0], cmd_queue_commands[i].name) == 0)
			cmd = &cmd_queue_commands[i];
	if (!cmd || argc - 1 != cmd->nargs || cmd_queue_option(argc, argv) > 0)
		return cmd_queue_bad_usage(cmd, argc, argv);
	if (cmd->nargs == 1 && !cmd_queue_id_ok(argv[1])) {
		complain("\"%s\" is not a queue ID (letters A-Z and digits, as `posthorn queue list` "
			 "shows them)", argv[1]);
		return CMD_QUEUE_EXIT_USAGE;
	}
	struct conf *conf;
	if (conf_load(conf_path, &conf, stderr) != 0)
		return CMD_QUEUE_EXIT_ERROR;
	char *line = cmd->nargs ? xasprintf("%s %s\n", cmd->verb, argv[1]) : xasprintf("%s\n", cmd->verb);
	int status = cmd_queue_run(conf->spool, line);
	free(line);
	conf_free(conf);
	return status;
}
