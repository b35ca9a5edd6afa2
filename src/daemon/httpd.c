/* httpd: GET /metrics and the status page on the `metrics` addresses (see
 * httpd.h).  HTTP/1.1 (RFC 9110, RFC 9112) through libevent's evhttp, over
 * TLS (RFC 9110 §4.2.2, RFC 8446) on the addresses marked tls; the answers
 * are made on the loop from memory only, so a request never waits for the
 * disk or the network. */
#define _GNU_SOURCE /* open_memstream */
#include "daemon/httpd.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "conf/conf.h"
#include "daemon/status_page.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/util.h"
#include "net/tls.h"
#include "runtime/runtime.h"

static struct {
	struct evhttp *http;          /* the plain addresses; NULL: none */
	struct evhttp *https;         /* the tls addresses; NULL: none */
	struct tls_server *tls;       /* a reference to the newest generation's
				       * metrics-tls certificates */
	char **addrs;                 /* the addresses listened on, as written */
	size_t naddrs;
	bool password_set;            /* GET needs HTTP Basic with password */
	unsigned char password_digest[32]; /* SHA-256 of the password */
} httpd;

static void httpd_reply_text(struct evhttp_request *req, int code, const char *reason,
			     const char *type, const char *body, size_t len);

/* ---- the password (RFC 7617) ------------------------------------------------ */

static bool httpd_sha256(const void *data, size_t len, unsigned char out[32])
{
	unsigned int n = 0;
	return EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) == 1 && n == 32;
}

/* The first line of the password file (mode 0600 or stricter) as its
 * SHA-256 in out.  false with the reason in err.  The password itself is
 * wiped. */
static bool httpd_read_password(const char *path, unsigned char out[32], char *err, size_t errsz)
{
	char pw[HTTPD_PASSWORD_MAX + 2];
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		errfmt(err, errsz, "cannot read the metrics password file %s: %s", path,
		       strerror(errno));
		if (fd >= 0)
			close(fd);
		return false;
	}
	if (st.st_mode & 077) {
		errfmt(err, errsz, "metrics password file %s may be read by group or others "
		       "(chmod 600 it)", path);
		close(fd);
		return false;
	}
	ssize_t n = read(fd, pw, sizeof pw - 1);
	int e = errno;
	close(fd); /* read-only */
	if (n < 0) {
		errfmt(err, errsz, "cannot read the metrics password file %s: %s", path, strerror(e));
		return false;
	}
	pw[n] = '\0';
	size_t len = strcspn(pw, "\r\n");
	bool ok = false;
	if (len == 0)
		errfmt(err, errsz, "the metrics password file %s is empty", path);
	else if (len > HTTPD_PASSWORD_MAX)
		errfmt(err, errsz, "the password in %s is longer than %d bytes", path,
		       HTTPD_PASSWORD_MAX);
	else if (!httpd_sha256(pw, len, out))
		errfmt(err, errsz, "cannot hash the metrics password");
	else
		ok = true;
	OPENSSL_cleanse(pw, sizeof pw);
	return ok;
}

static bool httpd_load_password(const struct conf *conf, char *err, size_t errsz)
{
	unsigned char digest[32];
	if (!conf->metrics_password) {
		httpd.password_set = false;
		return true;
	}
	if (!httpd_read_password(conf->metrics_password, digest, err, errsz))
		return false;
	memcpy(httpd.password_digest, digest, sizeof digest);
	httpd.password_set = true;
	return true;
}

/* Does the request carry "Authorization: Basic base64(user:password)"
 * with the password (any user name)?  Compared as SHA-256 digests with
 * CRYPTO_memcmp: the time does not depend on where they differ, nor on
 * the password's length. */
static bool httpd_authorized(struct evhttp_request *req)
{
	const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
	static const char scheme[] = "Basic ";
	if (!h || strncasecmp(h, scheme, sizeof scheme - 1) != 0)
		return false;
	const char *b64 = h + sizeof scheme - 1;
	size_t len = strlen(b64);
	/* the header is bounded (HTTPD_HEADERS_MAX), and so is this */
	if (len == 0 || len % 4 != 0 || len > HTTPD_HEADERS_MAX)
		return false;
	size_t size = len / 4 * 3 + 1;
	unsigned char *plain = xmalloc(size);
	int n = EVP_DecodeBlock(plain, (const unsigned char *)b64, (int)len);
	bool ok = false;
	if (n > 0) {
		/* EVP_DecodeBlock counts the padding's zero bytes too */
		size_t plen = (size_t)n - (b64[len - 1] == '=') - (b64[len - 2] == '=');
		unsigned char *colon = memchr(plain, ':', plen);
		unsigned char digest[32];
		if (colon && httpd_sha256(colon + 1, plen - (size_t)(colon + 1 - plain), digest))
			ok = CRYPTO_memcmp(digest, httpd.password_digest, sizeof digest) == 0;
	}
	OPENSSL_cleanse(plain, size);
	free(plain);
	return ok;
}

/* 401 with the challenge (RFC 7617 §2; evhttp_send_error() would drop the
 * header). */
static void httpd_ask_password(struct evhttp_request *req)
{
	static const char body[] = "401 Unauthorized: this page needs the metrics password\n";
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	if (evhttp_add_header(h, "WWW-Authenticate",
			      "Basic realm=\"posthorn\", charset=\"UTF-8\"") < 0) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	httpd_reply_text(req, 401, "Unauthorized", "text/plain; charset=utf-8", body,
			 sizeof body - 1);
}

/* ---- answers ---------------------------------------------------------------- */

static void httpd_reply_text(struct evhttp_request *req, int code, const char *reason,
			     const char *type, const char *body, size_t len)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	struct evbuffer *out = evbuffer_new();
	if (!out || evhttp_add_header(h, "Content-Type", type) < 0 ||
	    evhttp_add_header(h, "Cache-Control", "no-store") < 0 ||
	    evhttp_add_header(h, "X-Content-Type-Options", "nosniff") < 0 ||
	    evhttp_add_header(h, "Content-Security-Policy",
			      "default-src 'none'; style-src 'unsafe-inline'") < 0 ||
	    evbuffer_add(out, body, len) < 0) {
		if (out)
			evbuffer_free(out);
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	evhttp_send_reply(req, code, reason, out);
	evbuffer_free(out);
}

/* The page that write() makes on a memory stream, or a 500. */
static void httpd_reply_made(struct evhttp_request *req, const char *type,
			     int (*make)(FILE *f, const void *arg), const void *arg)
{
	char *text = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&text, &len);
	if (!m) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	int r = make(m, arg);
	if (fclose(m) != 0 || r < 0) {
		log_warn("event=http-error reason=\"cannot make the answer\"");
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
	} else {
		httpd_reply_text(req, HTTP_OK, "OK", type, text, len);
	}
	free(text);
}

/* The gauges that are read, not counted: the queue. */
static void httpd_refresh_gauges(void)
{
	struct status_queue q;
	status_queue_read(&q);
	metrics_set(METRIC_QUEUE_MESSAGES, NULL, (int64_t)q.messages);
	time_t now = time(NULL);
	metrics_set(METRIC_QUEUE_OLDEST_SECONDS, NULL,
		    q.oldest && now > q.oldest ? (int64_t)(now - q.oldest) : 0);
}

static int make_metrics(FILE *f, const void *arg)
{
	return metrics_write(f);
}

static int make_status(FILE *f, const void *arg)
{
	return status_page_write(f, arg);
}

static void httpd_request(struct evhttp_request *req, void *arg)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	if (!path) {
		evhttp_send_error(req, HTTP_BADREQUEST, NULL);
		return;
	}
	if (httpd.password_set && !httpd_authorized(req)) {
		httpd_ask_password(req);
		return;
	}
	if (strcmp(path, "/metrics") == 0) {
		httpd_refresh_gauges();
		httpd_reply_made(req, "text/plain; version=0.0.4; charset=utf-8", make_metrics, NULL);
	} else if (strcmp(path, "/") == 0) {
		httpd_reply_made(req, "text/html; charset=utf-8", make_status, runtime_current());
	} else {
		evhttp_send_error(req, HTTP_NOTFOUND, NULL);
	}
}

/* ---- listening ---------------------------------------------------------------- */

/* "IP:PORT" or "IP:PORT tls", as the configuration's line: what a reload
 * compares. */
static char *httpd_address_text(const struct conf_metrics *m)
{
	return xasprintf("%s%s", m->addr.text, m->tls ? " tls" : "");
}

static int httpd_socket(const struct conf_sockaddr *a, char *err, size_t errsz)
{
	int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	if (fd < 0) {
		errfmt(err, errsz, "metrics %s: socket: %s", a->text, strerror(errno));
		return -1;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
	    (a->ss.ss_family == AF_INET6 &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0) ||
	    bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0 ||
	    listen(fd, HTTPD_LISTEN_BACKLOG) < 0) {
		errfmt(err, errsz, "metrics %s: %s", a->text, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* evhttp's connection of a tls address: a server-side TLS bufferevent
 * (the socket is set by evhttp) with the newest certificates, so that
 * those of a reload serve the next handshake.  evhttp would fall back to
 * plain text on NULL, so there is no NULL: an SSL fails to be made only
 * when memory does, which xmalloc() treats the same way. */
static struct bufferevent *httpd_tls_bufferevent(struct event_base *base, void *arg)
{
	(void)arg;
	SSL *ssl = tls_server_ssl(httpd.tls);
	if (!ssl)
		fatal("metrics: cannot make an SSL (out of memory)");
	struct bufferevent *bev = bufferevent_openssl_socket_new(
		base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (!bev)
		fatal("metrics: cannot make a TLS bufferevent (out of memory)");
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	return bev;
}

static struct evhttp *httpd_new(struct event_base *base, bool tls, char *err, size_t errsz)
{
	struct evhttp *h = evhttp_new(base);
	if (!h) {
		errfmt(err, errsz, "evhttp_new failed");
		return NULL;
	}
	evhttp_set_allowed_methods(h, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
	evhttp_set_max_headers_size(h, HTTPD_HEADERS_MAX);
	evhttp_set_max_body_size(h, HTTPD_BODY_MAX);
	evhttp_set_timeout(h, HTTPD_TIMEOUT);
	evhttp_set_gencb(h, httpd_request, NULL);
	if (tls)
		evhttp_set_bevcb(h, httpd_tls_bufferevent, NULL);
	return h;
}

/* The evhttp of address m, made on first use. */
static struct evhttp *httpd_for(struct event_base *base, const struct conf_metrics *m,
				char *err, size_t errsz)
{
	struct evhttp **h = m->tls ? &httpd.https : &httpd.http;
	if (!*h)
		*h = httpd_new(base, m->tls, err, errsz);
	return *h;
}

static int httpd_listen(struct event_base *base, const struct conf_metrics *m, char *err,
			size_t errsz)
{
	struct evhttp *h = httpd_for(base, m, err, errsz);
	if (!h)
		return -1;
	int fd = httpd_socket(&m->addr, err, errsz);
	if (fd < 0)
		return -1;
	if (!evhttp_accept_socket_with_handle(h, fd)) {
		close(fd);
		errfmt(err, errsz, "metrics %s: evhttp cannot take the socket", m->addr.text);
		return -1;
	}
	*(char **)xappend(&httpd.addrs, &httpd.naddrs, sizeof(char *)) = httpd_address_text(m);
	log_info("event=listening server=metrics address=%s tls=%s", m->addr.text,
		 m->tls ? "yes" : "no");
	return 0;
}

int httpd_start(struct event_base *base, const struct runtime *rt, char *err, size_t errsz)
{
	const struct conf *conf = rt->conf;
	if (conf->nmetrics == 0)
		return 0;
	if (!httpd_load_password(conf, err, errsz))
		return -1;
	if (rt->metrics_tls)
		httpd.tls = tls_server_ref(rt->metrics_tls);
	for (size_t i = 0; i < conf->nmetrics; i++) {
		if (conf->metrics[i].tls && !httpd.tls) {
			errfmt(err, errsz, "metrics %s tls: no metrics-tls certificate",
			       conf->metrics[i].addr.text);
			httpd_stop();
			return -1;
		}
		if (httpd_listen(base, &conf->metrics[i], err, errsz) < 0) {
			httpd_stop();
			return -1;
		}
	}
	return 0;
}

static bool httpd_same_addresses(const struct conf *conf)
{
	if (conf->nmetrics != httpd.naddrs)
		return false;
	for (size_t i = 0; i < conf->nmetrics; i++) {
		char *text = httpd_address_text(&conf->metrics[i]);
		bool same = strcmp(text, httpd.addrs[i]) == 0;
		free(text);
		if (!same)
			return false;
	}
	return true;
}

void httpd_reloaded(const struct runtime *rt)
{
	const struct conf *conf = rt->conf;
	char err[512], q[LOG_VALUE_MAX]; /* err names the file as configured */
	if (!httpd_same_addresses(conf))
		log_warn("event=reload warning=\"new metrics addresses take effect at restart\"");
	if ((httpd.http || httpd.https) && !httpd_load_password(conf, err, sizeof err))
		log_warn("event=reload warning=\"%s; the old metrics password stays\"",
			 log_quote(q, sizeof q, err, strlen(err)));
	if (httpd.https && rt->metrics_tls) {
		tls_server_free(httpd.tls); /* SSLs made from it keep their own */
		httpd.tls = tls_server_ref(rt->metrics_tls);
	} else if (httpd.https) {
		log_warn("event=reload warning=\"no metrics-tls block: the metrics tls addresses "
			 "keep the old certificates until restart\"");
	}
}

void httpd_stop(void)
{
	if (httpd.http)
		evhttp_free(httpd.http);
	httpd.http = NULL;
	if (httpd.https)
		evhttp_free(httpd.https);
	httpd.https = NULL;
	tls_server_free(httpd.tls);
	httpd.tls = NULL;
	for (size_t i = 0; i < httpd.naddrs; i++)
		free(httpd.addrs[i]);
	free(httpd.addrs);
	httpd.addrs = NULL;
	httpd.naddrs = 0;
	OPENSSL_cleanse(httpd.password_digest, sizeof httpd.password_digest);
	httpd.password_set = false;
}
