"""HTTP helpers for the tests of the `metrics` listener (test_metrics.py,
test_status_page.py): a bounded GET, the samples of an exposition, and a
daemon with a message stuck in its queue."""

import http.client

from helpers import HOST, SMTPConn, free_port, queue_id, send_message

DEAD_HOST = "127.0.0.3"          # nothing listens there: connections are refused
REMOTE = "carl@external.test"


def http_get(port, path="/metrics", host=HOST, method="GET", headers=None, timeout=10,
             tls=None):
    """(status, headers, body text) of one request; HTTPS with the ssl
    context tls when given."""
    c = (http.client.HTTPSConnection(host, port, timeout=timeout, context=tls) if tls
         else http.client.HTTPConnection(host, port, timeout=timeout))
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read().decode("utf-8", "replace")
    finally:
        c.close()


def samples(text):
    """{'name{labels}': value} of a Prometheus text exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, value = line.rsplit(" ", 1)
        out[key] = float(value)
    return out


def metered_daemon(posthorn, stuck_outbound=False, global_extra="", tls_cert=None, **kw):
    """A daemon with a metrics address (p.metrics_port); HTTPS with the
    certificate tls_cert ({"crt", "key"}, imaputil.make_cert) when given; with
    stuck_outbound, remote mail goes to a smarthost that refuses connections
    and waits an hour for its retry (127.0.0.1 may relay)."""
    p_port = free_port()
    extra = f"metrics {HOST}:{p_port}\n{global_extra}"
    if tls_cert:
        extra = (f"metrics {HOST}:{p_port} tls\nmetrics-tls {{\n"
                 f"    certificate {tls_cert['crt']}\n    key {tls_cert['key']}\n}}\n{global_extra}")
    if stuck_outbound:
        extra += (f"\noutbound {{\n    smarthost {DEAD_HOST}:{free_port(DEAD_HOST)}\n"
                  "    retry 1h\n    lifetime 1d\n}\n")
        kw.setdefault("servers", {"mx": {"anonymous": True,
                                         "extra": "relay {\n    allow 127.0.0.1\n}\n"}})
    p = posthorn(global_extra=extra, **kw)
    p.metrics_port = p_port
    return p


def submit(p, rcpts, subject="metrics", sender="bob@example.test"):
    """One message through the SMTP server mx; returns its queue ID."""
    text = f"From: <{sender}>\r\nSubject: {subject}\r\n\r\nhello\r\n"
    with SMTPConn(p.port()) as c:
        c.start()
        r = send_message(c, sender, rcpts, text)
        c.cmd("QUIT")
    return queue_id(r)


class PostRecorder:
    """HTTPS on host:port (TLS context ctx) that answers every POST with
    200 and keeps (path, headers, body) of each in .posts."""

    def __init__(self, host, port, ctx):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        self.posts = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(min(n, 1 << 20))
                recorder.posts.append((self.path, dict(self.headers), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
