/* phload: the benchmark's own SMTP load generator (not part of the daemon).
 *
 *   phload tx   [-c CONC] [-n COUNT] [-s BYTES] [-r RCPTS] [-R RATE] [-T SECS]
 *               [-d DOMAIN] [-m MESSAGE-FILE] HOST PORT
 *       COUNT transactions (connect, EHLO, MAIL, RCPT x RCPTS, DATA, message
 *       of BYTES, or the one in MESSAGE-FILE with its CRLF lines as they
 *       are (a signed one), QUIT), at most CONC at once, a new connection for each;
 *       with -R at most RATE starts per second (open loop).  Prints one
 *       line: ok= fail= secs= rate= p50_ms= p90_ms= p99_ms= max_ms=, the
 *       latency being connect to the 250 after the end of data.
 *
 *       With -S the transaction runs inside TLS (EHLO, STARTTLS, the
 *       handshake, EHLO again, RFC 3207), with -I the connection starts in
 *       TLS (implicit TLS, RFC 8314); with -u USER -P PASSFILE it logs in
 *       first (AUTH PLAIN with an initial response, RFC 4954; the password
 *       is the first line of PASSFILE and is never printed).
 *
 *   phload submit -u USER -P PASSFILE [tx options] HOST PORT
 *       what a mail client does on the submission port: tx with -S and the
 *       login, a new connection for each message.
 *
 *   phload idle [-n SESSIONS] [-S | -I] [-p PID] [-H SECS] [-T SECS] HOST PORT
 *       opens SESSIONS connections, reads the greeting (with -S also EHLO,
 *       STARTTLS and the TLS handshake; with -I the handshake comes first
 *       and the greeting inside TLS), holds them all for SECS, then reads
 *       the resident memory of process PID and prints ready= rss_before_kb=
 *       rss_after_kb= per_session_bytes=.
 *
 * Every loop is bounded by the counts and by -T (default 300 s). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

enum {
	PH_LINE_MAX = 1024,
	PH_CONNECTS_AT_ONCE = 256,      /* idle mode: connections in progress */
	PH_BODY_LINE = 76,
};

enum ph_step { ST_GREET, ST_EHLO, ST_AUTH, ST_MAIL, ST_RCPT, ST_DATA, ST_BODY, ST_QUIT,
	       ST_STLS, ST_HANDSHAKE, ST_IDLE, ST_DONE };

struct client {
	struct bufferevent *bev;
	enum ph_step step;
	unsigned rcpt_sent;
	double t0;
	bool in_use;
	bool tls;               /* the handshake is done */
	bool authed;
};

static struct {
	struct event_base *base;
	struct sockaddr_in addr;
	bool idle_mode, starttls, implicit_tls;
	const char *user, *passfile;
	char *auth_line;        /* "AUTH PLAIN <base64>": holds the password */
	unsigned conc, count, rcpts, pid;
	double rate, timeout, hold;
	size_t size;
	const char *domain;
	const char *message;    /* -m FILE: send this message (CRLF lines) */
	char *body;
	size_t bodylen;
	SSL_CTX *ssl_ctx;
	struct client *clients;
	unsigned started, ok, fail, active, ready, connecting;
	double *lat;
	double start;
	struct event *tick, *deadline;
	bool stopping;
} g = {.conc = 10, .count = 1000, .rcpts = 1, .timeout = 300, .hold = 2, .size = 1024,
       .domain = "bench.test"};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *msg)
{
	fprintf(stderr, "phload: %s\n", msg);
	exit(2);
}

/* -m FILE: the message as it is (a signed one must not change), its
 * lines dot-stuffed (RFC 5321 §4.5.2), then the end of data. */
static void load_body(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		die("cannot open the -m message");
	size_t cap = 4096, n = 0;
	g.body = malloc(cap);
	bool line_start = true;
	int c;
	while (g.body && (c = getc(f)) != EOF) {
		if (n + 8 > cap)
			g.body = realloc(g.body, cap *= 2);
		if (!g.body)
			break;
		if (line_start && c == '.')
			g.body[n++] = '.';
		g.body[n++] = (char)c;
		line_start = c == '\n';
	}
	fclose(f);
	if (!g.body)
		die("out of memory");
	if (n < 2 || g.body[n - 2] != '\r' || g.body[n - 1] != '\n')
		die("the -m message must end in CRLF");
	memcpy(g.body + n, ".\r\n", 3);
	g.bodylen = n + 3;
}

static void build_body(void)
{
	size_t cap = g.size + 512;
	g.body = malloc(cap);
	if (!g.body)
		die("out of memory");
	int n = snprintf(g.body, cap,
			 "From: <load@client.test>\r\nTo: <u@%s>\r\nSubject: phload message\r\n"
			 "Message-ID: <phload@client.test>\r\n\r\n", g.domain);
	size_t o = (size_t)n;
	while (o + PH_BODY_LINE + 2 <= g.size) {
		memset(g.body + o, 'x', PH_BODY_LINE);
		o += PH_BODY_LINE;
		memcpy(g.body + o, "\r\n", 2);
		o += 2;
	}
	memcpy(g.body + o, ".\r\n", 3);
	g.bodylen = o + 3;
}

static void finish_if_done(void);

static void client_free(struct client *c)
{
	if (c->bev)
		bufferevent_free(c->bev);
	c->bev = NULL;
	c->in_use = false;
	if (g.active > 0)
		g.active--;
}

static void tx_failed(struct client *c)
{
	g.fail++;
	client_free(c);
	finish_if_done();
}

static void send_line(struct client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void send_line(struct client *c, const char *fmt, ...)
{
	char line[PH_LINE_MAX];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof line - 2, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n > sizeof line - 3)
		die("line too long");
	memcpy(line + n, "\r\n", 2);
	bufferevent_write(c->bev, line, (size_t)n + 2);
	OPENSSL_cleanse(line, (size_t)n + 2); /* the AUTH line holds the password */
}

/* A whole reply (the last line of a multi-line one): its code, or 0 when
 * more is needed, -1 on garbage. */
static int read_reply(struct client *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	for (int i = 0; i < 64; i++) {
		size_t len;
		char *line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF);
		if (!line)
			return 0;
		int code = len >= 3 ? atoi(line) : -1;
		bool last = len == 3 || (len > 3 && line[3] == ' ');
		free(line);
		if (code < 100)
			return -1;
		if (last)
			return code;
	}
	return 0;
}

static void tls_event(struct bufferevent *bev, short what, void *arg);
static void on_read(struct bufferevent *bev, void *arg);

/* TLS over the connected socket: after STARTTLS's 220, or at once (-I). */
static void start_tls(struct client *c)
{
	SSL *ssl = SSL_new(g.ssl_ctx);
	if (!ssl)
		die("SSL_new failed");
	struct bufferevent *tls = bufferevent_openssl_filter_new(
	    g.base, c->bev, ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
	if (!tls)
		die("cannot create a TLS bufferevent");
	c->bev = tls;
	c->step = ST_HANDSHAKE;
	bufferevent_setcb(tls, on_read, NULL, tls_event, c);
	bufferevent_enable(tls, EV_READ | EV_WRITE);
}

static void idle_ready(struct client *c)
{
	c->step = ST_IDLE;
	g.ready++;
	if (g.connecting > 0)
		g.connecting--;
	finish_if_done();
}

static void idle_failed(struct client *c)
{
	g.fail++;
	if (c->step != ST_IDLE && g.connecting > 0)
		g.connecting--;
	c->step = ST_DONE;
	client_free(c);
	finish_if_done();
}

static void on_event(struct bufferevent *bev, short what, void *arg);

/* The handshake is done: with implicit TLS the greeting comes next; after
 * STARTTLS an idle session is ready and a transaction starts again with
 * EHLO (RFC 3207 §4.2: the client forgets what it learnt before). */
static void tls_connected(struct client *c)
{
	c->tls = true;
	if (g.implicit_tls) {
		c->step = ST_GREET;
	} else if (g.idle_mode) {
		idle_ready(c);
	} else {
		send_line(c, "EHLO client.test");
		c->step = ST_EHLO;
	}
}

static void tls_event(struct bufferevent *bev, short what, void *arg)
{
	struct client *c = arg;
	if ((what & BEV_EVENT_CONNECTED) && c->step == ST_HANDSHAKE)
		tls_connected(c);
	else
		on_event(bev, what, arg);
}

/* The idle sessions: greeting, and with -S the way into TLS. */
static void idle_step(struct client *c, int code)
{
	switch (c->step) {
	case ST_GREET:
		if (code != 220)
			break;
		if (!g.starttls || c->tls) {
			idle_ready(c);
			return;
		}
		send_line(c, "EHLO client.test");
		c->step = ST_EHLO;
		return;
	case ST_EHLO:
		if (code != 250)
			break;
		send_line(c, "STARTTLS");
		c->step = ST_STLS;
		return;
	case ST_STLS:
		if (code != 220)
			break;
		start_tls(c);
		return;
	default:
		return;
	}
	idle_failed(c);
}

static void tx_done(struct client *c)
{
	g.lat[g.ok++] = now_s() - c->t0;
	send_line(c, "QUIT");
	c->step = ST_QUIT;
}

static void send_mail(struct client *c)
{
	/* a submission server wants the sender it logged in */
	send_line(c, "MAIL FROM:<%s>", g.user ? g.user : "load@client.test");
	c->step = ST_MAIL;
}

/* After EHLO: STARTTLS (-S) first, then the login (-u), then the mail. */
static void after_ehlo(struct client *c)
{
	if (g.starttls && !c->tls) {
		send_line(c, "STARTTLS");
		c->step = ST_STLS;
	} else if (g.auth_line && !c->authed) {
		send_line(c, "%s", g.auth_line);
		c->step = ST_AUTH;
	} else {
		send_mail(c);
	}
}

/* One transaction, one reply at a time (no pipelining, like smtp-source). */
static void tx_step(struct client *c, int code)
{
	switch (c->step) {
	case ST_GREET:
		if (code != 220)
			break;
		send_line(c, "EHLO client.test");
		c->step = ST_EHLO;
		return;
	case ST_EHLO:
		if (code != 250)
			break;
		after_ehlo(c);
		return;
	case ST_STLS:
		if (code != 220)
			break;
		start_tls(c);
		return;
	case ST_AUTH:
		if (code != 235)
			break;
		c->authed = true;
		send_mail(c);
		return;
	case ST_MAIL:
		if (code != 250)
			break;
		c->rcpt_sent = 0;
		/* fall through */
	case ST_RCPT:
		if (c->step == ST_RCPT && code != 250)
			break;
		if (c->rcpt_sent < g.rcpts) {
			/* u, 2u, 3u ...: the recipients smtp-source -r uses */
			if (c->rcpt_sent == 0)
				send_line(c, "RCPT TO:<u@%s>", g.domain);
			else
				send_line(c, "RCPT TO:<%uu@%s>", c->rcpt_sent + 1, g.domain);
			c->rcpt_sent++;
			c->step = ST_RCPT;
			return;
		}
		send_line(c, "DATA");
		c->step = ST_DATA;
		return;
	case ST_DATA:
		if (code != 354)
			break;
		bufferevent_write(c->bev, g.body, g.bodylen);
		c->step = ST_BODY;
		return;
	case ST_BODY:
		if (code != 250)
			break;
		tx_done(c);
		return;
	case ST_QUIT:
		client_free(c);
		finish_if_done();
		return;
	default:
		break;
	}
	tx_failed(c);
}

static void on_read(struct bufferevent *bev, void *arg)
{
	struct client *c = arg;
	for (int i = 0; i < 64 && c->in_use && c->bev; i++) {
		int code = read_reply(c);
		if (code == 0)
			return;
		if (g.idle_mode) {
			if (code < 0) {
				idle_failed(c);
				return;
			}
			idle_step(c, code);
			if (c->step == ST_HANDSHAKE || c->step == ST_IDLE || c->step == ST_DONE)
				return;
		} else {
			if (code < 0) {
				tx_failed(c);
				return;
			}
			tx_step(c, code);
			if (c->step == ST_HANDSHAKE)
				return;
		}
	}
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct client *c = arg;
	if (what & BEV_EVENT_CONNECTED) {
		if (g.implicit_tls && !c->tls && c->step == ST_GREET)
			start_tls(c);
		return;
	}
	if (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF | BEV_EVENT_TIMEOUT)) {
		if (g.idle_mode) {
			idle_failed(c);
		} else if (c->step == ST_QUIT) { /* the server closed after 221 */
			client_free(c);
			finish_if_done();
		} else {
			tx_failed(c);
		}
	}
}

static struct client *free_slot(void)
{
	for (unsigned i = 0; i < g.conc; i++)
		if (!g.clients[i].in_use)
			return &g.clients[i];
	return NULL;
}

static bool start_one(void)
{
	struct client *c = free_slot();
	if (!c)
		return false;
	memset(c, 0, sizeof *c);
	c->in_use = true;
	c->step = ST_GREET;
	c->t0 = now_s();
	c->bev = bufferevent_socket_new(g.base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (!c->bev)
		die("bufferevent_socket_new failed");
	bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	g.started++;
	g.active++;
	if (g.idle_mode)
		g.connecting++;
	if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&g.addr, sizeof g.addr) < 0) {
		if (g.idle_mode)
			idle_failed(c);
		else
			tx_failed(c);
	} else if (!g.idle_mode) {
		int one = 1;
		setsockopt(bufferevent_getfd(c->bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	}
	return true;
}

/* Start what may be started now: up to CONC at once, at most RATE per
 * second since the start with -R. */
static void fill(void)
{
	if (g.stopping)
		return;
	unsigned allowed = g.count;
	if (g.rate > 0) {
		double due = (now_s() - g.start) * g.rate + 1;
		if (due < allowed)
			allowed = (unsigned)due;
	}
	while (g.started < allowed) {
		if (g.idle_mode && g.connecting >= PH_CONNECTS_AT_ONCE)
			break;
		if (!start_one())
			break;
	}
}

static void finish_if_done(void)
{
	if (g.idle_mode) {
		if (g.ready + g.fail >= g.count && !g.stopping) {
			g.stopping = true;
			event_base_loopexit(g.base, NULL);
		}
		return;
	}
	if (g.ok + g.fail >= g.count && g.active == 0)
		event_base_loopexit(g.base, NULL);
	else
		fill();
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	fill();
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
	fprintf(stderr, "phload: time limit reached\n");
	g.stopping = true;
	event_base_loopbreak(g.base);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(double p)
{
	if (g.ok == 0)
		return 0;
	size_t i = (size_t)(p * (g.ok - 1) + 0.5);
	return g.lat[i] * 1000;
}

static long rss_kb(unsigned pid)
{
	char path[64], line[256];
	snprintf(path, sizeof path, "/proc/%u/status", pid);
	FILE *f = fopen(path, "r");
	long kb = -1;
	if (!f)
		return -1;
	while (fgets(line, sizeof line, f))
		if (strncmp(line, "VmRSS:", 6) == 0)
			kb = strtol(line + 6, NULL, 10);
	fclose(f);
	return kb;
}

static void raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* "AUTH PLAIN" with the initial response (RFC 4954 §4): base64 of
 * NUL user NUL password (RFC 4616), the password the first line of the
 * file.  Every copy of the password is wiped. */
static void build_auth_line(void)
{
	char pass[256], raw[600];
	FILE *f = fopen(g.passfile, "r");
	if (!f)
		die("cannot open the -P password file");
	bool got = fgets(pass, sizeof pass, f) != NULL;
	fclose(f);
	if (!got)
		die("the -P password file is empty");
	pass[strcspn(pass, "\r\n")] = '\0';
	size_t ul = strlen(g.user), pl = strlen(pass);
	if (pl == 0 || ul + pl + 2 > sizeof raw)
		die("the user name or password is empty or too long");
	raw[0] = '\0';
	memcpy(raw + 1, g.user, ul);
	raw[1 + ul] = '\0';
	memcpy(raw + 2 + ul, pass, pl);
	size_t rawlen = ul + pl + 2, cap = sizeof "AUTH PLAIN " + (rawlen + 2) / 3 * 4;
	g.auth_line = malloc(cap);
	if (!g.auth_line)
		die("out of memory");
	memcpy(g.auth_line, "AUTH PLAIN ", 11);
	EVP_EncodeBlock((unsigned char *)g.auth_line + 11, (const unsigned char *)raw, (int)rawlen);
	OPENSSL_cleanse(pass, sizeof pass);
	OPENSSL_cleanse(raw, sizeof raw);
}

static void usage(void)
{
	fprintf(stderr, "usage: phload tx [-c CONC] [-n COUNT] [-s BYTES] [-r RCPTS] [-R RATE] "
			"[-T SECS] [-d DOMAIN] [-m MESSAGE-FILE] [-S | -I] [-u USER -P PASSFILE] "
			"HOST PORT\n"
			"       phload submit -u USER -P PASSFILE [tx options] HOST PORT\n"
			"       phload idle [-n SESSIONS] [-S | -I] [-p PID] [-H SECS] [-T SECS] "
			"HOST PORT\n");
	exit(2);
}

static void parse_args(int argc, char **argv)
{
	if (argc < 2)
		usage();
	bool submit = strcmp(argv[1], "submit") == 0;
	if (strcmp(argv[1], "idle") == 0)
		g.idle_mode = true;
	else if (strcmp(argv[1], "tx") != 0 && !submit)
		usage();
	int opt;
	optind = 2;
	while ((opt = getopt(argc, argv, "c:n:s:r:R:T:d:m:SIu:P:p:H:")) != -1) {
		switch (opt) {
		case 'c': g.conc = (unsigned)atoi(optarg); break;
		case 'n': g.count = (unsigned)atoi(optarg); break;
		case 's': g.size = (size_t)atol(optarg); break;
		case 'r': g.rcpts = (unsigned)atoi(optarg); break;
		case 'R': g.rate = atof(optarg); break;
		case 'T': g.timeout = atof(optarg); break;
		case 'd': g.domain = optarg; break;
		case 'm': g.message = optarg; break;
		case 'S': g.starttls = true; break;
		case 'I': g.implicit_tls = true; break;
		case 'u': g.user = optarg; break;
		case 'P': g.passfile = optarg; break;
		case 'p': g.pid = (unsigned)atoi(optarg); break;
		case 'H': g.hold = atof(optarg); break;
		default: usage();
		}
	}
	if (argc - optind != 2)
		usage();
	g.addr.sin_family = AF_INET;
	g.addr.sin_port = htons((uint16_t)atoi(argv[optind + 1]));
	if (inet_pton(AF_INET, argv[optind], &g.addr.sin_addr) != 1)
		die("HOST must be an IPv4 address");
	if (g.count == 0 || g.count > 1000000 || g.rcpts == 0 || g.rcpts > 1000 || g.timeout <= 0)
		die("bad count, recipients or time limit");
	if (submit)
		g.starttls = true;
	if (g.starttls && g.implicit_tls)
		die("-S and -I exclude each other");
	if ((submit || g.user || g.passfile) && (!g.user || !g.passfile || g.idle_mode))
		die("a login needs -u USER and -P PASSFILE, and no idle mode");
	if (g.idle_mode)
		g.conc = g.count; /* every session stays open */
	if (g.conc == 0)
		die("bad concurrency");
}

int main(int argc, char **argv)
{
	parse_args(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	raise_nofile();
	g.base = event_base_new();
	if (!g.base)
		die("event_base_new failed");
	g.clients = calloc(g.conc, sizeof *g.clients);
	g.lat = calloc(g.count, sizeof *g.lat);
	if (!g.clients || !g.lat)
		die("out of memory");
	if (g.starttls || g.implicit_tls) {
		g.ssl_ctx = SSL_CTX_new(TLS_client_method());
		if (!g.ssl_ctx)
			die("SSL_CTX_new failed");
		SSL_CTX_set_verify(g.ssl_ctx, SSL_VERIFY_NONE, NULL);
		/* thousands of idle sessions: no 34 KiB of buffers each here either */
		SSL_CTX_set_mode(g.ssl_ctx, SSL_MODE_RELEASE_BUFFERS);
	}
	if (g.user)
		build_auth_line();
	if (!g.idle_mode && g.message)
		load_body(g.message);
	else if (!g.idle_mode)
		build_body();
	long rss_before = g.pid ? rss_kb(g.pid) : -1;

	g.tick = event_new(g.base, -1, EV_PERSIST, on_tick, NULL);
	struct timeval tick = {.tv_usec = 1000};
	event_add(g.tick, &tick);
	g.deadline = evtimer_new(g.base, on_deadline, NULL);
	struct timeval dl = {.tv_sec = (time_t)g.timeout,
			     .tv_usec = (suseconds_t)((g.timeout - (time_t)g.timeout) * 1e6)};
	event_add(g.deadline, &dl);
	g.start = now_s();
	fill();
	event_base_dispatch(g.base);
	double secs = now_s() - g.start;
	event_del(g.tick);

	if (g.idle_mode) {
		/* hold every session, let the server settle, then measure */
		struct timeval hold = {.tv_sec = (time_t)g.hold};
		event_base_loopexit(g.base, &hold);
		event_base_dispatch(g.base);
		long rss_after = g.pid ? rss_kb(g.pid) : -1;
		double per = g.ready ? (double)(rss_after - rss_before) * 1024 / g.ready : 0;
		printf("ready=%u fail=%u secs=%.2f rss_before_kb=%ld rss_after_kb=%ld "
		       "per_session_bytes=%.0f\n", g.ready, g.fail, secs, rss_before, rss_after, per);
	} else {
		qsort(g.lat, g.ok, sizeof *g.lat, cmp_double);
		printf("ok=%u fail=%u secs=%.3f rate=%.1f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f "
		       "max_ms=%.2f\n", g.ok, g.fail, secs, secs > 0 ? g.ok / secs : 0, pct(0.50),
		       pct(0.90), pct(0.99), pct(1.0));
	}
	for (unsigned i = 0; i < g.conc; i++)
		if (g.clients[i].in_use && g.clients[i].bev)
			bufferevent_free(g.clients[i].bev);
	event_free(g.tick);
	event_free(g.deadline);
	free(g.clients);
	free(g.lat);
	free(g.body);
	if (g.auth_line) {
		OPENSSL_cleanse(g.auth_line, strlen(g.auth_line));
		free(g.auth_line);
	}
	if (g.ssl_ctx)
		SSL_CTX_free(g.ssl_ctx);
	event_base_free(g.base);
	return g.fail ? 1 : 0;
}
