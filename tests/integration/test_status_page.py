"""The status page (posthorn.conf(5) `metrics`, posthorn(8) STATUS PAGE):
GET / on the metrics listener, loaded in a real headless browser
(Chromium): the virtual servers and their policy as `posthorn check` says
it, the queue with its destinations, the recent refusals and lockouts, the
certificates' expiry; a configuration value with HTML metacharacters is
shown as text, never as markup; the page is read-only and needs no
script."""

import datetime
import html.parser
import os
import re
import subprocess

import pytest

from helpers import HOST, SMTPConn
from httputil import REMOTE, http_get, metered_daemon, submit

CHROMIUM = "/usr/bin/chromium"


def browse(url, tmp_path, screenshot=None, extra=()):
    """The DOM after Chromium loaded url (--dump-dom reads it through the
    browser's own script engine, so scripts stay on; the page has none, and
    its Content-Security-Policy would not run any)."""
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-extensions",
            "--no-first-run", f"--user-data-dir={tmp_path / 'chromium-profile'}", *extra]
    if screenshot:
        args += [f"--screenshot={screenshot}", "--window-size=1200,1600"]
    else:
        args += ["--dump-dom"]
    res = subprocess.run(args + [url], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, HOME=str(tmp_path)))
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


class Page(html.parser.HTMLParser):
    """The text of the page, the tags it has, and the text of elements by id
    and of the <pre> blocks."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.tags = []
        self.text = []
        self.by_id = {}
        self.pres = []
        self._open = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._open.append((tag, dict(attrs).get("id"), len(self.text)))

    def handle_endtag(self, tag):
        while self._open:
            t, ident, start = self._open.pop()
            if ident:
                self.by_id[ident] = "".join(self.text[start:])
            if t == "pre":
                self.pres.append("".join(self.text[start:]))
            if t == tag:
                break

    def handle_data(self, data):
        self.text.append(data)

    def all_text(self):
        return "".join(self.text)


@pytest.fixture
def page_of(tmp_path):
    return lambda p: Page(browse(f"http://{HOST}:{p.metrics_port}/", tmp_path))


def test_status_page_shows_servers_policy_and_queue(posthorn, page_of, tmp_path):
    p = metered_daemon(posthorn, stuck_outbound=True, start=False)
    res = p.cli("cert", "new", "--hostname", "mx.example.test", "--out", str(tmp_path / "certs"))
    assert res.returncode == 0, res.stderr
    crt, key = (str(tmp_path / "certs" / f"mx.example.test.{x}") for x in ("crt", "key"))
    p.servers["mx"]["extra"] += f"tls {{\n    certificate {crt}\n    key {key}\n}}\n"
    p.write_config()
    p.start()
    qid = submit(p, [REMOTE, "dana@other.example"])
    p.wait_event("outbound", id=qid, result="deferred")
    page = page_of(p)
    text = page.all_text()
    assert "posthorn on mx.example.test" in text
    assert page.by_id["queue-count"] == "1"
    assert "external.test" in text and "other.example" in text
    assert "the oldest arrived" in text
    # the policy, as `posthorn check` prints it, in a <pre> block
    check = p.cli("check").stdout
    server_part = check[check.index("server mx (smtp)"):check.index("\nwarning")].strip() \
        if "\nwarning" in check else check[check.index("server mx (smtp)"):].strip()
    assert any(server_part in pre for pre in page.pres), (server_part, page.pres)
    assert "mx (smtp), hostname mx.example.test" in text
    # the certificate and its expiry, as `posthorn check` reports them
    year = int(datetime.datetime.now(datetime.timezone.utc).year) + 1
    assert f"server mx: certificate {crt} with key {key}: ECDSA P-256" in text
    assert f"valid until {year}-" in text
    # no script anywhere, and nothing to submit: read-only
    assert "script" not in page.tags and "form" not in page.tags
    # the browser renders it: a screenshot with something on it
    shot = tmp_path / "status.png"
    browse(f"http://{HOST}:{p.metrics_port}/", tmp_path, screenshot=str(shot))
    assert shot.stat().st_size > 10000


def test_status_page_lists_refusals_and_lockouts(posthorn, page_of):
    p = metered_daemon(posthorn, servers={"mx": {
        "anonymous": True, "limits": {"unknown-recipients": "2 1m 1m"},
        "extra": "connection {\n    deny 127.0.0.5\n}"}})
    with SMTPConn(p.port(), source="127.0.0.5") as c:
        assert c.reply().code == 554
    with SMTPConn(p.port()) as c:
        c.start()
        c.expect("MAIL FROM:<a@example.net>", 250)
        for i in range(2):
            assert c.cmd(f"RCPT TO:<nobody{i}@example.test>").code == 550
    text = page_of(p).all_text()
    recent = text[text.index("Recent refusals"):text.index("Certificates")]
    assert f"127.0.0.5: connection rule deny 127.0.0.5 ({p.conf}:" in recent, recent
    # newest first
    assert recent.index("unknown recipients") < recent.index("connection rule"), recent
    assert "127.0.0.1: unknown recipients, for 60s" in recent
    assert "None since the start" not in text


def test_status_page_escapes_html_in_configuration_values(posthorn, page_of, tmp_path):
    """A path with <, >, &, ' and " is text on the page, not markup."""
    p = metered_daemon(posthorn, start=False)
    evil = str(tmp_path / "mail<i>x</i>&amp;'\"q")
    text = open(p.conf).read().replace(f"mailboxes {p.mailboxes}", f'mailboxes "{evil.replace(chr(34), chr(92) + chr(34))}"')
    p.write_config(text)
    p.start()
    raw = http_get(p.metrics_port, "/")[2]
    assert "<i>" not in raw and "mail&lt;i&gt;x&lt;/i&gt;&amp;amp;&#39;&quot;q" in raw
    page = page_of(p)
    assert "i" not in page.tags
    assert f"mailboxes: {evil}" in page.all_text()


def test_status_page_unknown_paths_and_methods(posthorn):
    p = metered_daemon(posthorn)
    assert http_get(p.metrics_port, "/")[0] == 200
    status, headers, _ = http_get(p.metrics_port, "/", method="HEAD")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert http_get(p.metrics_port, "/admin")[0] == 404
    assert http_get(p.metrics_port, "/", method="DELETE")[0] == 501


# -- metrics-password: HTTP Basic on loopback ------------------------------------------

def basic(user, password):
    import base64
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def password_daemon(posthorn, tmp_path, password="Status-Secret-7", mode=0o600, start=True):
    pw = tmp_path / "metrics.pw"
    pw.write_text(password + "\n")
    os.chmod(pw, mode)
    return metered_daemon(posthorn, global_extra=f"metrics-password {pw}", start=start), str(pw)


def test_password_is_asked_and_checked(posthorn, tmp_path):
    p, _ = password_daemon(posthorn, tmp_path)
    for path in ("/", "/metrics"):
        status, headers, _ = http_get(p.metrics_port, path)
        assert status == 401
        assert headers["WWW-Authenticate"] == 'Basic realm="posthorn", charset="UTF-8"'
        assert http_get(p.metrics_port, path, headers=basic("admin", "wrong"))[0] == 401
        assert http_get(p.metrics_port, path, headers=basic("admin", "Status-Secret-"))[0] == 401
        assert http_get(p.metrics_port, path, headers=basic("admin", "Status-Secret-77"))[0] == 401
        assert http_get(p.metrics_port, path,
                        headers={"Authorization": "Basic !!!!"})[0] == 401
        assert http_get(p.metrics_port, path,
                        headers={"Authorization": "Bearer Status-Secret-7"})[0] == 401
        # any user name; a colon in the password is the password's
        status, _, body = http_get(p.metrics_port, path, headers=basic("anyone", "Status-Secret-7"))
        assert status == 200 and body
    check = p.cli("check").stdout
    assert "(HTTP Basic, the password in" in check
    assert "Status-Secret-7" not in p.log


def test_password_may_hold_a_colon_and_is_read_again_at_reload(posthorn, tmp_path):
    p, pw = password_daemon(posthorn, tmp_path, password="a:b:c")
    assert http_get(p.metrics_port, "/", headers=basic("x", "a:b:c"))[0] == 200
    with open(pw, "w") as f:
        f.write("New-Secret-8\n")
    p.reload()
    assert http_get(p.metrics_port, "/", headers=basic("x", "a:b:c"))[0] == 401
    assert http_get(p.metrics_port, "/", headers=basic("x", "New-Secret-8"))[0] == 200


def test_password_only_on_loopback_and_only_from_a_private_file(posthorn, tmp_path):
    from helpers import free_port
    p, pw = password_daemon(posthorn, tmp_path, start=False)
    p.global_extra = f"metrics 0.0.0.0:{free_port()}\nmetrics-password {pw}"
    p.write_config()
    res = p.cli("check")
    assert res.returncode != 0
    assert re.search(r"posthorn\.conf:\d+:9: metrics address \"0\.0\.0\.0:\d+\" is neither "
                     r"loopback nor \"tls\": with \"metrics-password\" the password", res.stderr), \
        res.stderr
    os.chmod(pw, 0o640)
    p.global_extra = f"metrics {HOST}:{free_port()}\nmetrics-password {pw}"
    p.write_config()
    res = p.cli("check")
    assert res.returncode != 0
    assert re.search(r"posthorn\.conf:\d+:18: secret file .*metrics\.pw may be read by group or "
                     r"others \(mode 0640\); chmod 600 it", res.stderr), res.stderr


# -- metrics ... tls: HTTPS with the metrics-tls block's certificate ----------------------

def https_daemon(posthorn, posthorn_bin, tmp_path, password=None, start=True):
    """A daemon whose metrics address is HTTPS with a `posthorn cert new`
    certificate for 127.0.0.1 (and the password, if given); (daemon, a client
    ssl context trusting that certificate, the certificate files)."""
    from imaputil import client_ctx, make_cert
    cert = make_cert(posthorn_bin, tmp_path / "certs")
    extra = ""
    if password:
        pw = tmp_path / "metrics.pw"
        pw.write_text(password + "\n")
        os.chmod(pw, 0o600)
        extra = f"metrics-password {pw}"
    p = metered_daemon(posthorn, global_extra=extra, tls_cert=cert, start=start)
    return p, client_ctx(cert), cert


def test_https_serves_metrics_and_page_behind_the_password(posthorn, posthorn_bin, tmp_path):
    p, ctx, _ = https_daemon(posthorn, posthorn_bin, tmp_path, password="Tls-Secret-9")
    for path, want in (("/", "<!DOCTYPE html>"), ("/metrics", "posthorn_connections_total")):
        status, headers, _ = http_get(p.metrics_port, path, tls=ctx)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic ")
        assert http_get(p.metrics_port, path, tls=ctx, headers=basic("a", "wrong"))[0] == 401
        status, _, body = http_get(p.metrics_port, path, tls=ctx, headers=basic("a", "Tls-Secret-9"))
        assert status == 200 and want in body, body[:300]
        if path == "/":  # the page lists the listener's own certificate too
            assert "server metrics-tls: certificate " in body, body
    check = p.cli("check").stdout
    assert f"https://{HOST}:{p.metrics_port}/ (HTTP Basic" in check, check


def test_https_port_refuses_plain_http(posthorn, posthorn_bin, tmp_path):
    import http.client
    p, ctx, _ = https_daemon(posthorn, posthorn_bin, tmp_path)
    with pytest.raises((http.client.HTTPException, OSError)):
        http_get(p.metrics_port, "/metrics", timeout=5)
    # the listener is still there for HTTPS after the failed handshake
    assert http_get(p.metrics_port, "/metrics", tls=ctx)[0] == 200


def test_https_takes_a_new_certificate_at_reload(posthorn, posthorn_bin, tmp_path):
    import shutil
    import socket
    import ssl
    from imaputil import client_ctx, make_cert
    p, ctx, cert = https_daemon(posthorn, posthorn_bin, tmp_path)

    def served_certificate(context):
        with socket.create_connection((HOST, p.metrics_port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname=HOST) as s:
                return s.getpeercert(binary_form=True)

    def der(path):
        with open(path) as f:
            return ssl.PEM_cert_to_DER_cert(f.read())
    old = der(cert["crt"])
    assert served_certificate(ctx) == old
    fresh = make_cert(posthorn_bin, tmp_path / "fresh")
    shutil.copy(fresh["crt"], cert["crt"])
    shutil.copy(fresh["key"], cert["key"])
    assert served_certificate(ctx) == old      # the files are read at reload only
    p.reload()
    assert served_certificate(client_ctx(fresh)) == der(fresh["crt"]) != old
    assert http_get(p.metrics_port, "/metrics", tls=client_ctx(fresh))[0] == 200


def test_metrics_tls_configuration_rules(posthorn, posthorn_bin, tmp_path):
    from helpers import free_port
    from imaputil import make_cert
    cert = make_cert(posthorn_bin, tmp_path / "certs")
    pw = tmp_path / "metrics.pw"
    pw.write_text("Tls-Secret-9\n")
    os.chmod(pw, 0o600)
    p = posthorn(start=False)
    block = f"metrics-tls {{\n    certificate {cert['crt']}\n    key {cert['key']}\n}}\n"
    port = free_port()
    # with a password: a non-loopback address is fine over TLS...
    p.global_extra = f"metrics 0.0.0.0:{port} tls\n{block}metrics-password {pw}"
    p.write_config()
    res = p.cli("check")
    assert res.returncode == 0, res.stderr
    assert f"https://0.0.0.0:{port}/ (HTTP Basic" in res.stdout
    assert f"server metrics-tls: certificate {cert['crt']} with key {cert['key']}" in res.stdout, \
        res.stdout
    assert "metrics-tls is set but" not in res.stdout
    # a metrics-tls block no address uses is a warning, not an error
    p.global_extra = f"metrics {HOST}:{port}\n{block}"
    p.write_config()
    res = p.cli("check")
    assert res.returncode == 0, res.stderr
    assert "warning: metrics-tls is set but no metrics address has tls" in res.stdout, res.stdout
    # ... and refused in plain text
    p.global_extra = f"metrics 0.0.0.0:{port}\n{block}metrics-password {pw}"
    p.write_config()
    res = p.cli("check")
    assert res.returncode != 0
    assert re.search(r"posthorn\.conf:\d+:9: metrics address \"0\.0\.0\.0:\d+\" is neither "
                     r"loopback nor \"tls\"", res.stderr), res.stderr
    # tls without a metrics-tls block
    p.global_extra = f"metrics {HOST}:{port} tls"
    p.write_config()
    res = p.cli("check")
    assert res.returncode != 0
    assert re.search(r"posthorn\.conf:\d+:9: no certificate: \"metrics 127\.0\.0\.1:\d+ tls\" "
                     r"needs a metrics-tls block with a certificate and key", res.stderr), res.stderr
    # an unknown option, an empty block, a certificate without its key, require
    p.global_extra = (f"metrics {HOST}:{port} ssl\nmetrics-tls {{\n    certificate {cert['crt']}\n"
                      "    require yes\n}\n")
    p.write_config()
    res = p.cli("check")
    assert res.returncode != 0
    assert re.search(r":\d+:\d+: bad option \"ssl\" for \"metrics\" \(use tls\)", res.stderr)
    assert re.search(r":\d+:5: certificate \".*\" has no \"key\" after it", res.stderr), res.stderr
    assert re.search(r":\d+:5: unknown directive \"require\" in metrics-tls block", res.stderr), \
        res.stderr
    p.global_extra = f"metrics {HOST}:{port} tls\nmetrics-tls {{\n}}\n"
    p.write_config()
    res = p.cli("check")
    assert res.returncode != 0
    assert re.search(r":\d+:1: metrics-tls block without \"certificate\"", res.stderr), res.stderr
    # certificate acme, as in a server's tls block, needs the acme block
    p.global_extra = f"metrics {HOST}:{port} tls\nmetrics-tls {{\n    certificate acme\n}}\n"
    p.write_config()
    res = p.cli("check")
    assert res.returncode != 0
    assert re.search(r":\d+:5: \"certificate acme\" without an acme block at top level",
                     res.stderr), res.stderr


def test_chromium_loads_the_status_page_over_https(posthorn, posthorn_bin, tmp_path):
    p, _, _ = https_daemon(posthorn, posthorn_bin, tmp_path)
    page = Page(browse(f"https://{HOST}:{p.metrics_port}/", tmp_path,
                       extra=("--ignore-certificate-errors",)))
    text = page.all_text()
    assert "posthorn" in text and "mx" in text, text[:500]
    assert "script" not in page.tags
