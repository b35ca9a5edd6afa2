/* httpd: GET /metrics and the status page on the `metrics` addresses (see
 * httpd.h).  HTTP/1.1 (RFC 9110, RFC 9112) through libevent's evhttp; the
 * answers are made on the loop from memory only, so a request never
 * waits for the disk or the network. */
#define _GNU_SOURCE /* open_memstream */
#include "daemon/httpd.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "conf/conf.h"
#include "daemon/status_page.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/util.h"
#include "runtime/runtime.h"

static struct {
	struct evhttp *http;
	char **addrs;                 /* the addresses listened on, as written */
	size_t naddrs;
} httpd;

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

int httpd_start(struct event_base *base, const struct conf *conf, char *err, size_t errsz)
{
	if (conf->nmetrics == 0)
		return 0;
	httpd.http = evhttp_new(base);
	if (!httpd.http) {
		errfmt(err, errsz, "evhttp_new failed");
		return -1;
	}
	evhttp_set_allowed_methods(httpd.http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
	evhttp_set_max_headers_size(httpd.http, HTTPD_HEADERS_MAX);
	evhttp_set_max_body_size(httpd.http, HTTPD_BODY_MAX);
	evhttp_set_timeout(httpd.http, HTTPD_TIMEOUT);
	evhttp_set_gencb(httpd.http, httpd_request, NULL);
	for (size_t i = 0; i < conf->nmetrics; i++) {
		int fd = httpd_socket(&conf->metrics[i], err, errsz);
		if (fd < 0) {
			httpd_stop();
			return -1;
		}
		if (!evhttp_accept_socket_with_handle(httpd.http, fd)) {
			close(fd);
			errfmt(err, errsz, "metrics %s: evhttp cannot take the socket",
			       conf->metrics[i].text);
			httpd_stop();
			return -1;
		}
		*(char **)xappend(&httpd.addrs, &httpd.naddrs, sizeof(char *)) =
			xstrdup(conf->metrics[i].text);
		log_info("event=listening server=metrics address=%s", conf->metrics[i].text);
	}
	return 0;
}

static bool httpd_same_addresses(const struct conf *conf)
{
	if (conf->nmetrics != httpd.naddrs)
		return false;
	for (size_t i = 0; i < conf->nmetrics; i++)
		if (strcmp(conf->metrics[i].text, httpd.addrs[i]) != 0)
			return false;
	return true;
}

void httpd_reloaded(const struct conf *conf)
{
	if (!httpd_same_addresses(conf))
		log_warn("event=reload warning=\"new metrics addresses take effect at restart\"");
}

void httpd_stop(void)
{
	if (httpd.http)
		evhttp_free(httpd.http);
	httpd.http = NULL;
	for (size_t i = 0; i < httpd.naddrs; i++)
		free(httpd.addrs[i]);
	free(httpd.addrs);
	httpd.addrs = NULL;
	httpd.naddrs = 0;
}
