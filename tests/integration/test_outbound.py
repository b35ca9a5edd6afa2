"""Outbound delivery (docs/protocols.md, outbound delivery): mail for other domains leaves
through the test dnsmasq's MX records to a small SMTP sink written here,
on 127.0.0.2 (outbound.port is the sink's port).  Retries with a short
schedule, bounces (RFC 3464) into the sender's Maildir, STARTTLS, two MX
hosts, null MX, the smarthost with AUTH, `posthorn queue`, kill -9 in the
middle of a delivery, and the null sender that is never bounced.

Only 127.0.0.x addresses; every wait is bounded; only processes started
here are signalled, by PID (the fixtures do that)."""

import base64
import os
import re
import socket
import ssl
import threading
import time

import pytest

from authutil import scram_login
from conftest import DEFAULT_USERS, run_cli
from helpers import HOST, SMTPConn, free_port, queue_id, send_message, split_message, wait_until

SINK_HOST = "127.0.0.2"
DEAD_HOST = "127.0.0.3"          # nothing listens there: connections are refused
SINK_NAME = "sink.external.test"
BOB = "bob@example.test"
REMOTE = "someone@external.test"
RELAY_BY_IP = "relay {\n    allow 127.0.0.1\n}\n"


# -- the sink --------------------------------------------------------------------

class _Lines:
    """Line reader over a socket that can turn into a TLS socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def readline(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            if len(self.buf) > 100000:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except (OSError, ssl.SSLError):
                return None
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line + b"\n"

    def send(self, text):
        try:
            self.sock.sendall(text.encode() + b"\r\n")
        except (OSError, ssl.SSLError):
            pass


class Sink:
    """A tiny SMTP server: one thread per connection, replies chosen by the
    test, everything it hears recorded.

    rcpt(address) and dot(n) return the reply to RCPT and to the final dot
    (n counts the messages that reached the dot, from 0); mail(sender) the
    reply to MAIL.  tls is an ssl.SSLContext to offer STARTTLS with; auth
    offers AUTH PLAIN (after TLS when tls is given); stall makes DATA hang
    until release() or the client goes away."""

    def __init__(self, host, port, *, tls=None, pipelining=True, auth=False, ehlo=None,
                 mail=None, rcpt=None, dot=None, stall=False, name=SINK_NAME,
                 broken_tls=False, requiretls=False):
        self.requiretls = requiretls    # offer REQUIRETLS (RFC 8689) once TLS is up
        self.host, self.port = host, port
        self.broken_tls = broken_tls    # offer STARTTLS, then answer the handshake with junk
        self.tls, self.pipelining, self.auth, self.ehlo_reply = tls, pipelining, auth, ehlo
        self.mail_reply = mail or (lambda sender: "250 2.1.0 Ok")
        self.rcpt_reply = rcpt or (lambda addr: "250 2.1.5 Ok")
        self.dot_reply = dot or (lambda n: f"250 2.0.0 Ok: queued as S{n}")
        self.stall = stall
        self.name = name
        self.lock = threading.Lock()
        self.messages = []          # every message that reached the dot, with its reply
        self.sessions = []          # per connection: what happened
        self.dots = 0
        self.stalled = threading.Event()
        self.released = threading.Event()
        self.stopping = False
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(16)
        self.listener.settimeout(0.2)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    # -- what the tests look at
    def delivered(self):
        """Messages accepted with a 2xx at the dot."""
        with self.lock:
            return [m for m in self.messages if m["reply"].startswith("2")]

    def wait_delivered(self, n, timeout=20.0):
        wait_until(lambda: len(self.delivered()) >= n, timeout, what=f"{n} message(s) at the sink")
        return self.delivered()

    def release(self):
        self.released.set()

    def stop(self):
        self.stopping = True
        self.released.set()
        self.thread.join(5)
        self.listener.close()

    # -- serving
    def _accept(self):
        while not self.stopping:
            try:
                conn, peer = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        s = {"tls": False, "tls_version": None, "helo": None, "auth": None, "commands": [],
             "reads": []}
        with self.lock:
            self.sessions.append(s)
        io = _Lines(conn)
        try:
            self._session(io, s)
        finally:
            try:
                io.sock.close()
            except OSError:
                pass

    def _ehlo_lines(self, s):
        lines = [self.name]
        if self.pipelining:
            lines.append("PIPELINING")
        lines += ["SIZE 10485760", "8BITMIME", "ENHANCEDSTATUSCODES"]
        if (self.tls or self.broken_tls) and not s["tls"]:
            lines.append("STARTTLS")
        if self.auth and (s["tls"] or not self.tls):
            lines.append("AUTH PLAIN LOGIN")
        if self.requiretls and s["tls"]:
            lines.append("REQUIRETLS")
        return lines

    def _session(self, io, s):
        io.send(f"220 {self.name} ESMTP sink")
        mail, rcpts = None, []
        while True:
            raw = io.readline()
            if raw is None:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            s["commands"].append(line)
            verb = line.split(" ", 1)[0].upper()
            if verb == "EHLO":
                s["helo"] = line[5:]
                if self.ehlo_reply:
                    io.send(self.ehlo_reply)
                    continue
                lines = self._ehlo_lines(s)
                for text in lines[:-1]:
                    io.send("250-" + text)
                io.send("250 " + lines[-1])
            elif verb == "HELO":
                s["helo"] = line[5:]
                io.send(f"250 {self.name}")
            elif verb == "STARTTLS" and self.broken_tls:
                io.send("220 2.0.0 Ready to start TLS")
                io.send("this is no TLS server hello")
                return
            elif verb == "STARTTLS" and self.tls and not s["tls"]:
                io.send("220 2.0.0 Ready to start TLS")
                io.buf = b""
                try:
                    io.sock = self.tls.wrap_socket(io.sock, server_side=True)
                except (OSError, ssl.SSLError):
                    return
                s["tls"], s["tls_version"] = True, io.sock.version()
                mail, rcpts = None, []
            elif verb == "AUTH" and self.auth:
                parts = line.split(" ")
                if len(parts) == 3 and parts[1].upper() == "PLAIN":
                    s["auth"] = base64.b64decode(parts[2]).split(b"\0")
                    io.send("235 2.7.0 Authentication successful")
                else:
                    io.send("504 5.5.4 only PLAIN with an initial response here")
            elif verb == "MAIL":
                m = re.match(r"MAIL FROM:<([^>]*)>(.*)$", line, re.I)
                reply = self.mail_reply(m.group(1)) if m else "501 5.5.4 syntax"
                if m and reply.startswith("2"):
                    mail, rcpts = (m.group(1), m.group(2).strip()), []
                io.send(reply)
            elif verb == "RCPT":
                m = re.match(r"RCPT TO:<([^>]*)>", line, re.I)
                if not mail or not m:
                    io.send("503 5.5.1 MAIL first")
                    continue
                reply = self.rcpt_reply(m.group(1))
                if reply.startswith("2"):
                    rcpts.append(m.group(1))
                io.send(reply)
            elif verb == "DATA":
                if not rcpts:
                    io.send("554 5.5.1 no valid recipients")
                    continue
                if self.stall:
                    self.stalled.set()
                    self._stall(io)
                    return
                io.send("354 End data with <CR><LF>.<CR><LF>")
                data = self._read_data(io)
                if data is None:
                    return
                with self.lock:
                    n = self.dots
                    self.dots += 1
                reply = self.dot_reply(n)
                with self.lock:
                    self.messages.append({"sender": mail[0], "params": mail[1], "rcpts": rcpts,
                                          "data": data, "tls": s["tls"],
                                          "tls_version": s["tls_version"], "auth": s["auth"],
                                          "helo": s["helo"], "reply": reply})
                io.send(reply)
                mail, rcpts = None, []
            elif verb == "RSET":
                mail, rcpts = None, []
                io.send("250 2.0.0 Ok")
            elif verb == "NOOP":
                io.send("250 2.0.0 Ok")
            elif verb == "QUIT":
                io.send("221 2.0.0 Bye")
                return
            else:
                io.send("502 5.5.2 Error: command not recognized")

    def _stall(self, io):
        """No answer to DATA until released, or until the client is gone."""
        deadline = time.monotonic() + 60
        while not self.released.is_set() and time.monotonic() < deadline:
            io.sock.settimeout(0.2)
            try:
                if io.sock.recv(4096) == b"":
                    return
            except socket.timeout:
                continue
            except OSError:
                return

    @staticmethod
    def _read_data(io):
        out = []
        while True:
            raw = io.readline()
            if raw is None:
                return None
            if raw == b".\r\n":
                return b"".join(out)
            if raw.startswith(b"."):
                raw = raw[1:]  # RFC 5321 §4.5.2
            out.append(raw)


# -- fixtures and helpers ------------------------------------------------------------------

@pytest.fixture
def sinks():
    started = []

    def make(host=SINK_HOST, port=None, **kw):
        s = Sink(host, port or free_port(SINK_HOST), **kw)
        started.append(s)
        return s
    yield make
    for s in started:
        s.stop()


@pytest.fixture
def sink_tls(posthorn_bin, tmp_path):
    """A server context with a self-signed certificate for the sink."""
    out = tmp_path / "sinkcert"
    out.mkdir()
    res = run_cli(posthorn_bin, ["cert", "new", "--hostname", SINK_NAME, "--out", str(out)])
    assert res.returncode == 0, res.stderr
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(out / f"{SINK_NAME}.crt"), str(out / f"{SINK_NAME}.key"))
    return ctx


def outbound_block(port, retry="1s", lifetime="5s", extra=()):
    lines = ["outbound {", f"    port {port}", f"    retry {retry}", f"    lifetime {lifetime}"]
    lines += [f"    {line}" for line in extra]
    return "\n".join(lines + ["}"])


def external_dns(dnsmasq, mx=None, hosts=None, extra=()):
    mx = mx if mx is not None else [("external.test", "mx1.external.test", 10)]
    hosts = hosts if hosts is not None else [("mx1.external.test", SINK_HOST)]
    return dnsmasq(mx=mx, hosts=hosts, extra=extra)


def relay_daemon(posthorn, dns, port, anonymous=True, relay=RELAY_BY_IP, **kw):
    extra = kw.pop("outbound", {})
    return posthorn(dns=dns.address, global_extra=outbound_block(port, **extra),
                    servers={"mx": {"anonymous": anonymous, "extra": relay}}, **kw)


def message(subject, body="hello from posthorn\r\n", sender=BOB, to=REMOTE, extra_headers=""):
    return (f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '-')}@example.test>\r\n{extra_headers}\r\n{body}")


def submit(p, rcpts, text, sender=BOB):
    with SMTPConn(p.port()) as c:
        c.start()
        r = send_message(c, sender, rcpts, text)
        c.cmd("QUIT")
    return queue_id(r)


def queued(p):
    q = os.path.join(p.spool, "queue")
    return sorted(f for f in os.listdir(q) if not f.endswith(".done") and not f.startswith("."))


def wait_spool_empty(p, timeout=20.0):
    try:
        wait_until(lambda: not queued(p), timeout, what="an empty spool")
    except AssertionError:
        raise AssertionError(f"still queued: {queued(p)}; log:\n{p.log}")


def outbound_events(p, **match):
    return [e for e in p.events("outbound") if all(e.get(k) == v for k, v in match.items())]


def bounce_parts(data):
    """A bounce's header fields and its MIME parts (as bytes)."""
    fields, body = split_message(data)
    ctype = dict(fields)["Content-Type"].decode()
    m = re.search(r'boundary="([^"]+)"', ctype)
    assert m, ctype
    parts = body.split(b"--" + m.group(1).encode())
    return fields, ctype, [p for p in parts[1:] if not p.startswith(b"--")]


# -- delivery ---------------------------------------------------------------------------------

def test_relayed_mail_reaches_the_mx_with_headers_intact(posthorn, dnsmasq, sinks):
    sink = sinks()
    d = external_dns(dnsmasq)
    p = relay_daemon(posthorn, d, sink.port)
    body = "first line\r\n.a line that starts with a dot\r\n..two dots\r\n.\r\nlast\r\n"
    text = message("outbound one", body=body)
    qid = submit(p, [REMOTE], text.replace("\r\n.", "\r\n.."))
    got = sink.wait_delivered(1)[0]
    assert got["sender"] == BOB and got["rcpts"] == [REMOTE]
    assert got["helo"] == "mx.example.test"
    # the message as accepted, behind posthorn's Received: header
    assert got["data"].startswith(b"Received: from ")
    assert f"id {qid}".encode() in got["data"].split(b"\r\n\r\n", 1)[0]
    assert got["data"].endswith(text.encode()), got["data"]
    assert "SIZE=" in got["params"] and "BODY=8BITMIME" in got["params"]
    wait_spool_empty(p)
    ev = p.wait_event("outbound", result="sent")
    assert ev["id"] == qid and ev["to"] == f"<{REMOTE}>" and ev["host"] == "mx1.external.test"
    assert ev["addr"] == SINK_HOST and ev["tls"] == "none" and ev["reply"].startswith('"250')
    assert int(ev["delay"]) >= 0


def test_server_own_dns_finds_the_mx_of_its_mail(posthorn, dnsmasq, sinks):
    """A server block's own `dns` serves the mail that server accepted
    (posthorn.conf(5) `dns`: "used for its connection checks and for delivering the mail
    it accepted"); the global resolver knows nothing of external.test."""
    sink = sinks()
    glob = dnsmasq()
    own = external_dns(dnsmasq)
    p = posthorn(dns=glob.address, global_extra=outbound_block(sink.port),
                 servers={"mx": {"anonymous": True,
                                 "extra": RELAY_BY_IP + f"dns {own.address}\n"}})
    submit(p, [REMOTE], message("through its own dns"))
    got = sink.wait_delivered(1)[0]
    assert b"Subject: through its own dns" in got["data"]
    wait_spool_empty(p)
    assert own.queries("MX", "external.test"), own.log()
    assert not glob.queries("MX", "external.test"), glob.log()


def test_large_message_is_streamed_exactly(posthorn, dnsmasq, sinks):
    sink = sinks()
    p = relay_daemon(posthorn, external_dns(dnsmasq), sink.port)
    lines = [(".%05d " % i) + "x" * 70 for i in range(12000)]  # ~950 KB, every line dotted
    body = "\r\n".join(lines) + "\r\n"
    text = message("big", body=body)
    submit(p, [REMOTE], text.replace("\r\n.", "\r\n.."))
    got = sink.wait_delivered(1, timeout=60)[0]
    assert got["data"].endswith(text.encode())
    wait_spool_empty(p)


def test_authenticated_user_relays_to_the_mx(posthorn, dnsmasq, sinks):
    sink = sinks()
    # the login is SCRAM-SHA-256 in the clear (no certificate here)
    p = relay_daemon(posthorn, external_dns(dnsmasq), sink.port, anonymous=None,
                     relay="auth {\n    anonymous no\n    plaintext-requires-tls no\n}")
    with SMTPConn(p.port()) as c:
        c.start()
        assert scram_login(c, BOB, DEFAULT_USERS[BOB]).code == 235
        send_message(c, BOB, [REMOTE], message("from a mail client"))
        c.cmd("QUIT")
    got = sink.wait_delivered(1)[0]
    assert b"Subject: from a mail client" in got["data"]
    assert b"(authenticated as bob@example.test)" in got["data"]
    wait_spool_empty(p)


def test_alias_to_a_remote_address_is_forwarded(posthorn, dnsmasq, sinks):
    sink = sinks()
    p = relay_daemon(posthorn, external_dns(dnsmasq), sink.port, relay="",
                     aliases=f"fwd@example.test: {REMOTE}, carol@example.test\n")
    submit(p, ["fwd@example.test"], message("forwarded", to="fwd@example.test"),
           sender="someone@example.net")
    got = sink.wait_delivered(1)[0]
    assert got["rcpts"] == [REMOTE] and got["sender"] == "someone@example.net"
    p.wait_messages("carol@example.test", 1)
    wait_spool_empty(p)


def test_one_transaction_per_domain_with_pipelining(posthorn, dnsmasq, sinks):
    sink = sinks()
    d = external_dns(dnsmasq, mx=[("external.test", "mx1.external.test", 10),
                                  ("Other.test", "mx1.external.test", 10)])
    p = relay_daemon(posthorn, d, sink.port)
    rcpts = ["a@external.test", "b@EXTERNAL.test", "c@other.test"]
    submit(p, rcpts, message("three"))
    got = sink.wait_delivered(2)
    by_rcpts = sorted(tuple(m["rcpts"]) for m in got)
    # (the domain was normalised to lower case when the message was accepted)
    assert by_rcpts == [("a@external.test", "b@external.test"), ("c@other.test",)]
    wait_spool_empty(p)
    # MAIL, both RCPTs and DATA came as one group (RFC 2920)
    s = next(s for s in sink.sessions if any("a@external.test" in c for c in s["commands"]))
    i = next(k for k, c in enumerate(s["commands"]) if c.startswith("MAIL"))
    assert [c.split(":")[0] for c in s["commands"][i:i + 4]] == ["MAIL FROM", "RCPT TO", "RCPT TO", "DATA"]


def test_without_pipelining_and_with_helo_only(posthorn, dnsmasq, sinks):
    sink = sinks(pipelining=False, ehlo="502 5.5.2 EHLO not here")
    p = relay_daemon(posthorn, external_dns(dnsmasq), sink.port)
    submit(p, ["a@external.test", "b@external.test"], message("helo"))
    got = sink.wait_delivered(1)[0]
    assert got["rcpts"] == ["a@external.test", "b@external.test"]
    assert got["params"] == ""  # HELO: no extensions, no parameters
    wait_spool_empty(p)


# -- retries and bounces ------------------------------------------------------------------------

def test_451_then_250_is_delivered_on_retry(posthorn, dnsmasq, sinks):
    sink = sinks(dot=lambda n: "451 4.7.1 try again later" if n == 0 else "250 2.0.0 Ok")
    p = relay_daemon(posthorn, external_dns(dnsmasq), sink.port)
    qid = submit(p, [REMOTE], message("retry me"))
    sink.wait_delivered(1)
    wait_spool_empty(p)
    assert [m["reply"][:3] for m in sink.messages] == ["451", "250"]
    deferred = outbound_events(p, id=qid, result="deferred")
    assert deferred and "451 4.7.1 try again later" in deferred[0]["_line"]
    assert outbound_events(p, id=qid, result="sent")
    assert p.messages(BOB) == []  # nothing bounced


def test_550_bounces_to_the_sender(posthorn, dnsmasq, sinks):
    sink = sinks(rcpt=lambda a: "550 5.1.1 <%s>: no such user" % a if a.startswith("nobody")
                 else "250 2.1.5 Ok")
    p = relay_daemon(posthorn, external_dns(dnsmasq), sink.port)
    qid = submit(p, ["nobody@external.test", REMOTE], message("partly wrong"))
    assert sink.wait_delivered(1)[0]["rcpts"] == [REMOTE]
    bounce = p.wait_messages(BOB, 1)[0]
    wait_spool_empty(p)
    fields, ctype, parts = bounce_parts(bounce)
    f = dict(fields)
    assert f["Return-Path"] == b"<>"
    assert f["From"] == b"Mail Delivery System <MAILER-DAEMON@mx.example.test>"
    assert f["To"] == b"<bob@example.test>" and f["Auto-Submitted"] == b"auto-replied"
    assert ctype.startswith("multipart/report; report-type=delivery-status;")
    assert len(parts) == 3
    human, report, headers = parts
    assert b"Content-Type: text/plain" in human
    assert b"<nobody@external.test>: host mx1.external.test said: 550 5.1.1" in human
    assert REMOTE.encode() not in human  # delivered: not named
    assert b"Content-Type: message/delivery-status" in report
    for want in (b"Reporting-MTA: dns; mx.example.test", b"Arrival-Date: ",
                 b"Final-Recipient: rfc822; nobody@external.test", b"Action: failed",
                 b"Status: 5.1.1", b"Remote-MTA: dns; mx1.external.test",
                 b"Diagnostic-Code: smtp; 550 5.1.1 <nobody@external.test>: no such user"):
        assert want in report, (want, report)
    assert b"Content-Type: text/rfc822-headers" in headers
    assert b"Subject: partly wrong" in headers and b"hello from posthorn" not in headers
    assert p.events("bounce")[-1]["id"] == qid
    assert outbound_events(p, id=qid, result="bounced")


def test_starttls_is_used_when_offered(posthorn, dnsmasq, sinks, sink_tls):
    sink = sinks(tls=sink_tls)
    p = relay_daemon(posthorn, external_dns(dnsmasq), sink.port)
    submit(p, [REMOTE], message("secret"))
    got = sink.wait_delivered(1)[0]
    assert got["tls"] and got["tls_version"] in ("TLSv1.2", "TLSv1.3")
    ev = p.wait_event("outbound", result="sent")
    assert ev["tls"].startswith('"TLSv1.'), ev["_line"]
    tls = p.events("outbound-tls")[-1]
    assert tls["verified"] == "no"  # self-signed: used anyway (opportunistic, RFC 7435)
    wait_spool_empty(p)


def test_failed_handshake_falls_back_to_plaintext(posthorn, dnsmasq, sinks):
    sink = sinks(broken_tls=True)
    p = relay_daemon(posthorn, external_dns(dnsmasq), sink.port)
    qid = submit(p, [REMOTE], message("tls broken"))
    assert not sink.wait_delivered(1)[0]["tls"]
    first, second = outbound_events(p, id=qid)
    assert first["result"] == "deferred" and "trying again without TLS" in first["_line"]
    assert second["result"] == "sent" and second["addr"] == SINK_HOST
    wait_spool_empty(p)


def test_failed_handshake_with_tls_required_is_not_sent(posthorn, dnsmasq, sinks):
    sink = sinks(broken_tls=True)
    p = relay_daemon(posthorn, external_dns(dnsmasq), sink.port,
                     outbound={"retry": "1h", "lifetime": "1d", "extra": ["tls required"]})
    qid = submit(p, [REMOTE], message("tls or nothing"))
    ev = p.wait_event("outbound", id=qid, result="deferred")
    assert "TLS handshake" in ev["_line"] and "without TLS" not in ev["_line"]
    time.sleep(0.5)
    assert sink.messages == [] and len(sink.sessions) == 1
    assert queued(p) == [qid]


def test_tls_no_never_uses_starttls(posthorn, dnsmasq, sinks, sink_tls):
    sink = sinks(tls=sink_tls)
    p = relay_daemon(posthorn, external_dns(dnsmasq), sink.port, outbound={"extra": ["tls no"]})
    submit(p, [REMOTE], message("in the clear"))
    assert not sink.wait_delivered(1)[0]["tls"]
    wait_spool_empty(p)


def test_tls_required_without_starttls_bounces_after_lifetime(posthorn, dnsmasq, sinks):
    sink = sinks()
    p = relay_daemon(posthorn, external_dns(dnsmasq), sink.port,
                     outbound={"extra": ["tls required"]})
    start = time.monotonic()
    qid = submit(p, [REMOTE], message("needs tls"))
    bounce = p.wait_messages(BOB, 1, timeout=30)[0]
    assert time.monotonic() - start >= 4  # lifetime 5s
    assert sink.messages == []
    assert not any(c.startswith("MAIL") for s in sink.sessions for c in s["commands"])
    _, _, (human, report, _) = bounce_parts(bounce)
    assert b"Status: 5.4.7" in report and b"does not offer STARTTLS" in report
    assert b"delivery time expired" in human
    assert len(outbound_events(p, id=qid, result="deferred")) >= 2
    wait_spool_empty(p)


def test_null_sender_is_never_bounced(posthorn, dnsmasq, sinks):
    sink = sinks(rcpt=lambda a: "550 5.1.1 no such user")
    p = relay_daemon(posthorn, external_dns(dnsmasq), sink.port)
    qid = submit(p, [REMOTE], message("a bounce itself", sender=""), sender="")
    ev = p.wait_event("bounce-suppressed", timeout=20)
    assert ev["id"] == qid
    wait_spool_empty(p)
    assert p.events("bounce") == []
    for user in DEFAULT_USERS:
        assert p.messages(user) == []


def _log_list(value):
    """The items of a log list "<a>,<b>,+N-more" and the N (0 when none)."""
    items = value.split(",")
    more = 0
    if items and re.fullmatch(r"\+\d+-more", items[-1]):
        more = int(items.pop()[1:-5])
    assert all(i.startswith("<") and i.endswith(">") for i in items), value
    return [i[1:-1] for i in items], more


def test_long_recipient_lists_in_the_log_are_escaped_and_counted(posthorn, dnsmasq, sinks):
    """The outbound line's to= and the bounce line's failed= are log lists:
    each address escaped, and those that do not fit counted in "+N-more",
    never cut in the middle (they used to end in "...")."""
    sink = sinks(rcpt=lambda a: "550 5.1.1 no such user")
    p = relay_daemon(posthorn, external_dns(dnsmasq), sink.port)
    rcpts = ["odd=one@external.test"] + [
        f"recipient-number-{i:02d}-with-a-long-name@external.test" for i in range(40)]
    qid = submit(p, rcpts, message("many", sender=""), sender="")
    ev = p.wait_event("bounce-suppressed", timeout=20, id=qid)
    for value in (p.wait_event("outbound", id=qid, result="bounced")["to"], ev["failed"]):
        shown, more = _log_list(value)
        assert more > 0 and len(shown) + more == len(rcpts), value
        assert shown[0] == "odd\\x3done@external.test", value  # '=' escaped
        assert shown == [a.replace("=", "\\x3d") for a in rcpts[:len(shown)]], value
    wait_spool_empty(p)


def test_mail_loop_is_bounced(posthorn, dnsmasq, sinks):
    sink = sinks()
    p = relay_daemon(posthorn, external_dns(dnsmasq), sink.port)
    hops = "".join(f"Received: from hop{i}.example.net by hop{i + 1}.example.net; "
                   f"Mon, 1 Jan 2024 00:00:00 +0000\r\n" for i in range(50))
    submit(p, [REMOTE], hops + message("loop"))
    bounce = p.wait_messages(BOB, 1)[0]
    _, _, (human, report, headers) = bounce_parts(bounce)
    assert b"Status: 5.4.6" in report and b"loop" in human
    assert sink.sessions == []
    wait_spool_empty(p)


# -- where to ------------------------------------------------------------------------------------

def test_second_mx_when_the_first_refuses(posthorn, dnsmasq, sinks):
    sink = sinks()
    d = external_dns(dnsmasq, mx=[("external.test", "mx1.external.test", 10),
                                  ("external.test", "mx2.external.test", 20)],
                     hosts=[("mx1.external.test", DEAD_HOST), ("mx2.external.test", SINK_HOST)])
    p = relay_daemon(posthorn, d, sink.port)
    qid = submit(p, [REMOTE], message("second best"))
    sink.wait_delivered(1)
    wait_spool_empty(p)
    tried = outbound_events(p, id=qid)
    assert [(e["host"], e["addr"], e["result"]) for e in tried] == [
        ("mx1.external.test", DEAD_HOST, "deferred"), ("mx2.external.test", SINK_HOST, "sent")]


def test_no_mx_uses_the_domain_address(posthorn, dnsmasq, sinks):
    sink = sinks()
    d = external_dns(dnsmasq, mx=[], hosts=[("plain.test", SINK_HOST)])
    p = relay_daemon(posthorn, d, sink.port)
    submit(p, ["user@plain.test"], message("no mx", to="user@plain.test"))
    assert sink.wait_delivered(1)[0]["rcpts"] == ["user@plain.test"]
    wait_spool_empty(p)


def test_null_mx_bounces_at_once(posthorn, dnsmasq, sinks):
    sink = sinks()
    # dnsmasq answers "--mx-host=D,.,0" with preference 0 and the root name:
    # an RFC 7505 null MX
    d = external_dns(dnsmasq, mx=[("nullmx.test", ".", 0)], hosts=[("nullmx.test", SINK_HOST)])
    p = relay_daemon(posthorn, d, sink.port, outbound={"retry": "1h", "lifetime": "1d"})
    submit(p, ["user@nullmx.test"], message("null mx", to="user@nullmx.test"))
    bounce = p.wait_messages(BOB, 1)[0]
    _, _, (human, report, _) = bounce_parts(bounce)
    assert b"Status: 5.1.10" in report and b"null MX" in report
    assert sink.sessions == []
    wait_spool_empty(p)


def test_unknown_domain_bounces(posthorn, dnsmasq, sinks):
    sink = sinks()
    p = relay_daemon(posthorn, external_dns(dnsmasq), sink.port,
                     outbound={"retry": "1h", "lifetime": "1d"})
    submit(p, ["user@nowhere.test"], message("nowhere", to="user@nowhere.test"))
    bounce = p.wait_messages(BOB, 1)[0]
    assert b"Status: 5.1.2" in bounce
    wait_spool_empty(p)


# -- smarthost ------------------------------------------------------------------------------------

def secret_file(p, text="isp-Secret-9\n", mode=0o600):
    path = os.path.join(p.root if hasattr(p, "root") else p, "isp.secret")
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def test_smarthost_with_auth_over_tls(posthorn, dnsmasq, sinks, sink_tls, tmp_path):
    sink = sinks(tls=sink_tls, auth=True)
    secret = secret_file(str(tmp_path))
    # no MX records at all: everything goes to the smarthost
    p = relay_daemon(posthorn, dnsmasq(), sink.port, outbound={"extra": [
        f"smarthost {SINK_HOST}:{sink.port}", f"smarthost-auth isp-user {secret}"]})
    submit(p, ["a@external.test", "b@elsewhere.test"], message("via the isp"))
    got = sink.wait_delivered(1)[0]
    assert got["rcpts"] == ["a@external.test", "b@elsewhere.test"]  # one transaction
    assert got["tls"] and got["auth"] == [b"", b"isp-user", b"isp-Secret-9"]
    wait_spool_empty(p)
    assert "isp-Secret-9" not in p.log
    assert base64.b64encode(b"\0isp-user\0isp-Secret-9").decode() not in p.log


def test_smarthost_auth_never_without_tls(posthorn, dnsmasq, sinks, tmp_path):
    sink = sinks(auth=True)  # AUTH offered, STARTTLS not
    secret = secret_file(str(tmp_path))
    p = relay_daemon(posthorn, dnsmasq(), sink.port, outbound={"retry": "1h", "lifetime": "1d",
                     "extra": [f"smarthost {SINK_HOST}:{sink.port}",
                               f"smarthost-auth isp-user {secret}"]})
    qid = submit(p, [REMOTE], message("keep it secret"))
    ev = p.wait_event("outbound", id=qid, result="deferred")
    assert "STARTTLS" in ev["_line"]
    assert not any(c.upper().startswith("AUTH") for s in sink.sessions for c in s["commands"])
    assert queued(p) == [qid]


# -- the queue command ---------------------------------------------------------------------------

def test_queue_list_show_flush_delete(posthorn, dnsmasq, sinks):
    sink = sinks(dot=lambda n: "451 4.3.0 disk full, try later")
    p = relay_daemon(posthorn, external_dns(dnsmasq), sink.port,
                     outbound={"retry": "1h", "lifetime": "1d"})
    qid = submit(p, [REMOTE], message("stuck"))
    p.wait_event("outbound", id=qid, result="deferred")
    res = p.cli("queue", "list")
    assert res.returncode == 0, res.stderr
    assert qid in res.stdout and "<bob@example.test>" in res.stdout
    assert f"<{REMOTE}>" in res.stdout
    assert "last error: host mx1.external.test said: 451 4.3.0 disk full" in res.stdout
    assert "next attempt in" in res.stdout and "1 message in the outbound queue" in res.stdout

    res = p.cli("queue", "show", qid)
    assert res.returncode == 0, res.stderr
    assert f"id: {qid}" in res.stdout and "sender: <bob@example.test>" in res.stdout
    assert f"recipient: <{REMOTE}> remote pending" in res.stdout
    assert "Subject: stuck" in res.stdout and "hello from posthorn" not in res.stdout

    before = len(sink.messages)
    mark = p.log_mark()
    res = p.cli("queue", "flush")
    assert res.returncode == 0 and "1 message scheduled" in res.stdout, res.stdout + res.stderr
    wait_until(lambda: len(sink.messages) > before, 10, what="a retry after flush")
    p.wait_event("outbound", since=mark, id=qid, result="deferred")

    res = p.cli("queue", "delete", qid)
    assert res.returncode == 0, res.stderr
    assert "deleted" in res.stdout and "nothing was bounced" in res.stdout
    assert queued(p) == []
    assert not os.path.exists(os.path.join(p.spool, "queue", qid + ".done"))
    res = p.cli("queue", "list")
    assert "the outbound queue is empty" in res.stdout
    time.sleep(1)
    assert p.messages(BOB) == []


def test_queue_errors(posthorn, dnsmasq, sinks):
    sink = sinks()
    p = relay_daemon(posthorn, external_dns(dnsmasq), sink.port)
    res = p.cli("queue", "show", "0000000000000000000AB")
    assert res.returncode == 1 and "no message" in res.stderr
    res = p.cli("queue", "delete", "0000000000000000000AB")
    assert res.returncode == 1 and "no message" in res.stderr
    assert p.cli("queue", "show", "../etc").returncode == 2
    assert p.cli("queue", "frobnicate").returncode == 2
    assert p.cli("queue").returncode == 2
    sock = os.path.join(p.spool, "control.sock")
    assert oct(os.stat(sock).st_mode & 0o777) == "0o600"
    # a junk command and a long line get an error line, nothing more
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(sock)
    s.sendall(b"X" * 5000 + b"\n")
    assert s.recv(1000).startswith(b"error ")
    s.close()
    assert p.stop() == 0
    assert not os.path.exists(sock)
    res = p.cli("queue", "list")
    assert res.returncode == 1 and "not running" in res.stderr, res.stderr


# -- durability ----------------------------------------------------------------------------------

def test_kill9_during_delivery_loses_nothing(posthorn, dnsmasq, sinks):
    port = free_port(SINK_HOST)
    sink = sinks(port=port, stall=True)
    p = relay_daemon(posthorn, external_dns(dnsmasq), port)
    rcpts = ["a@external.test", "b@external.test"]
    qid = submit(p, rcpts + ["carol@example.test"], message("survive"))
    assert sink.stalled.wait(20), p.log
    p.kill9()
    sink.stop()
    assert queued(p) == [qid]
    good = sinks(port=port)
    p.start()
    got = good.wait_delivered(1)
    wait_spool_empty(p)
    time.sleep(1.5)  # more than a retry step: nothing is sent twice
    assert [m["rcpts"] for m in good.delivered()] == [rcpts]
    assert len(p.messages("carol@example.test")) == 1


def test_sigterm_during_delivery_then_restart(posthorn, dnsmasq, sinks):
    port = free_port(SINK_HOST)
    sink = sinks(port=port, stall=True)
    p = relay_daemon(posthorn, external_dns(dnsmasq), port)
    qid = submit(p, [REMOTE], message("interrupted"))
    assert sink.stalled.wait(20), p.log
    assert p.stop() == 0  # the transaction in flight is abandoned, cleanly
    sink.stop()
    assert queued(p) == [qid]
    good = sinks(port=port)
    p.start()
    assert good.wait_delivered(1)[0]["rcpts"] == [REMOTE]
    wait_spool_empty(p)


def test_queue_show_escapes_what_the_message_says(posthorn, dnsmasq, sinks):
    sink = sinks(rcpt=lambda a: "451 4.7.1 later \x1b[2J")
    p = relay_daemon(posthorn, external_dns(dnsmasq), sink.port,
                     outbound={"retry": "1h", "lifetime": "1d"})
    qid = submit(p, [REMOTE], message("colour \x1b[31mred\x1b[0m"))
    p.wait_event("outbound", id=qid, result="deferred")
    show = p.cli("queue", "show", qid).stdout
    assert "\x1b" not in show
    assert "Subject: colour \\x1B[31mred\\x1B[0m" in show
    listing = p.cli("queue", "list").stdout
    assert "\x1b" not in listing and "451 4.7.1 later ?[2J" in listing
