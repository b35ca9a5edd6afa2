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


def browse(url, tmp_path, screenshot=None):
    """The DOM after Chromium loaded url (--dump-dom reads it through the
    browser's own script engine, so scripts stay on; the page has none, and
    its Content-Security-Policy would not run any)."""
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-extensions",
            "--no-first-run", f"--user-data-dir={tmp_path / 'chromium-profile'}"]
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
    assert re.search(r"posthorn\.conf:\d+:9: metrics address \"0\.0\.0\.0:\d+\" is not a loopback "
                     r"address: with \"metrics-password\" the password", res.stderr), res.stderr
    os.chmod(pw, 0o640)
    p.global_extra = f"metrics {HOST}:{free_port()}\nmetrics-password {pw}"
    p.write_config()
    res = p.cli("check")
    assert res.returncode != 0
    assert re.search(r"posthorn\.conf:\d+:18: secret file .*metrics\.pw may be read by group or "
                     r"others \(mode 0640\); chmod 600 it", res.stderr), res.stderr
