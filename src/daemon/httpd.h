/* httpd: the HTTP listener of the `metrics` addresses (libevent's evhttp on
 * the loop): GET /metrics, the Prometheus text format, and GET /, the
 * status page; HTTPS (RFC 9110 §4.2.2) on the addresses marked tls.
 * Read-only; GET and HEAD only; requests bounded in header size, body size
 * and time. */
#ifndef POSTHORN_HTTPD_H
#define POSTHORN_HTTPD_H

#include <stddef.h>

struct event_base;
struct runtime;

enum {
	HTTPD_HEADERS_MAX = 8192,     /* bytes of a request's line and header */
	HTTPD_BODY_MAX = 0,           /* GET has none */
	HTTPD_TIMEOUT = 10,           /* seconds for a request to arrive */
	HTTPD_LISTEN_BACKLOG = 64,
	HTTPD_PASSWORD_MAX = 256,     /* bytes of the metrics-password */
};

/* Listen on the metrics addresses of rt's configuration (none: nothing to
 * do), with rt's metrics-tls certificates on those marked tls, asking for
 * the metrics-password when there is one (RFC 7617).  0, or -1 with the
 * reason in err. */
int httpd_start(struct event_base *base, const struct runtime *rt, char *err, size_t errsz);

/* After a reload: the addresses are those of the start (a warning when
 * rt asks for others); new TLS handshakes use rt's metrics-tls
 * certificates; the password file is read again (when it cannot be, the
 * old password stays, with a warning). */
void httpd_reloaded(const struct runtime *rt);

void httpd_stop(void);

#endif
