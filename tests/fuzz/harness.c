/* Shared pieces of the libFuzzer targets: see harness.h. */
#define _GNU_SOURCE /* nftw */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "auth/aliases.h"
#include "conf/conf.h"
#include "lib/log.h"
#include "auth/sasl.h"
#include "auth/throttle.h"
#include "proto/session.h"
#include "runtime/runtime.h"
#include "queue/spool.h"
#include "net/tls.h"
#include "auth/userdb.h"
#include "lib/util.h"

/* alice@example.test, "fuzz-secret", salt "posthorn-fuzz-salt", 1 round. */
static const char users_text[] =
	"alice@example.test:SCRAM-SHA-256:1:cG9zdGhvcm4tZnV6ei1zYWx0:"
	"kmmuyi7EPhQpaAENF2oG4ZqXy5WmB2AHid9Zbb5KRQo=:"
	"PtvbsX5gTUcSwbTacBgIBeaQoGddF1uaQQoMpFvUylA=\n";

void fuzz_check_failed(const char *file, int line, const char *what)
{
	fprintf(stderr, "%s:%d: invariant failed: %s\n", file, line, what);
	__builtin_trap();
}

static int rm_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)remove(path); /* best effort: the process is ending */
	return 0;
}

static char scratch[64];

static void fuzz_dir_remove(void)
{
	if (scratch[0])
		nftw(scratch, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

const char *fuzz_dir(void)
{
	if (scratch[0])
		return scratch;
	/* tmpfs when there is one: the spool fsyncs every message */
	struct stat st;
	const char *base = stat("/dev/shm", &st) == 0 && access("/dev/shm", W_OK) == 0 ? "/dev/shm"
											: "/tmp";
	snprintf(scratch, sizeof scratch, "%s/posthorn-fuzz-XXXXXX", base);
	umask(077); /* the users file must not be readable by others */
	CHECK(mkdtemp(scratch) != NULL);
	atexit(fuzz_dir_remove);
	log_init(false, LOG_ERR);
	return scratch;
}

const char *fuzz_put(const char *name, const char *text)
{
	static char path[512];
	snprintf(path, sizeof path, "%s/%s", fuzz_dir(), name);
	FILE *f = fopen(path, "w");
	CHECK(f != NULL);
	fputs(text, f);
	CHECK(fclose(f) == 0);
	return path;
}

struct userdb *fuzz_userdb(void)
{
	static struct userdb *db;
	if (!db) {
		const char *path = fuzz_put("users", users_text);
		CHECK(userdb_load(path, &db, stderr) == 0 && db != NULL);
	}
	return db;
}

const uint8_t *fuzz_split(const uint8_t *data, size_t size, uint8_t sep, size_t *part_len,
			  size_t *rest_len)
{
	const uint8_t *p = memchr(data, sep, size);
	if (!p) {
		*part_len = size;
		*rest_len = 0;
		return NULL;
	}
	*part_len = (size_t)(p - data);
	*rest_len = size - *part_len - 1;
	return p + 1;
}

/* ---- sessions ------------------------------------------------------------ */

const char *fuzz_cert(void)
{
	static char crt[600];
	if (crt[0])
		return crt;
	const char *dir = fuzz_dir();
	char *argv[] = {(char *)"new", (char *)"--hostname", (char *)"mail.example.test",
			(char *)"--out", (char *)dir, NULL};
	/* what `posthorn cert new` prints goes nowhere */
	int saved = dup(1);
	int null = open("/dev/null", O_WRONLY);
	CHECK(saved >= 0 && null >= 0 && dup2(null, 1) == 1);
	int r = cmd_cert(5, argv);
	fflush(stdout);
	CHECK(dup2(saved, 1) == 1);
	close(saved);
	close(null);
	CHECK(r == 0);
	snprintf(crt, sizeof crt, "%s/mail.example.test.crt", dir);
	return crt;
}

struct runtime *fuzz_runtime(const char *conf_text)
{
	const char *dir = fuzz_dir();
	fuzz_userdb();
	fuzz_cert();
	/* @DIR@ in the text is the scratch folder */
	char *body = xmalloc(strlen(conf_text) * (strlen(dir) + 1) + 1);
	size_t o = 0;
	for (const char *p = conf_text; *p; p++) {
		if (strncmp(p, "@DIR@", 5) == 0) {
			memcpy(body + o, dir, strlen(dir));
			o += strlen(dir);
			p += 4;
		} else {
			body[o++] = *p;
		}
	}
	body[o] = '\0';
	char *text = xasprintf("spool %s/spool\nmailboxes %s/mail\nusers %s/users\n%s", dir, dir,
			       dir, body);
	free(body);
	struct runtime *rt = xcalloc(1, sizeof *rt);
	rt->refs = 1;
	CHECK(conf_parse_string("fuzz.conf", text, dir, &rt->conf, stderr) == 0);
	free(text);
	CHECK(userdb_load(rt->conf->users, &rt->users, stderr) == 0);
	if (rt->conf->aliases)
		CHECK(aliases_load(rt->conf->aliases, &rt->aliases, stderr) == 0);
	rt->tls = xcalloc(rt->conf->nservers, sizeof *rt->tls);
	for (size_t i = 0; i < rt->conf->nservers; i++) {
		const struct conf_server *srv = &rt->conf->servers[i];
		if (srv->tls.ncerts == 0)
			continue;
		rt->tls[i] = tls_server_new(&srv->tls, conf_protocol_name(srv->protocol), stderr);
		CHECK(rt->tls[i] != NULL);
	}
	rt->server_dns = xcalloc(rt->conf->nservers, sizeof *rt->server_dns);
	rt->spool = spool_open(rt->conf->spool);
	CHECK(rt->spool != NULL);
	rt->base = event_base_new();
	CHECK(rt->base != NULL);
	sasl_test_set_nonce(FUZZ_SERVER_NONCE);
	throttle_test_set_delay_step(0);
	return rt;
}

unsigned fuzz_check_spool(struct runtime *rt)
{
	char **ids;
	size_t n = spool_list(rt->spool, &ids);
	for (size_t i = 0; i < n; i++) {
		struct spool_envelope env;
		CHECK(spool_read_envelope(rt->spool, ids[i], &env) == 0);
		CHECK(strcmp(env.id, ids[i]) == 0 && env.nrcpts > 0 && env.sender != NULL);
		for (size_t k = 0; k < env.nrcpts; k++)
			CHECK(env.rcpts[k].address && env.rcpts[k].address[0] && !env.rcpts[k].done);
		CHECK(env.size >= 0 && env.body_offset > 0);
		int fd = spool_open_message(rt->spool, &env);
		CHECK(fd >= 0);
		/* the message as it will be delivered: CRLF lines, nothing bare */
		char buf[65536];
		ssize_t got = read(fd, buf, sizeof buf);
		CHECK(got >= 0);
		close(fd);
		for (ssize_t k = 0; k < got; k++) {
			if (buf[k] == '\n')
				CHECK(k > 0 && buf[k - 1] == '\r');
			if (buf[k] == '\r')
				CHECK(k + 1 >= got || buf[k + 1] == '\n');
		}
		spool_envelope_clear(&env);
	}
	spool_free_ids(ids, n);
	return (unsigned)n;
}

/* The Maildir of the one user: <mailboxes>/example.test/alice. */
static void alice_dir(const struct runtime *rt, const char *rest, char *out, size_t outsz)
{
	snprintf(out, outsz, "%s/example.test/alice%s", rt->conf->mailboxes, rest);
}

static void make_maildir(const char *dir)
{
	char path[1024];
	const char *sub[] = {"", "/new", "/cur", "/tmp"};
	for (size_t i = 0; i < 4; i++) {
		snprintf(path, sizeof path, "%s%s", dir, sub[i]);
		CHECK(mkdir(path, 0700) == 0 || errno == EEXIST);
	}
}

void fuzz_add_message(struct runtime *rt, const char *folder, const char *file, const char *text)
{
	char dir[1024], path[1200];
	alice_dir(rt, folder, dir, sizeof dir);
	make_maildir(dir);
	snprintf(path, sizeof path, "%s/%s", dir, file);
	FILE *f = fopen(path, "w");
	CHECK(f != NULL);
	fputs(text, f);
	CHECK(fclose(f) == 0);
}

void fuzz_clean_store(struct runtime *rt)
{
	char **ids;
	size_t n = spool_list(rt->spool, &ids);
	for (size_t i = 0; i < n; i++)
		spool_remove(rt->spool, ids[i]);
	spool_free_ids(ids, n);
	/* alice's Maildir: two messages in new/, whatever a session did
	 * (folders, UID list and subscriptions of an IMAP session included) */
	char path[1024];
	mkdir(rt->conf->mailboxes, 0700);
	snprintf(path, sizeof path, "%s/example.test", rt->conf->mailboxes);
	mkdir(path, 0700);
	alice_dir(rt, "", path, sizeof path);
	nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	make_maildir(path);
	static const char *const msgs[] = {
		"Subject: one\r\nFrom: <bob@example.test>\r\n\r\nline 1\r\n.dot line\r\nline 3\r\n",
		"Subject: two\r\n\r\n",
	};
	for (size_t i = 0; i < 2; i++) {
		char file[128];
		snprintf(file, sizeof file, "new/100000000%zu.M1P1Q%zu.fuzz,S=%zu", i, i,
			 strlen(msgs[i]));
		fuzz_add_message(rt, "", file, msgs[i]);
	}
}

struct client {
	int fd;
	const uint8_t *data;
	size_t size, sent;
	uint32_t rnd;
	bool eof;               /* the server closed */
	bool progress;
	char line[4096];
	size_t linelen;
	void (*check_reply)(const char *line, size_t len);
	void (*check_bytes)(const char *buf, size_t len);
};

static void client_got(struct client *c, const char *buf, size_t n)
{
	if (c->check_bytes)
		c->check_bytes(buf, n);
	for (size_t i = 0; i < n; i++) {
		if (c->linelen < sizeof c->line - 1)
			c->line[c->linelen++] = buf[i];
		if (buf[i] == '\n') {
			c->line[c->linelen] = '\0';
			if (getenv("FUZZ_TRACE"))
				fprintf(stderr, "S: %s", c->line);
			if (c->check_reply)
				c->check_reply(c->line, c->linelen);
			c->linelen = 0;
		}
	}
}

/* One round without blocking: send a chunk, read what is there. */
static void client_pump(struct client *c)
{
	c->progress = false;
	if (c->sent < c->size) {
		c->rnd ^= c->rnd << 13;
		c->rnd ^= c->rnd >> 17;
		c->rnd ^= c->rnd << 5;
		size_t n = 1 + c->rnd % 3000;
		if (n > c->size - c->sent)
			n = c->size - c->sent;
		ssize_t w = send(c->fd, c->data + c->sent, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w > 0) {
			c->sent += (size_t)w;
			c->progress = true;
		} else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
			c->sent = c->size; /* the server is gone */
		}
	}
	for (;;) {
		char buf[16384];
		ssize_t r = recv(c->fd, buf, sizeof buf, MSG_DONTWAIT);
		if (r > 0) {
			client_got(c, buf, (size_t)r);
			c->progress = true;
			continue;
		}
		if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
			c->eof = true;
		break;
	}
}

static int pending_bytes(int fd)
{
	int n = 0;
	if (ioctl(fd, FIONREAD, &n) < 0)
		return 0;
	return n;
}

static void (*raw_check)(const char *buf, size_t len);

void fuzz_session_raw(void (*check_bytes)(const char *buf, size_t len))
{
	raw_check = check_bytes;
}

static void fuzz_link_closed(struct session_link *l)
{
	free(l->server_name);
	free(l);
}

void fuzz_session(struct runtime *rt, size_t srv, void (*start)(const struct session_start *),
		  const uint8_t *data, size_t size, uint32_t seed, unsigned flags,
		  void (*check_reply)(const char *line, size_t len))
{
	int sv[2];
	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	CHECK(fcntl(sv[0], F_SETFL, O_NONBLOCK) == 0 && fcntl(sv[1], F_SETFL, O_NONBLOCK) == 0);
	struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons(40000)};
	peer.sin_addr.s_addr = htonl(0xc0000201); /* 192.0.2.1 */
	/* Not counted against the server's limits (the daemon does that at
	 * accept): the link only has to be freed when the session ends. */
	struct session_link *sc = xcalloc(1, sizeof *sc);
	sc->server_name = xstrdup(rt->conf->servers[srv].name);
	sc->closed = fuzz_link_closed;
	snprintf(sc->client, sizeof sc->client, "192.0.2.1");
	struct throttle *saved = rt->throttle;
	rt->throttle = throttle_new(64); /* each input starts afresh */
	struct session_start st = {
		.rt = rt,
		.srv = &rt->conf->servers[srv],
		.fd = sv[1],
		.ts = rt->tls[srv],
		.implicit_tls = rt->tls[srv] && (flags & FUZZ_IMPLICIT_TLS),
		.peer = (const struct sockaddr *)&peer,
		.peerlen = sizeof peer,
		.link = sc,
		.client_name = (flags & FUZZ_NO_NAME) ? NULL : "client.example.test",
		.refused = (flags & FUZZ_REFUSED) != 0,
	};
	start(&st);

	struct client c = {.fd = sv[0], .data = data, .size = size, .rnd = seed | 1,
			   .check_reply = check_reply, .check_bytes = raw_check};
	/* Until everything is sent and the server has nothing more to do:
	 * its socket is read empty, nothing comes back, no callback is
	 * waiting.  Then the client's write side shuts, the server sees the
	 * end and closes.  Bounded, so that a session that never settles is
	 * a finding (a timeout), not a hang of the harness. */
	bool shut = false;
	unsigned idle = 0;
	for (unsigned round = 0; !c.eof && round < 1000000; round++) {
		event_base_loop(rt->base, EVLOOP_NONBLOCK);
		client_pump(&c);
		if (c.progress || event_base_get_num_events(rt->base, EVENT_BASE_COUNT_ACTIVE) > 0) {
			idle = 0;
			continue;
		}
		if (!shut && c.sent == c.size && pending_bytes(sv[1]) == 0 && ++idle >= 3) {
			shutdown(sv[0], SHUT_WR);
			shut = true;
		} else if (shut) {
			/* only the close is left: wait for it */
			event_base_loop(rt->base, EVLOOP_ONCE);
		}
	}
	CHECK(c.eof);
	close(sv[0]);
	throttle_free(rt->throttle);
	rt->throttle = saved;
}
