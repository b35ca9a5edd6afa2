"""posthorn behind a load balancer: `listen ... proxy` and `proxy-from`
(posthorn.conf(5)), with a real HAProxy on loopback in front of the daemon
sending the PROXY protocol header (`send-proxy-v2` and `send-proxy`).

The client binds a loopback source address of its own (127.0.0.2,
127.0.0.3, ...) and connects to HAProxy; HAProxy connects to posthorn from
127.0.0.1, the one peer in proxy-from.  What the tests check is what an
administrator would: the client's own address, not the balancer's, decides
the `connection` rules (as it does for a direct connection), counts
against connections-per-ip, and is written in the log and the Received
header; SMTP, POP3 and IMAP, plain and implicit TLS.  Then raw headers from
a test client straight to the `proxy` listener: an untrusted peer, bad
signatures, a v1 line too long, v2 lengths that lie, and silence past
proxy-timeout each close the connection with nothing sent and one
`event=proxy-refused` line.

HAProxy is Debian's `haproxy` (scripts/install-deps); each test starts its
own in a temporary folder (`haproxy -f CFG -db`, foreground) and stops it
by PID.
"""

import imaplib
import poplib
import socket
import ssl
import struct
import time

import pytest

from conftest import DEFAULT_USERS, run_cli
from helpers import CLIENT_HELO, HOST, ConnectionClosed, SMTPConn, free_port, send_message
from haproxyutil import BALANCER, haproxy  # noqa: F401 (the fixture)
from httputil import http_get, samples

BOB, BOB_PW = "bob@example.test", DEFAULT_USERS["bob@example.test"]
ALLOWED, DENIED, OTHER = "127.0.0.2", "127.0.0.3", "127.0.0.4"
UNTRUSTED = "127.0.0.5"

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


@pytest.fixture(scope="module")
def cert(posthorn_bin, tmp_path_factory):
    """A certificate for the IP address 127.0.0.1 (names check in Python)."""
    d = tmp_path_factory.mktemp("proxy-cert")
    res = run_cli(posthorn_bin, ["cert", "new", "--hostname", HOST, "--out", str(d)])
    assert res.returncode == 0, res.stderr
    return {"crt": str(d / f"{HOST}.crt"), "key": str(d / f"{HOST}.key")}


@pytest.fixture(scope="module")
def ctx(cert):
    c = ssl.create_default_context(cafile=cert["crt"])
    c.check_hostname = True
    return c


# -- the daemon --------------------------------------------------------------------------

def proxied_spec(protocol, proxy_port, cert=None, tls_proxy_port=None, connection=(),
                 limits=None, anonymous=None):
    """A server whose usual (direct) listener is the conftest one, with a
    `proxy` listener beside it (and an implicit-TLS `proxy` one), believing
    PROXY headers from 127.0.0.1 only, and a short proxy-timeout."""
    lines = [f"protocol {protocol}", f"listen {HOST}:{proxy_port} proxy"]
    if tls_proxy_port:
        lines.append(f"listen {HOST}:{tls_proxy_port} tls proxy")
    lines.append(f"proxy-from {BALANCER}")
    if cert is not None:
        lines += ["tls {", f"    certificate {cert['crt']}", f"    key {cert['key']}", "}"]
    if connection:
        lines += ["connection {"] + ["    " + c for c in connection] + ["}"]
    limits = {"proxy-timeout": "1s", **(limits or {})}
    return {"anonymous": anonymous, "limits": limits, "extra": "\n".join(lines)}


def start(posthorn, name, protocol, extra=(), global_extra="", **kw):
    """A daemon with the proxied server `name`; p.proxy_port(name) and
    p.tls_proxy_port(name) are its `proxy` listeners."""
    ports = {"plain": free_port(), "tls": free_port() if kw.get("cert") else None}
    servers = {}
    if name != "mx":
        servers["mx"] = {"anonymous": True}
    servers[name] = proxied_spec(protocol, ports["plain"], tls_proxy_port=ports["tls"], **kw)
    if extra:
        servers[name]["extra"] += "\n" + "\n".join(extra)
    p = posthorn(servers=servers, global_extra=global_extra)
    p.proxied = ports
    return p


def first_line(port, source, timeout=10.0):
    """The first line a server sends to a client from `source`."""
    c = SMTPConn(port, source=source, timeout=timeout)
    try:
        return c.readline()
    finally:
        c.close()


def proxy_events(p, since=0, **match):
    return [e for e in p.events("proxy", since) if all(e.get(k) == v for k, v in match.items())]


# -- SMTP through HAProxy ------------------------------------------------------------------

@pytest.mark.parametrize("option,version", [("send-proxy-v2", "2"), ("send-proxy", "1")])
def test_smtp_rule_and_received_through_haproxy(posthorn, haproxy, option, version):
    """`connection { deny 127.0.0.3 }` refuses 127.0.0.3 behind HAProxy as
    it does directly, lets 127.0.0.2 in, and 127.0.0.2's message carries
    [127.0.0.2] in its Received header; the log names the client's
    address and the balancer's."""
    p = start(posthorn, "mx", "smtp", connection=["deny " + DENIED], anonymous=True)
    h = haproxy([("smtp", p.proxied["plain"], option)])

    direct = first_line(p.port("mx"), DENIED)
    proxied = first_line(h.port("smtp"), DENIED)
    assert direct.startswith(b"554 5.7.1"), direct
    assert proxied == direct, (proxied, direct)
    ev = p.wait_event("refuse", client=DENIED, reason="connection-rule")
    assert f'rule="{DENIED}"' in ev["_line"], ev

    with SMTPConn(h.port("smtp"), source=ALLOWED) as c:
        c.start()
        send_message(c, "alice@example.org", [BOB], b"Subject: via haproxy\r\n\r\nhello\r\n")
        c.cmd("QUIT")
    msg = p.wait_messages(BOB, 1)[0]
    head = msg.split(b"\r\n\r\n", 1)[0]
    received = head.split(b"Received: ", 1)[1].split(b";", 1)[0]
    assert f"[{ALLOWED}]".encode() in received, msg
    assert BALANCER.encode() not in received, msg
    ev = proxy_events(p, client=ALLOWED)
    assert ev and ev[-1]["peer"] == BALANCER and ev[-1]["version"] == version, p.log
    assert p.wait_event("connect", client=ALLOWED, server="mx")
    assert not [e for e in p.events("connect") if e.get("client") == BALANCER], p.log


def test_per_address_limit_counts_the_client_behind_haproxy(posthorn, haproxy):
    """connections-per-ip 1: a second connection from 127.0.0.2 through
    HAProxy is refused while 127.0.0.4's, through the same balancer, is not
    (the balancer's own address is not what is counted)."""
    p = start(posthorn, "mx", "smtp", limits={"connections-per-ip": "1"}, anonymous=True)
    h = haproxy([("smtp", p.proxied["plain"], "send-proxy-v2")])
    with SMTPConn(h.port("smtp"), source=ALLOWED) as first:
        first.greeting()
        second = first_line(h.port("smtp"), ALLOWED)
        assert second.startswith(b"421 4.7.0") and b"from your address" in second, second
        other = first_line(h.port("smtp"), OTHER)
        assert other.startswith(b"220 "), other
    ev = p.wait_event("refuse", reason="connection-limit")
    assert ev["client"] == ALLOWED and ev["limit"] == "per-address", ev


def test_relay_rule_judges_the_client_behind_haproxy(posthorn, haproxy):
    """relay { allow 127.0.0.2 }: through HAProxy, 127.0.0.2 may relay and
    127.0.0.4 may not, though both reach posthorn from the balancer."""
    p = start(posthorn, "mx", "smtp", anonymous=True,
              extra=["relay {", "    allow " + ALLOWED, "}"])
    h = haproxy([("smtp", p.proxied["plain"], "send-proxy-v2")])
    for source, code in ((ALLOWED, 250), (OTHER, 550)):
        with SMTPConn(h.port("smtp"), source=source) as c:
            c.start()
            c.expect("MAIL FROM:<alice@example.org>", 250)
            r = c.cmd("RCPT TO:<someone@elsewhere.example>")
            assert r.code == code, f"{source}: {r.raw!r}"
            c.expect("QUIT", 221)
    assert p.wait_event("relay", client=ALLOWED), p.log
    assert not [e for e in p.events("relay") if e.get("client") != ALLOWED], p.log


# -- POP3 and IMAP through HAProxy, plain and implicit TLS --------------------------------

class SourcePOP3(poplib.POP3_SSL):
    def __init__(self, port, source, ctx):
        self.source = source
        super().__init__(HOST, port, context=ctx, timeout=10)

    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self.source, 0))
        return self.context.wrap_socket(sock, server_hostname=self.host)


class SourceIMAP(imaplib.IMAP4_SSL):
    def __init__(self, port, source, ctx):
        self.source = source
        super().__init__(HOST, port, ssl_context=ctx, timeout=10)

    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self.source, 0))
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
def test_pop3_imap_rule_and_login_through_haproxy(posthorn, haproxy, cert, ctx, protocol):
    """POP3 and IMAP behind HAProxy: the plain listener (send-proxy) refuses
    127.0.0.3 by the connection rule exactly as a direct connection is
    refused; 127.0.0.2 logs in over implicit TLS through HAProxy
    (send-proxy-v2: the header is read before the TLS handshake) and the
    login's log line names 127.0.0.2."""
    p = start(posthorn, "in", protocol, cert=cert, connection=["deny " + DENIED])
    h = haproxy([("plain", p.proxied["plain"], "send-proxy"),
                 ("tls", p.proxied["tls"], "send-proxy-v2")])
    direct = first_line(p.port("in"), DENIED)
    proxied = first_line(h.port("plain"), DENIED)
    want = b"-ERR [SYS/PERM] Access denied" if protocol == "pop3" else b"* BYE Access denied"
    assert direct.startswith(want), direct
    assert proxied == direct, (proxied, direct)
    refused = [e for e in p.events("refuse") if e.get("client") == DENIED]
    assert len(refused) == 2, p.log

    allowed = first_line(h.port("plain"), ALLOWED)
    assert allowed.startswith(b"+OK" if protocol == "pop3" else b"* OK"), allowed

    if protocol == "pop3":
        c = SourcePOP3(h.port("tls"), ALLOWED, ctx)
        c.user(BOB)
        c.pass_(BOB_PW)
        assert c.stat() == (0, 0)
        c.quit()
    else:
        c = SourceIMAP(h.port("tls"), ALLOWED, ctx)
        c.login(BOB, BOB_PW)
        typ, _ = c.select("INBOX")
        assert typ == "OK"
        c.logout()
    ev = p.wait_event("login", server="in", result="ok")
    assert ev["client"] == ALLOWED, ev
    assert ev["tls"] != "no", ev
    ev = proxy_events(p, client=ALLOWED, version="2")
    assert ev and ev[-1]["peer"] == BALANCER, p.log


# -- raw headers straight to the proxy listener --------------------------------------------

def v2_header(body, ver_cmd=0x21, fam=0x11, length=None):
    n = len(body) if length is None else length
    return V2_SIG + bytes([ver_cmd, fam]) + struct.pack("!H", n) + body


INET_BODY = bytes([127, 0, 0, 2, 127, 0, 0, 1]) + struct.pack("!HH", 40000, 25)

MALFORMED = [
    ("not-a-header", b"EHLO client.example\r\n", "bad-signature"),
    ("v2-bad-signature", b"\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c" + INET_BODY, "bad-signature"),
    ("v1-too-long", b"PROXY UNKNOWN " + b"x" * 120 + b"\r\n", "v1-too-long"),
    ("v1-bad-address", b"PROXY TCP4 127.0.0.256 127.0.0.1 40000 25\r\n", "v1-bad-address"),
    ("v2-length-too-long", v2_header(INET_BODY, length=2000), "v2-too-long"),
    ("v2-length-short", v2_header(INET_BODY[:11]), "v2-short-address"),
    ("v2-length-lies-less", v2_header(INET_BODY + b"EHLO x\r\n", length=14), "v2-bad-tlv"),
    ("v2-length-lies-more", v2_header(INET_BODY, length=13), "timeout"),
    ("silence", b"", "timeout"),
    ("half-v1", b"PROXY TCP4 127.0.0.2", "timeout"),
]


@pytest.mark.parametrize("name,data,reason", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_header_closes_with_log_line(posthorn, name, data, reason):
    """A trusted peer whose header is not valid, or does not come whole
    within proxy-timeout (1 s here), gets the connection closed with
    nothing sent, and one `event=proxy-refused reason=...` line."""
    p = start(posthorn, "mx", "smtp", anonymous=True)
    mark = p.log_mark()
    began = time.monotonic()
    with SMTPConn(p.proxied["plain"], source=BALANCER, timeout=10) as c:
        if data:
            c.send(data)
        got = c.wait_closed(8)
    elapsed = time.monotonic() - began
    assert got == b"", f"{name}: the server sent {got!r}"
    ev = p.wait_event("proxy-refused", since=mark, reason=reason)
    assert ev["peer"] == BALANCER and ev["server"] == "mx", ev
    if reason == "timeout":
        assert 0.8 <= elapsed < 5, f"{name}: closed after {elapsed:.1f}s, proxy-timeout is 1s"
    else:
        assert elapsed < 1, f"{name}: closed after {elapsed:.1f}s, not at once"
    assert not p.events("connect", since=mark), p.log[mark:]


def test_untrusted_peer_is_refused_and_valid_header_then_works(posthorn):
    """A peer outside proxy-from is closed at once, whatever it sends; the
    same header from 127.0.0.1 is believed: the client is 127.0.0.2 and
    the session goes on with the bytes sent right after the header."""
    p = start(posthorn, "mx", "smtp", anonymous=True)
    header = b"PROXY TCP4 127.0.0.2 127.0.0.1 40000 25\r\n"
    with SMTPConn(p.proxied["plain"], source=UNTRUSTED) as c:
        c.send(header)
        assert c.wait_closed(5) == b""
    ev = p.wait_event("proxy-refused", reason="untrusted-peer")
    assert ev["peer"] == UNTRUSTED, ev
    with SMTPConn(p.proxied["plain"], source=BALANCER) as c:
        c.send(header)
        c.greeting()
        c.ehlo()
        c.expect("QUIT", 221)
    assert p.wait_event("connect", client=ALLOWED, server="mx")
    # LOCAL (a balancer's health check): the connection is the balancer's own
    with SMTPConn(p.proxied["plain"], source=BALANCER) as c:
        c.send(v2_header(b"", ver_cmd=0x20, fam=0x00))
        c.greeting()
        c.expect("QUIT", 221)
    ev = proxy_events(p, client=BALANCER)
    assert ev and ev[-1].get("local") == "yes", p.log


def test_shutdown_with_connections_waiting_for_their_header(posthorn):
    """Connections still waiting for their header when the daemon stops
    are closed; the daemon exits 0 with nothing leaked (the teardown checks
    the sanitizer's report)."""
    p = start(posthorn, "mx", "smtp", anonymous=True, limits={"proxy-timeout": "30s"})
    conns = [SMTPConn(p.proxied["plain"], source=BALANCER) for _ in range(3)]
    conns[0].send(b"PROXY TCP4 127.0.0.2")
    conns[1].send(V2_SIG[:5])
    time.sleep(0.3)
    assert p.stop() == 0, p.log
    for c in conns:
        assert c.wait_closed(5) == b""
        c.close()


def test_refused_headers_are_counted_and_listed(posthorn):
    """An administrator sees refused PROXY headers in the metrics
    (connections_total result="refused-proxy") and on the status page."""
    mport = free_port()
    p = start(posthorn, "mx", "smtp", anonymous=True, global_extra=f"metrics {HOST}:{mport}")
    with SMTPConn(p.proxied["plain"], source=UNTRUSTED) as c:
        c.send(b"PROXY TCP4 127.0.0.2 127.0.0.1 40000 25\r\n")
        assert c.wait_closed(5) == b""
    with SMTPConn(p.proxied["plain"], source=BALANCER) as c:
        c.send(b"GET / HTTP/1.0\r\n\r\n")
        assert c.wait_closed(5) == b""
    got = samples(http_get(mport)[2])
    assert got['posthorn_connections_total{server="mx",result="refused-proxy"}'] == 2, got
    page = http_get(mport, "/")[2]
    assert "PROXY header refused (untrusted-peer)" in page, page
