"""Mail collection over POP3 (RFC 1939, 2449, 2595, 5034):
the end-to-end scenario (submission over TLS, collection with poplib over
STLS, byte-identical apart from the trace headers, DELE + QUIT removes,
kill -9 before QUIT removes nothing), real clients (curl over POP3S and
STLS, fetchmail over TLS), the policy (refused addresses, USER/PASS and
plaintext SASL refused before TLS, the same throttle and lockout as SMTP),
SASL PLAIN, LOGIN and SCRAM-SHA-256, one session per mailbox, TOP, UIDL
stable across sessions and restarts, snapshots, DELE/RSET, line limits,
pipelining, STLS hygiene, autologout, SIGTERM, a 20 MB message with the
daemon's RSS bounded, and the traffic capture ("Network Monitor").

Every connection goes to 127.0.0.1 (clients that fail logins bind their
own 127.0.0.x source, so that one test's throttle delays slow no other);
the certificate is made for the IP address 127.0.0.1, so Python's ssl,
curl and fetchmail all check it by name.
"""

import hashlib
import os
import poplib
import re
import smtplib
import socket
import ssl
import subprocess
import time
import uuid

import pytest

from authutil import (SLOW, SLOW_ITERATIONS, SLOW_PW, ScramClient, b64, plain_response,
                      reply_waiting, unb64, users_line)
from conftest import DEFAULT_USERS, run_cli
from helpers import (CLIENT_HELO, HOST, ConnectionClosed, SMTPConn, free_port, send_message,
                     vm_rss_kb, wait_until)
from tlsutil import RecordingProxy, reveals

CURL = "/usr/bin/curl"
FETCHMAIL = "/usr/bin/fetchmail"

BOB, BOB_PW = "bob@example.test", DEFAULT_USERS["bob@example.test"]
CAROL, CAROL_PW = "carol@example.test", DEFAULT_USERS["carol@example.test"]
DAVE, DAVE_PW = "dave@example.test", DEFAULT_USERS["dave@example.test"]

TRACE_FIELDS = ("return-path", "delivered-to", "received")


# -- certificates, daemons, messages ---------------------------------------------------

@pytest.fixture(scope="module")
def cert(posthorn_bin, tmp_path_factory):
    """A certificate for the IP address 127.0.0.1, from `posthorn cert new`."""
    d = tmp_path_factory.mktemp("pop3-cert")
    res = run_cli(posthorn_bin, ["cert", "new", "--hostname", HOST, "--out", str(d)])
    assert res.returncode == 0, f"cert new: {res.returncode} {res.stderr}"
    return {"crt": str(d / f"{HOST}.crt"), "key": str(d / f"{HOST}.key")}


@pytest.fixture(scope="module")
def ctx(cert):
    """A client context that trusts only the test certificate, name checked."""
    c = ssl.create_default_context(cafile=cert["crt"])
    c.check_hostname = True
    return c


def pop3_spec(cert, tls_port=None, tls=(), auth=(), connection=(), limits=None):
    """conftest server spec of a POP3 server: the plain listener (STLS),
    an implicit-TLS listener on tls_port, a tls block (certificate plus
    the lines in tls) unless cert is None, and auth/connection blocks."""
    lines = ["protocol pop3"]
    if tls_port:
        lines.append(f"listen {HOST}:{tls_port} tls")
    if cert is not None:
        lines += ["tls {", f"    certificate {cert['crt']}", f"    key {cert['key']}"]
        lines += ["    " + t for t in tls] + ["}"]
    if auth:
        lines += ["auth {"] + ["    " + a for a in auth] + ["}"]
    if connection:
        lines += ["connection {"] + ["    " + c for c in connection] + ["}"]
    return {"anonymous": None, "limits": limits, "extra": "\n".join(lines)}


def start_pop3(posthorn, cert, submission=False, asan_options=None, **kw):
    """A daemon with an anonymous SMTP server `mx` (it delivers the test
    mail), optionally a submission server `sub` (TLS, logins required),
    and the POP3 server `pop` (STLS on p.port("pop"), implicit TLS on
    p.pop3s_port)."""
    tls_port = free_port()
    servers = {"mx": {"anonymous": True}}
    if submission:
        servers["sub"] = {"anonymous": None, "extra": "\n".join([
            "tls {", f"    certificate {cert['crt']}", f"    key {cert['key']}", "}",
            "auth {", "    anonymous no", "}"])}
    servers["pop"] = pop3_spec(cert, tls_port, **kw)
    p = posthorn(servers=servers, asan_options=asan_options)
    p.pop3s_port = tls_port
    return p


@pytest.fixture
def pop(posthorn, cert):
    """The common case: TLS configured, secure defaults (USER/PASS and
    every SASL mechanism, SCRAM-SHA-256 too, only inside TLS)."""
    return start_pop3(posthorn, cert)


_seq = [0]


def put_message(p, addr, text, when=None, uniq=None, sub="new", fields=True):
    """Write a message into addr's Maildir the way the delivery agent names it
    (LF line ends, ",S=<size>,W=<size with CRLF>"); returns the unique part
    of its name, which is its UID."""
    if isinstance(text, str):
        text = text.encode()
    text = text.replace(b"\r\n", b"\n")
    _seq[0] += 1
    when = when or int(time.time())
    uniq = uniq or f"{when}.M{_seq[0]:06d}P{os.getpid()}Q{_seq[0]}R{uuid.uuid4().hex[:8]}.testhost"
    name = uniq
    if fields:
        lines = text.count(b"\n")
        name += f",S={len(text)},W={len(text) + lines}"
    if sub == "cur":
        name += ":2,"
    d = p.maildir(addr)
    for s in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(d, s), exist_ok=True)
    tmp = os.path.join(d, "tmp", name)
    with open(tmp, "wb") as f:
        f.write(text)
    os.rename(tmp, os.path.join(d, sub, name))
    return uniq


def crlf(text):
    if isinstance(text, str):
        text = text.encode()
    return text.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def files(p, addr, sub):
    d = os.path.join(p.maildir(addr), sub)
    return sorted(n for n in os.listdir(d) if not n.startswith(".")) if os.path.isdir(d) else []


def events(p, name, **match):
    return [e for e in p.events(name) if all(e.get(k) == v for k, v in match.items())]


# -- a raw POP3 client ------------------------------------------------------------------

class POP3Conn(SMTPConn):
    """A raw POP3 connection: exact lines, bounded reads (SMTPConn's
    socket handling), TLS on demand."""

    def line(self, timeout=None):
        raw = self.readline(timeout)
        assert raw.endswith(b"\r\n"), f"response line not ended by CRLF: {raw!r}"
        return raw[:-2].decode("utf-8", "replace")

    def cmd(self, line, timeout=None):
        self.send(line + "\r\n")
        return self.line(timeout)

    def ok(self, line):
        r = self.cmd(line)
        assert r.startswith("+OK"), f"{line!r}: {r!r}"
        return r

    def multi(self, timeout=None, raw=False):
        """The lines of a multi-line response up to the ".", unstuffed
        (raw: as bytes, still stuffed)."""
        out = []
        while True:
            b = self.readline(timeout)
            assert b.endswith(b"\r\n"), f"line not ended by CRLF: {b!r}"
            b = b[:-2]
            if b == b".":
                return out
            if raw:
                out.append(b)
            else:
                out.append((b[1:] if b.startswith(b".") else b).decode("utf-8", "replace"))

    def greeting(self):
        g = self.line()
        assert g.startswith("+OK"), g
        return g

    def wrap(self, context, server_hostname=HOST):
        assert self.buf == b"", f"unread plaintext before the handshake: {self.buf!r}"
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)
        return self

    def stls(self, context):
        r = self.cmd("STLS")
        assert r.startswith("+OK"), f"STLS: {r!r}"
        return self.wrap(context)

    def capa(self):
        r = self.cmd("CAPA")
        assert r.startswith("+OK"), r
        caps = {}
        for line in self.multi():
            parts = line.split()
            caps[parts[0].upper()] = parts[1:]
        return caps

    def login(self, user, password):
        self.ok(f"USER {user}")
        return self.cmd(f"PASS {password}")


def connect(p, tls=None, ctx=None, source=None, timeout=10.0, greet=True):
    """tls: None (plain), "stls" or "implicit"."""
    port = p.pop3s_port if tls == "implicit" else p.port("pop")
    c = POP3Conn(port, source=source, timeout=timeout)
    p.conns.append(c)
    if tls == "implicit":
        c.wrap(ctx)
    if greet:
        c.greeting()
    if tls == "stls":
        c.stls(ctx)
    return c


def quit_(c):
    r = c.cmd("QUIT")
    c.wait_closed()
    return r


def poplib_stls(p, ctx):
    c = poplib.POP3(HOST, p.port("pop"), timeout=10)
    c.stls(ctx)
    return c


def retr_bytes(lines):
    """poplib's RETR lines (unstuffed, without CRLF) as the message text."""
    return b"".join(line + b"\r\n" for line in lines)


def strip_trace(data):
    """The message without the leading trace header fields (with their
    continuation lines); returns (trace field names, rest)."""
    names = []
    lines = data.split(b"\r\n")
    i = 0
    while i < len(lines):
        m = re.match(rb"^([A-Za-z-]+):", lines[i])
        if not m or m.group(1).decode().lower() not in TRACE_FIELDS:
            break
        names.append(m.group(1).decode().lower())
        i += 1
        while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
            i += 1
    return names, b"\r\n".join(lines[i:])


def assert_log_clean(p, secrets):
    log = p.log
    for s in secrets:
        assert s not in log, f"secret {s!r} in the log"
        assert b64(s) not in log


# -- the end-to-end scenario --------------------------------------------------------------

SCENARIO_MSG = (
    "From: Bob <bob@example.test>\r\n"
    "To: Carol <carol@example.test>\r\n"
    "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= from the end-to-end test\r\n"
    "Message-ID: <{token}@example.test>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "X-Folded: first part\r\n"
    "\tsecond part\r\n"
    "\r\n"
    "Hello Carol,\r\n"
    "\r\n"
    ".a line that starts with a dot\r\n"
    "..two dots\r\n"
    ".\r\n"
    "trailing spaces   \r\n"
    "Grüße, 8-bit text\r\n"
    "{long}\r\n"
    "token {token}\r\n")


def test_end_to_end_submission_then_pop3_stls(posthorn, cert, ctx):
    p = start_pop3(posthorn, cert, submission=True)
    token = uuid.uuid4().hex
    sent = SCENARIO_MSG.format(token=token, long="x" * 990).encode()

    # Bob authenticates over TLS to the submission server and writes to Carol
    s = smtplib.SMTP(HOST, p.port("sub"), local_hostname=CLIENT_HELO, timeout=10)
    p.conns.append(s)
    s.starttls(context=ctx)
    s.login(BOB, BOB_PW)
    assert s.sendmail(BOB, [CAROL], sent) == {}
    s.quit()
    p.wait_messages(CAROL, 1)

    # Carol collects it with poplib over STLS
    c = poplib_stls(p, ctx)
    assert c.getwelcome().startswith(b"+OK posthorn POP3 server ready")
    assert "USER" in c.capa()
    c.user(CAROL)
    assert c.pass_(CAROL_PW).startswith(b"+OK")
    count, size = c.stat()
    assert count == 1
    resp, lines, octets = c.retr(1)
    got = retr_bytes(lines)
    assert resp == f"+OK {size} octets".encode()
    assert octets == len(got) == size
    names, rest = strip_trace(got)
    assert rest == sent, "the message changed on its way (apart from the trace fields)"
    assert names[:2] == ["return-path", "delivered-to"] and "received" in names, names
    assert got.startswith(b"Return-Path: <bob@example.test>\r\nDelivered-To: carol@example.test\r\n")
    uid = c.uidl(1).split()[2]
    # the message is in cur/ now, not yet removed
    assert not files(p, CAROL, "new") and len(files(p, CAROL, "cur")) == 1
    assert c.dele(1).startswith(b"+OK")

    # a crash before QUIT removes nothing
    p.kill9()
    assert len(files(p, CAROL, "cur")) == 1
    p.start()
    c2 = poplib_stls(p, ctx)
    c2.user(CAROL)
    c2.pass_(CAROL_PW)
    assert c2.stat() == (1, size)
    assert c2.uidl(1).split()[2] == uid
    assert retr_bytes(c2.retr(1)[1]) == got

    # DELE + QUIT removes it
    assert c2.dele(1).startswith(b"+OK")
    assert c2.quit().startswith(b"+OK")
    assert p.messages(CAROL) == []
    ev = p.wait_event("logout", user=CAROL)
    assert ev["retrieved"] == "1" and ev["deleted"] == "1", ev["_line"]
    c3 = poplib_stls(p, ctx)
    c3.user(CAROL)
    c3.pass_(CAROL_PW)
    assert c3.stat() == (0, 0)
    c3.quit()
    logins = events(p, "login", user=CAROL)
    assert logins and all(e["mechanism"] == "USER" and e["tls"] == "yes" for e in logins)
    assert_log_clean(p, [BOB_PW, CAROL_PW])


# -- real clients -------------------------------------------------------------------------------

def test_curl_pop3s_lists_and_retrieves(pop, cert, tmp_path):
    m1 = "Subject: first\n\nbody one\n.dot line\n"
    m2 = "Subject: second\n\nbody two\n"
    put_message(pop, BOB, m1, when=1700000001)
    put_message(pop, BOB, m2, when=1700000002)
    base = ["-s", "-S", "--max-time", "20", "--cacert", cert["crt"], "-u", f"{BOB}:{BOB_PW}"]
    url = f"pop3s://{HOST}:{pop.pop3s_port}"

    res = subprocess.run([CURL] + base + [url + "/"], capture_output=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"1 {len(crlf(m1))}\r\n2 {len(crlf(m2))}\r\n".encode(), res.stdout

    res = subprocess.run([CURL] + base + [url + "/1"], capture_output=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout == crlf(m1)
    res = subprocess.run([CURL] + base + ["-X", "UIDL", url + "/"], capture_output=True,
                         timeout=30)
    assert res.returncode == 0, res.stderr
    assert [line.split()[0] for line in res.stdout.splitlines()] == [b"1", b"2"]

    # and over STLS on the plain port (curl --ssl-reqd sends STLS)
    res = subprocess.run([CURL] + base + ["--ssl-reqd", f"pop3://{HOST}:{pop.port('pop')}/2"],
                         capture_output=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout == crlf(m2)
    for e in events(pop, "login", user=BOB):
        assert e["tls"] == "yes", e["_line"]
    assert len(events(pop, "login", user=BOB)) == 4
    # curl leaves with QUIT: nothing was deleted
    assert len(pop.messages(BOB)) == 2


@pytest.mark.parametrize("mode", ["implicit", "stls"])
def test_fetchmail_collects_over_tls(pop, cert, tmp_path, mode):
    tokens = [uuid.uuid4().hex for _ in range(3)]
    for i, t in enumerate(tokens):
        put_message(pop, DAVE, f"Subject: fetch {i}\nFrom: x@example.org\n\nline\n.dot\ntoken {t}\n",
                    when=1700000000 + i)
    out = tmp_path / "mbox"
    rc = tmp_path / "fetchmailrc"
    port = pop.pop3s_port if mode == "implicit" else pop.port("pop")
    tls = "ssl" if mode == "implicit" else "sslproto tls1.2+"
    rc.write_text(
        "set no syslog\n"
        f"poll {HOST} port {port} protocol pop3 timeout 20\n"
        f'    user "{DAVE}" there with password "{DAVE_PW}" is root here\n'
        f'    {tls} sslcertck sslcertfile "{cert["crt"]}"\n'
        f'    mda "cat >> {out}"\n')
    os.chmod(rc, 0o600)
    env = dict(os.environ, HOME=str(tmp_path))
    # fetchmail's lock file is its own, not /var/run/fetchmail.pid (root's):
    # another test's fetchmail may run at the same time (pytest-xdist)
    res = subprocess.run([FETCHMAIL, "-f", str(rc), "--idfile", str(tmp_path / "ids"), "-v",
                          "--pidfile", str(tmp_path / "fetchmail.pid"), "--nodetach"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    data = out.read_bytes()
    for t in tokens:
        assert f"token {t}".encode() in data, data[:2000]
    assert b"\n.dot\n" in data or b"\r\n.dot\r\n" in data      # unstuffed again
    # fetchmail deletes what it has collected (DELE, then QUIT)
    assert pop.messages(DAVE) == []
    [ev] = events(pop, "logout", user=DAVE)
    assert ev["retrieved"] == "3" and ev["deleted"] == "3", ev["_line"]
    assert all(e["tls"] == "yes" for e in events(pop, "login", user=DAVE))
    assert DAVE_PW not in pop.log


# -- policy: connection rules, secure channel, plaintext logins -------------------------------

@pytest.mark.parametrize("tls", [None, "implicit"])
def test_refused_address_gets_err_and_close(posthorn, cert, ctx, tls):
    p = start_pop3(posthorn, cert, connection=["deny 127.0.0.0/24"])
    c = connect(p, tls=tls, ctx=ctx, greet=False)
    assert c.line() == "-ERR [SYS/PERM] Access denied"
    c.wait_closed()
    ev = p.wait_event("refuse", server="pop")
    assert ev["reason"] == "connection-rule", ev["_line"]
    # another address is served
    c2 = POP3Conn(p.port("pop"), source="127.0.1.9")
    p.conns.append(c2)
    assert c2.greeting().startswith("+OK")
    quit_(c2)


def test_connection_limit_answers_in_pop3(posthorn, cert, ctx):
    """Over limits.connections-per-ip a plain client is told why in POP3
    terms; on the implicit-TLS port the connection just closes: no
    plaintext is ever written where TLS is expected."""
    p = start_pop3(posthorn, cert, limits={"connections-per-ip": 2, "connections": 50})
    held = [connect(p, source="127.0.2.7"), connect(p, source="127.0.2.7")]
    c = POP3Conn(p.port("pop"), source="127.0.2.7")
    p.conns.append(c)
    r = c.line()
    assert r.startswith("-ERR [SYS/TEMP] ") and "too many connections from your address" in r, r
    assert c.wait_closed() == b""
    raw = socket.create_connection((HOST, p.pop3s_port), timeout=10,
                                   source_address=("127.0.2.7", 0))
    try:
        assert raw.recv(100) == b"", "plaintext on the implicit-TLS port"
    finally:
        raw.close()
    ev = p.wait_event("refuse", client="127.0.2.7")
    assert ev["reason"] == "connection-limit" and ev["limit"] == "per-address", ev["_line"]
    for h in held:
        quit_(h)


def test_tls_required_refuses_logins_before_stls(posthorn, cert, ctx):
    p = start_pop3(posthorn, cert, tls=["require yes"])
    put_message(p, BOB, "Subject: x\n\nbody\n")
    c = connect(p)
    caps = c.capa()
    assert "STLS" in caps and "USER" not in caps and "SASL" not in caps, caps
    assert c.cmd(f"USER {BOB}") == "-ERR [AUTH] Must issue a STLS command first"
    assert c.cmd(f"PASS {BOB_PW}") == "-ERR [AUTH] Must issue a STLS command first"
    assert c.cmd("AUTH PLAIN " + plain_response(BOB, BOB_PW)) == \
        "-ERR [AUTH] Must issue a STLS command first"
    assert c.cmd("AUTH SCRAM-SHA-256").startswith("-ERR [AUTH]")
    assert c.cmd("STAT") == "-ERR Log in first"
    c.stls(ctx)
    caps = c.capa()
    assert "USER" in caps and "STLS" not in caps, caps
    assert set(caps["SASL"]) == {"PLAIN", "LOGIN", "SCRAM-SHA-256"}, caps
    assert c.login(BOB, BOB_PW).startswith("+OK")
    assert c.cmd("STAT").startswith("+OK 1 ")
    quit_(c)
    assert not events(p, "auth", result="fail")


def test_plaintext_logins_only_inside_tls_by_default(pop, ctx):
    c = connect(pop)
    caps = c.capa()
    # RFC 2449 capabilities, and only what may be used now
    for cap in ("TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "STLS"):
        assert cap in caps, caps
    assert caps["IMPLEMENTATION"] == ["posthorn"]
    assert "USER" not in caps and "SASL" not in caps, caps
    r = c.cmd(f"USER {BOB}")
    assert r.startswith("-ERR [AUTH] Plaintext authentication disallowed"), r
    assert c.cmd("AUTH PLAIN " + plain_response(BOB, BOB_PW)).startswith("-ERR [AUTH]")
    assert c.cmd("AUTH LOGIN").startswith("-ERR [AUTH]")
    c.stls(ctx)
    caps = c.capa()
    assert "USER" in caps and "STLS" not in caps, caps
    assert c.login(BOB, BOB_PW).startswith("+OK")
    caps = c.capa()                   # TRANSACTION: no login capabilities
    assert "USER" not in caps and "SASL" not in caps and "TOP" in caps, caps
    quit_(c)


def test_plaintext_allowed_when_configured(posthorn, cert):
    p = start_pop3(posthorn, cert, auth=["plaintext-requires-tls no"])
    c = connect(p)
    caps = c.capa()
    assert "USER" in caps and "PLAIN" in caps["SASL"], caps
    assert c.login(BOB, BOB_PW).startswith("+OK")
    quit_(c)
    [ev] = events(p, "login", user=BOB)
    assert ev["tls"] == "no" and ev["mechanism"] == "USER", ev["_line"]


def test_user_pass_off_when_only_scram_is_offered(posthorn, cert, ctx):
    p = start_pop3(posthorn, cert, auth=["mechanisms scram-sha-256"])
    c = connect(p, tls="implicit", ctx=ctx)
    caps = c.capa()
    assert "USER" not in caps and caps["SASL"] == ["SCRAM-SHA-256"], caps
    assert c.cmd(f"USER {BOB}") == "-ERR [AUTH] USER/PASS is not enabled: use AUTH"
    assert c.cmd("AUTH PLAIN") == "-ERR Unrecognized authentication type"
    quit_(c)


# -- SASL -------------------------------------------------------------------------------------------

def test_sasl_plain_and_login(pop, ctx):
    c = connect(pop, tls="implicit", ctx=ctx)
    # PLAIN with an initial response
    assert c.cmd("AUTH PLAIN " + plain_response(BOB, BOB_PW)).startswith("+OK")
    quit_(c)
    # PLAIN without one: an empty challenge first
    c = connect(pop, tls="stls", ctx=ctx)
    assert c.cmd("AUTH PLAIN") == "+ "
    assert c.cmd(plain_response(BOB, BOB_PW)).startswith("+OK")
    quit_(c)
    # LOGIN
    c = connect(pop, tls="implicit", ctx=ctx)
    r = c.cmd("AUTH LOGIN")
    assert r.startswith("+ ") and unb64(r[2:]) == b"Username:", r
    r = c.cmd(b64(BOB))
    assert r.startswith("+ ") and unb64(r[2:]) == b"Password:", r
    assert c.cmd(b64(BOB_PW)).startswith("+OK")
    assert c.cmd("STAT").startswith("+OK 0 0")
    quit_(c)
    mechs = [e["mechanism"] for e in events(pop, "login", user=BOB)]
    assert mechs == ["PLAIN", "PLAIN", "LOGIN"], mechs
    # the RFC 1734 mechanism list
    c = connect(pop, tls="implicit", ctx=ctx)
    assert c.cmd("AUTH").startswith("+OK")
    assert set(c.multi()) == {"PLAIN", "LOGIN", "SCRAM-SHA-256"}
    assert c.cmd("AUTH PLAIN") == "+ "
    assert c.cmd("*") == "-ERR Authentication cancelled"
    quit_(c)
    assert_log_clean(pop, [BOB_PW])


@pytest.mark.parametrize("initial", [True, False])
@pytest.mark.parametrize("tls", ["stls", "implicit"])
def test_sasl_scram_sha_256(pop, ctx, initial, tls):
    c = connect(pop, tls=tls, ctx=ctx)
    sc = ScramClient(CAROL, CAROL_PW)
    if initial:
        r = c.cmd("AUTH SCRAM-SHA-256 " + sc.first())
    else:
        assert c.cmd("AUTH SCRAM-SHA-256") == "+ "
        r = c.cmd(sc.first())
    assert r.startswith("+ "), r
    r = c.cmd(sc.final(r[2:]))
    # RFC 5034: the server-final message comes as a last challenge ...
    assert r.startswith("+ "), r
    sc.check_server_final(r[2:])
    # ... answered by an empty line
    assert c.cmd("").startswith("+OK")
    assert c.cmd("STAT") == "+OK 0 0"
    quit_(c)
    [ev] = events(pop, "login", user=CAROL)
    assert ev["mechanism"] == "SCRAM-SHA-256" and ev["tls"] == "yes"


def test_sasl_scram_wrong_proof_fails(pop, ctx):
    c = connect(pop, tls="stls", ctx=ctx, source="127.0.3.1")
    sc = ScramClient(CAROL, CAROL_PW)
    r = c.cmd("AUTH SCRAM-SHA-256 " + sc.first())
    r = c.cmd(sc.final(r[2:], tamper=3))
    assert r == "-ERR [AUTH] Authentication failed", r
    assert events(pop, "auth", result="fail", mechanism="SCRAM-SHA-256")
    # still in AUTHORIZATION: a right login works
    assert scram_ok(c, CAROL, CAROL_PW)
    quit_(c)


def scram_ok(c, user, password):
    sc = ScramClient(user, password)
    r = c.cmd("AUTH SCRAM-SHA-256 " + sc.first())
    r = c.cmd(sc.final(r[2:]))
    if not r.startswith("+ "):
        return False
    sc.check_server_final(r[2:])
    return c.cmd("").startswith("+OK")


# -- wrong passwords, throttling, lockout ----------------------------------------------------------

def test_wrong_password(pop, ctx):
    c = connect(pop, tls="stls", ctx=ctx, source="127.0.4.1")
    assert c.login(BOB, "wrong-Guess-77") == "-ERR [AUTH] Authentication failed"
    # an unknown user gets exactly the same answer
    assert c.login("nobody@example.test", "wrong-Guess-78") == "-ERR [AUTH] Authentication failed"
    assert c.cmd("AUTH PLAIN " + plain_response(BOB, "wrong-Guess-79")) == \
        "-ERR [AUTH] Authentication failed"
    assert c.cmd("STAT") == "-ERR Log in first"
    assert c.cmd(f"PASS {BOB_PW}") == "-ERR USER first"
    assert c.login(BOB, BOB_PW).startswith("+OK")
    quit_(c)
    fails = events(pop, "auth", result="fail")
    assert [e["user"] for e in fails] == [BOB, "nobody@example.test", BOB], fails
    assert_log_clean(pop, [BOB_PW, "wrong-Guess-77", "wrong-Guess-78", "wrong-Guess-79"])


def test_lockout_like_smtp(posthorn, cert, ctx):
    p = start_pop3(posthorn, cert, auth=["lockout 3 15m 30m", "plaintext-requires-tls no"])
    c = connect(p, source="127.0.5.1")
    for i in range(3):
        assert c.login(BOB, f"wrong-{i}") == "-ERR [AUTH] Authentication failed"
    r = c.login(BOB, BOB_PW)
    assert r.startswith("-ERR [SYS/TEMP] Too many failed authentication attempts"), r
    c.wait_closed()
    [ev] = events(p, "lockout")
    assert ev["client"] == "127.0.5.1", ev["_line"]
    # the address stays locked out, whatever the mechanism
    c = connect(p, source="127.0.5.1")
    assert c.cmd("AUTH PLAIN " + plain_response(BOB, BOB_PW)).startswith("-ERR [SYS/TEMP]")
    c.wait_closed()
    # another address is not
    c = connect(p, source="127.0.5.2")
    assert c.login(BOB, BOB_PW).startswith("+OK")
    quit_(c)


# -- one session per mailbox ------------------------------------------------------------------------

def test_second_concurrent_session_in_use(pop, ctx):
    put_message(pop, BOB, "Subject: one\n\nbody\n")
    a = connect(pop, tls="implicit", ctx=ctx)
    assert a.login(BOB, BOB_PW).startswith("+OK")
    b = connect(pop, tls="stls", ctx=ctx)
    r = b.login(BOB, BOB_PW)
    assert r.startswith("-ERR [IN-USE] "), r
    # b is still in AUTHORIZATION; another user's mailbox is free
    assert b.login(CAROL, CAROL_PW).startswith("+OK")
    quit_(b)
    assert a.cmd("DELE 1").startswith("+OK")
    quit_(a)
    b = connect(pop, tls="implicit", ctx=ctx)
    assert b.login(BOB, BOB_PW) == "+OK Logged in: 0 messages (0 octets)"
    quit_(b)
    assert events(pop, "login", result="in-use")


def test_lock_released_when_the_client_disappears(pop, ctx):
    a = connect(pop, tls="implicit", ctx=ctx)
    assert a.login(BOB, BOB_PW).startswith("+OK")
    a.close()                    # no QUIT
    pop.wait_event("disconnect", server="pop")
    b = connect(pop, tls="implicit", ctx=ctx)
    assert b.login(BOB, BOB_PW).startswith("+OK")
    quit_(b)


# -- TOP, UIDL, LIST, snapshots ------------------------------------------------------------------

KNOWN = [
    "From: a@example.org\nSubject: known one\n\nfirst body line\n.dotted\nthird\nfourth\n",
    "From: b@example.org\nSubject: known two\nX-Long: folded\n continued\n\nonly line\n",
    "Subject: no body\n",
]


def test_top_uidl_list_against_known_messages(pop, ctx):
    uids = [put_message(pop, BOB, m, when=1700000000 + i) for i, m in enumerate(KNOWN)]
    sizes = [len(crlf(m)) for m in KNOWN]
    c = connect(pop, tls="implicit", ctx=ctx)
    r = c.login(BOB, BOB_PW)
    assert r == f"+OK Logged in: 3 messages ({sum(sizes)} octets)", r
    assert c.cmd("STAT") == f"+OK 3 {sum(sizes)}"
    assert c.cmd("LIST").startswith("+OK 3 messages")
    assert c.multi() == [f"{i + 1} {s}" for i, s in enumerate(sizes)]
    assert c.cmd("LIST 2") == f"+OK 2 {sizes[1]}"
    assert c.cmd("UIDL").startswith("+OK")
    assert c.multi() == [f"{i + 1} {u}" for i, u in enumerate(uids)]
    assert c.cmd("UIDL 3") == f"+OK 3 {uids[2]}"

    assert c.cmd("TOP 1 0") == "+OK Top of message follows"
    assert c.multi(raw=True) == [b"From: a@example.org", b"Subject: known one", b""]
    assert c.cmd("TOP 1 2").startswith("+OK")
    assert c.multi(raw=True) == [b"From: a@example.org", b"Subject: known one", b"",
                                 b"first body line", b"..dotted"]
    assert c.cmd("TOP 2 99").startswith("+OK")
    assert c.multi() == crlf(KNOWN[1]).decode().split("\r\n")[:-1]
    assert c.cmd("TOP 3 1").startswith("+OK")
    assert c.multi() == ["Subject: no body"]
    assert c.cmd("RETR 1") == f"+OK {sizes[0]} octets"
    body = c.multi(raw=True)
    assert body[4] == b"..dotted"                        # stuffed on the wire
    assert b"".join(line + b"\r\n" for line in body).replace(b"\r\n..", b"\r\n.") == crlf(KNOWN[0])
    # errors
    for bad, want in (("TOP 1", "-ERR Syntax: TOP msg lines"), ("TOP 1 -1", "-ERR Syntax: TOP msg lines"),
                      ("TOP 9 1", "-ERR No such message"), ("RETR 0", "-ERR No such message"),
                      ("RETR x", "-ERR Invalid message number"), ("LIST 4", "-ERR No such message"),
                      ("UIDL 1 2", "-ERR Syntax: UIDL [msg]"), ("RETR", "-ERR Syntax: RETR msg"),
                      ("STLS", "-ERR Command not valid in this state"),
                      ("USER x", "-ERR Command not valid in this state"),
                      ("XYZZY", "-ERR Unknown command")):
        assert c.cmd(bad) == want, bad
    quit_(c)
    # the snapshot moved them to cur/ with ":2,"
    assert files(pop, BOB, "new") == []
    assert [n.endswith(":2,") for n in files(pop, BOB, "cur")] == [True] * 3


def test_uidl_stable_across_sessions_and_restart(pop, ctx):
    put_message(pop, BOB, KNOWN[0], when=1700000001)
    put_message(pop, BOB, KNOWN[1], when=1700000002, sub="cur")
    put_message(pop, BOB, KNOWN[2], when=1700000003, fields=False)   # no W=: sizes counted

    def listing():
        c = connect(pop, tls="implicit", ctx=ctx)
        assert c.login(BOB, BOB_PW).startswith("+OK")
        assert c.cmd("UIDL").startswith("+OK")
        uidl = c.multi()
        assert c.cmd("LIST").startswith("+OK")
        sizes = c.multi()
        quit_(c)
        return uidl, sizes

    first = listing()
    second = listing()
    pop.restart()
    third = listing()
    assert first == second == third
    assert first[1] == [f"{i + 1} {len(crlf(m))}" for i, m in enumerate(KNOWN)]
    for line in first[0]:
        uid = line.split(" ", 1)[1]
        assert 1 <= len(uid) <= 70 and all(0x21 <= ord(ch) <= 0x7e for ch in uid), uid


def test_mail_arriving_during_a_session_waits_for_the_next(pop, ctx):
    put_message(pop, BOB, KNOWN[0])
    c = connect(pop, tls="implicit", ctx=ctx)
    assert c.login(BOB, BOB_PW).startswith("+OK Logged in: 1 messages")
    # delivered through SMTP meanwhile
    s = pop.connect("mx")
    s.start()
    send_message(s, "x@example.org", [BOB], "Subject: late\r\n\r\nlate body\r\n")
    s.cmd("QUIT")
    wait_until(lambda: files(pop, BOB, "new"), what="the late message in new/")
    assert c.cmd("STAT").startswith("+OK 1 ")
    assert c.cmd("RETR 2") == "-ERR No such message"
    quit_(c)
    c = connect(pop, tls="implicit", ctx=ctx)
    assert c.login(BOB, BOB_PW).startswith("+OK Logged in: 2 messages")
    quit_(c)


def test_dele_rset_and_deleted_messages(pop, ctx):
    for i, m in enumerate(KNOWN):
        put_message(pop, BOB, m, when=1700000000 + i)
    sizes = [len(crlf(m)) for m in KNOWN]
    c = connect(pop, tls="implicit", ctx=ctx)
    c.login(BOB, BOB_PW)
    assert c.cmd("DELE 2") == "+OK Message 2 deleted"
    assert c.cmd("DELE 2") == "-ERR Message 2 already deleted"
    assert c.cmd("RETR 2") == "-ERR Message 2 already deleted"
    assert c.cmd("LIST 2") == "-ERR Message 2 already deleted"
    assert c.cmd("STAT") == f"+OK 2 {sizes[0] + sizes[2]}"
    assert c.cmd("LIST").startswith("+OK 2 messages")
    assert c.multi() == [f"1 {sizes[0]}", f"3 {sizes[2]}"]
    assert c.cmd("UIDL").startswith("+OK")
    assert [line.split()[0] for line in c.multi()] == ["1", "3"]
    assert c.cmd("RSET") == f"+OK 3 messages ({sum(sizes)} octets)"
    assert c.cmd("STAT") == f"+OK 3 {sum(sizes)}"
    assert c.cmd("DELE 1").startswith("+OK")
    assert c.cmd("DELE 3").startswith("+OK")
    assert c.cmd("NOOP") == "+OK"
    # nothing is removed before QUIT
    assert len(files(pop, BOB, "cur")) == 3
    assert c.cmd("QUIT") == "+OK posthorn POP3 server signing off (2 messages deleted)"
    c.wait_closed()
    [left] = pop.messages(BOB)
    assert b"known two" in left


# -- the protocol's edges: lines, pipelining, STLS, timeouts, shutdown --------------------------------

def test_long_lines_get_err_and_the_session_goes_on(pop, ctx):
    c = connect(pop, tls="implicit", ctx=ctx)
    assert c.cmd("NOOP " + "x" * 600) == "-ERR Line too long"
    assert c.login(BOB, BOB_PW).startswith("+OK")
    assert c.cmd("LIST " + "1" * 600) == "-ERR Line too long"
    # 1 MB without a line end: one -ERR, nothing buffered without bound
    c.send(b"A" * (1024 * 1024) + b"\r\nSTAT\r\n")
    assert c.line() == "-ERR Line too long"
    assert c.line() == "+OK 0 0"
    assert c.cmd("LIST\0") == "-ERR Invalid characters in command"
    quit_(c)


def test_pipelining(pop, ctx):
    for i, m in enumerate(KNOWN):
        put_message(pop, BOB, m, when=1700000000 + i)
    c = connect(pop, tls="implicit", ctx=ctx)
    c.send("CAPA\r\n" f"USER {BOB}\r\n" f"PASS {BOB_PW}\r\n" "STAT\r\nLIST\r\nUIDL\r\n"
           "RETR 1\r\nTOP 2 0\r\nDELE 3\r\nRETR 3\r\nQUIT\r\n")
    assert c.line().startswith("+OK") and "PIPELINING" in c.multi()
    assert c.line().startswith("+OK")
    assert c.line().startswith("+OK Logged in: 3 messages")
    assert c.line().startswith("+OK 3 ")
    assert c.line().startswith("+OK") and len(c.multi()) == 3
    assert c.line().startswith("+OK") and len(c.multi()) == 3
    assert c.line().startswith("+OK") and "Subject: known one" in c.multi()
    assert c.line().startswith("+OK") and "Subject: known two" in c.multi()
    assert c.line() == "+OK Message 3 deleted"
    assert c.line() == "-ERR Message 3 already deleted"
    assert c.line().startswith("+OK posthorn POP3 server signing off (1 messages")
    c.wait_closed()
    assert len(pop.messages(BOB)) == 2


def test_stls_discards_pipelined_plaintext(pop, ctx):
    c = connect(pop)
    # an attacker's USER injected behind STLS must count for nothing
    c.send(f"STLS\r\nUSER {BOB}\r\n")
    assert c.line() == "+OK Begin TLS negotiation"
    c.wrap(ctx)
    assert c.cmd(f"PASS {BOB_PW}") == "-ERR USER first"
    assert c.cmd("STLS") == "-ERR TLS already active"
    assert c.login(BOB, BOB_PW).startswith("+OK")
    quit_(c)


def test_stls_without_certificate(posthorn):
    p = posthorn(servers={"pop": pop3_spec(None, auth=["plaintext-requires-tls no"])})
    c = connect(p)
    caps = c.capa()
    assert "STLS" not in caps and "USER" in caps
    assert c.cmd("STLS") == "-ERR STLS not available (no certificate)"
    assert c.login(BOB, BOB_PW).startswith("+OK")
    quit_(c)


def test_autologout_removes_nothing(posthorn, cert, ctx):
    p = start_pop3(posthorn, cert, limits={"timeout": "2s"})
    put_message(p, BOB, KNOWN[0])
    c = connect(p, tls="implicit", ctx=ctx)
    assert c.login(BOB, BOB_PW).startswith("+OK")
    assert c.cmd("DELE 1").startswith("+OK")
    # RFC 1939 §3: no response, no UPDATE
    t0 = time.monotonic()
    assert c.wait_closed(timeout=10) == b""
    assert time.monotonic() - t0 >= 1.5
    p.wait_event("timeout", server="pop")
    assert len(p.messages(BOB)) == 1
    assert not events(p, "logout")


def test_sigterm_with_sessions_open(posthorn, cert, ctx):
    p = start_pop3(posthorn, cert)
    put_message(p, BOB, KNOWN[0])
    a = connect(p, tls="implicit", ctx=ctx)
    assert a.login(BOB, BOB_PW).startswith("+OK")
    assert a.cmd("DELE 1").startswith("+OK")
    b = connect(p)                          # plain, in AUTHORIZATION
    rc = p.stop()
    assert rc == 0, p.log
    for c in (a, b):
        try:
            got = c.wait_closed(timeout=10)
        except (ConnectionClosed, OSError):
            got = b""
        assert got in (b"", b"-ERR [SYS/TEMP] Server shutting down\r\n"), got
    assert len(p.messages(BOB)) == 1, "a DELE without QUIT removed a message"


# -- a 20 MB message, bounded memory ----------------------------------------------------------------

BIG_LINE = b"x" * 75 + b"." + b"\n"


def big_message():
    n = 20 * 1024 * 1024 // len(BIG_LINE)
    # a line starting with '.' every so often, so that stuffing happens too
    return b"Subject: big\nFrom: a@example.org\n\n" + (BIG_LINE * 99 + b".dot\n") * (n // 100)


def read_retr(c, deadline):
    """Read a whole RETR response from a raw connection; returns the
    unstuffed message (CRLF line ends)."""
    buf = bytearray(c.buf)
    c.buf = b""
    while not buf.endswith(b"\r\n.\r\n"):
        c.sock.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = c.sock.recv(1 << 20)
        assert chunk, "connection closed inside a response"
        buf += chunk
    data = bytes(buf[:-3])
    return data.replace(b"\r\n..", b"\r\n.")


@pytest.mark.parametrize("tls", [None, "stls", "implicit"])
def test_20mb_message_with_bounded_rss(posthorn, cert, ctx, tls):
    # a small ASan quarantine, so that RSS shows what the daemon keeps
    p = start_pop3(posthorn, cert, asan_options={"quarantine_size_mb": "1"},
                   auth=["plaintext-requires-tls no"])
    msg = big_message()
    put_message(p, BOB, msg)
    want = crlf(msg)
    # warm up: one whole session, so that lazily allocated things exist
    c = connect(p, tls=tls, ctx=ctx, timeout=60)
    assert c.login(BOB, BOB_PW).startswith("+OK")
    assert c.cmd("TOP 1 10").startswith("+OK")
    c.multi()
    quit_(c)
    time.sleep(0.3)

    c = connect(p, tls=tls, ctx=ctx, timeout=60)
    assert c.login(BOB, BOB_PW).startswith("+OK")
    before = vm_rss_kb(p.pid)
    c.send("RETR 1\r\n")
    first = c.line()
    assert first == f"+OK {len(want)} octets", first
    # a slow reader: the daemon must wait for it, not buffer the message
    time.sleep(1.5)
    peak = vm_rss_kb(p.pid)
    got = read_retr(c, time.monotonic() + 120)
    after = vm_rss_kb(p.pid)
    assert len(got) == len(want)
    assert hashlib.sha256(got).digest() == hashlib.sha256(want).digest()
    assert c.cmd("NOOP") == "+OK"
    quit_(c)
    growth = max(peak, after) - before
    print(f"VmRSS before {before} KiB, peak {peak} KiB, after {after} KiB ({tls})")
    assert growth < 4 * 1024, f"RSS grew by {growth} KiB while sending a 20 MB message ({tls})"


# -- the Network Monitor ----------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["plain", "stls", "pop3s"])
def test_network_monitor_sees_nothing_inside_tls(posthorn, cert, ctx, mode):
    p = start_pop3(posthorn, cert, auth=["plaintext-requires-tls no"])
    token = "NetMon-" + uuid.uuid4().hex
    put_message(p, CAROL, f"Subject: capture {mode}\n\nThe secret body token is {token}.\n"
                + "filler line so the message has some size\n" * 20)
    target = p.pop3s_port if mode == "pop3s" else p.port("pop")
    with RecordingProxy(target) as proxy:
        c = POP3Conn(proxy.port)
        p.conns.append(c)
        if mode == "pop3s":
            c.wrap(ctx)
        c.greeting()
        if mode == "stls":
            c.stls(ctx)
        assert c.login(CAROL, CAROL_PW).startswith("+OK")
        assert c.cmd("RETR 1").startswith("+OK")
        assert any(token in line for line in c.multi())
        quit_(c)
        capture = proxy.capture
        assert proxy.connections == 1 and not proxy.errors, proxy.errors
    if mode == "plain":
        # what a network monitor shows for an unencrypted session
        assert reveals(capture, CAROL_PW)
        assert token.encode() in capture
    else:
        assert len(capture) > 1000, len(capture)     # the session went through here
        assert not reveals(capture, CAROL_PW), "password visible on the wire"
        assert not reveals(capture, token), "message body visible on the wire"
        assert not reveals(capture, CAROL), "user name visible on the wire"
        assert b"Subject: capture" not in capture


# -- the daemon around the sessions -----------------------------------------------------------

def test_reload_keeps_pop3_sessions(pop, ctx):
    put_message(pop, BOB, KNOWN[0])
    c = connect(pop, tls="implicit", ctx=ctx)
    assert c.login(BOB, BOB_PW).startswith("+OK")
    pop.reload()
    assert c.cmd("STAT").startswith("+OK 1 ")
    assert c.cmd("RETR 1").startswith("+OK")
    c.multi()
    quit_(c)
    c = connect(pop, tls="stls", ctx=ctx)      # new sessions after the reload too
    assert c.login(BOB, BOB_PW).startswith("+OK")
    quit_(c)



# -- a login's PBKDF2 runs beside the event loop ---------------------------------

@pytest.mark.exclusive
def test_slow_pass_holds_only_its_own_session(posthorn, cert, ctx):
    p = start_pop3(posthorn, cert)
    with open(p.users_file, "a") as f:
        f.write(users_line(SLOW, SLOW_PW, SLOW_ITERATIONS))
    p.reload()                                  # the users, read again
    a = connect(p, tls="implicit", ctx=ctx)
    a.ok(f"USER {SLOW}")
    a.send("PASS zed-wrong\r\nNOOP\r\n")      # NOOP waits for the PASS's answer
    b = connect(p, tls="implicit", ctx=ctx)
    assert b.login(BOB, BOB_PW).startswith("+OK")
    assert b.cmd("STAT").startswith("+OK")
    assert not reply_waiting(a), "another session waited for the password check"
    assert a.line(timeout=60).startswith("-ERR [AUTH]")
    assert a.line(timeout=30).startswith("-ERR")   # NOOP before login
    assert a.login(SLOW, SLOW_PW).startswith("+OK")
    assert a.cmd("STAT").startswith("+OK")
