"""Abuse on SMTP and POP3, adding what the feature tests
do not cover already:

- STARTTLS state bugs of the NO STARTTLS / EAST list not in test_tls.py
  and test_pop3.py (twice, injection and "inside a transaction" live
  there): STARTTLS after AUTH, after an EHLO-less HELO session, with a
  second STARTTLS or a MAIL pipelined in the same packet, with a command
  before it in the packet; POP3 STLS after USER, and STLS pipelined twice.
- SMTP smuggling: the variants test_smtp_data.py lacks (CR.CRLF), and
  every variant split across packet boundaries.
- Log injection: CR, LF, NUL and escape sequences in HELO, MAIL and AUTH
  arguments never forge or break a log line.
- 10,000 RCPT commands in one session: one bounded answer each, the
  recipient limit holds, memory stays bounded.
- Random SNI names on 10,000 TLS handshakes, in parallel batches:
  memory stays bounded.

Only loopback; every loop bounded in count and time."""

import base64
import os
import random
import re
import socket
import ssl
import string
import threading
import time

import pytest

from authutil import b64, client_context, plain_response
from conftest import DEFAULT_USERS, run_cli
from helpers import (CLIENT_HELO, HOST, ConnectionClosed, SMTPConn, free_port, send_message,
                     vm_rss_kb, wait_until)
from test_pop3 import BOB_PW, connect as pop_connect, start_pop3
from tlsutil import TLSConn

HANDSHAKES = 10000
BOB = "bob@example.test"


@pytest.fixture(scope="module")
def cert(posthorn_bin, tmp_path_factory):
    """A certificate for the IP address 127.0.0.1 (names check in Python)."""
    d = tmp_path_factory.mktemp("abuse-cert")
    res = run_cli(posthorn_bin, ["cert", "new", "--hostname", HOST, "--out", str(d)])
    assert res.returncode == 0, res.stderr
    return {"crt": str(d / f"{HOST}.crt"), "key": str(d / f"{HOST}.key")}


@pytest.fixture(scope="module")
def ctx(cert):
    return client_context(cert["crt"])


# ASan keeps freed memory in a quarantine (256 MB by default): a small one
# makes RSS show what posthorn itself holds.
SMALL_QUARANTINE = {"quarantine_size_mb": "4"}


def smtp_tls_server(posthorn, cert, anonymous=False, auth=(), implicit_port=None, limits=None,
                    asan_options=None):
    lines = []
    if implicit_port:
        lines.append(f"listen {HOST}:{implicit_port} tls")
    lines += ["tls {", f"    certificate {cert['crt']}", f"    key {cert['key']}", "}",
              "auth {", f"    anonymous {'yes' if anonymous else 'no'}"]
    lines += ["    " + a for a in auth] + ["}"]
    return posthorn(servers={"mx": {"anonymous": None, "limits": limits,
                                    "extra": "\n".join(lines)}}, asan_options=asan_options)


def quiet(conn, seconds):
    """What arrives within `seconds` (b"" when nothing does)."""
    conn.sock.settimeout(seconds)
    try:
        return conn.sock.recv(65536)
    except (socket.timeout, ssl.SSLWantReadError):
        return b""
    finally:
        conn.sock.settimeout(conn.timeout)


# -- STARTTLS state (SMTP) ------------------------------------------------------------------

def test_starttls_after_auth_never_keeps_the_plaintext_login(posthorn, cert, ctx):
    """Authenticated in the clear (allowed by configuration), then
    STARTTLS: either refused, or the login is forgotten with everything
    else learnt before the handshake (RFC 3207 §4.2)."""
    p = smtp_tls_server(posthorn, cert, auth=["plaintext-requires-tls no"])
    with TLSConn(p.port()) as c:
        c.start()
        r = c.cmd("AUTH PLAIN " + plain_response(BOB, DEFAULT_USERS[BOB]))
        assert r.code == 235, r.raw
        r = c.cmd("STARTTLS")
        if r.code == 503:
            assert r.first.startswith("503 5.5.1"), r.raw
            c.expect("NOOP", 250)
            return
        assert r.first.startswith("220 2.0.0"), r.raw
        c.wrap(ctx, HOST)
        c.ehlo()
        r = c.cmd(f"MAIL FROM:<{BOB}>")
        assert r.first.startswith("530 5.7.0 Authentication required"), r.raw
        # a second AUTH is possible now: the first one is gone
        r = c.cmd("AUTH PLAIN " + plain_response(BOB, DEFAULT_USERS[BOB]))
        assert r.code == 235, r.raw


@pytest.mark.parametrize("packet", [
    b"STARTTLS\r\nSTARTTLS\r\n",
    b"STARTTLS\r\nAUTH PLAIN " + plain_response(BOB, DEFAULT_USERS[BOB]).encode() + b"\r\n",
    b"STARTTLS\r\nMAIL FROM:<evil@remote.example>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n",
], ids=["starttls-twice", "auth", "transaction"])
def test_starttls_pipelined_plaintext_counts_for_nothing(posthorn, cert, ctx, packet):
    p = smtp_tls_server(posthorn, cert, anonymous=True)
    with TLSConn(p.port()) as c:
        c.start()
        c.send(packet)                         # one write
        r = c.reply()
        assert r.first.startswith("220 2.0.0"), r.raw
        assert c.buf == b"" and quiet(c, 0.3) == b""
        c.wrap(ctx, HOST)
        assert quiet(c, 0.5) == b"", "the server answered injected plaintext inside TLS"
        c.ehlo()
        r = c.cmd("RCPT TO:<bob@example.test>")
        assert r.code == 503, r.raw            # no transaction was started
        r = c.cmd("MAIL FROM:<alice@example.org>")
        assert r.code == 250, r.raw            # and no login happened (anonymous: MAIL ok)
        c.expect("RSET", 250)
        c.expect("QUIT", 221)
    assert not any(e.get("result") == "ok" for e in p.events("auth"))


def test_command_before_starttls_in_the_same_packet(posthorn, cert, ctx):
    """NOOP answered, STARTTLS answered, what follows it discarded."""
    p = smtp_tls_server(posthorn, cert, anonymous=True)
    with TLSConn(p.port()) as c:
        c.start()
        c.send(b"NOOP\r\nSTARTTLS\r\nNOOP\r\n")
        assert c.reply().code == 250
        assert c.reply().first.startswith("220 2.0.0")
        assert quiet(c, 0.3) == b""
        c.wrap(ctx, HOST)
        assert quiet(c, 0.5) == b""
        c.ehlo()
        c.expect("QUIT", 221)


def test_starttls_after_helo_then_mail_needs_a_new_greeting(posthorn, cert, ctx):
    p = smtp_tls_server(posthorn, cert, anonymous=True)
    with TLSConn(p.port()) as c:
        c.greeting()
        c.expect(f"HELO {CLIENT_HELO}", 250)
        assert c.cmd("STARTTLS").first.startswith("220 2.0.0")
        c.wrap(ctx, HOST)
        r = c.cmd("MAIL FROM:<alice@example.org>")
        assert r.code == 503, r.raw
        c.expect(f"HELO {CLIENT_HELO}", 250)
        send_message(c, "alice@example.org", [BOB], "Subject: helo\r\n\r\nx\r\n")
        c.expect("QUIT", 221)
    p.wait_messages(BOB, 1)


# -- STLS state (POP3) ------------------------------------------------------------------------

def test_pop3_stls_after_user_forgets_the_user(posthorn, cert, ctx):
    p = start_pop3(posthorn, cert)
    c = pop_connect(p)
    r = c.cmd(f"USER {BOB}")
    # USER in the clear is refused by default (plaintext-requires-tls);
    # whatever the answer, after STLS there is no pending USER
    assert r.startswith("-ERR") or r.startswith("+OK"), r
    assert c.cmd("STLS").startswith("+OK")
    c.wrap(ctx)
    assert c.cmd(f"PASS {BOB_PW}") == "-ERR USER first"
    assert c.login(BOB, BOB_PW).startswith("+OK")
    assert c.cmd("QUIT").startswith("+OK")


def test_pop3_stls_after_a_plaintext_login_is_refused(posthorn, cert):
    """Logged in over the clear (allowed by configuration): STLS cannot
    make that login look protected; the session stays as it was."""
    p = start_pop3(posthorn, cert, auth=["plaintext-requires-tls no"])
    c = pop_connect(p)
    assert c.login(BOB, BOB_PW).startswith("+OK")
    assert c.cmd("STLS").startswith("-ERR")
    assert c.cmd("STAT").startswith("+OK")      # still the plaintext session, logged in
    assert c.cmd("QUIT").startswith("+OK")


def test_pop3_stls_twice_in_one_packet(posthorn, cert, ctx):
    p = start_pop3(posthorn, cert)
    c = pop_connect(p)
    c.send(b"STLS\r\nSTLS\r\nCAPA\r\n")
    assert c.line() == "+OK Begin TLS negotiation"
    assert c.buf == b""
    c.wrap(ctx)
    # the second STLS and the CAPA were plaintext: nothing answers them
    c.sock.settimeout(0.5)
    try:
        leaked = c.sock.recv(4096)
    except (socket.timeout, ssl.SSLWantReadError):
        leaked = b""
    c.sock.settimeout(10)
    assert leaked == b"", leaked
    assert c.cmd("STLS") == "-ERR TLS already active"
    assert c.login(BOB, BOB_PW).startswith("+OK")
    assert c.cmd("QUIT").startswith("+OK")


# -- SMTP smuggling ---------------------------------------------------------------------------

SMUGGLED = (b"MAIL FROM:<evil@x>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
            b"smuggled\r\n")
FAKE_ENDS = {"LF.LF": b"\n.\n", "LF.CRLF": b"\n.\r\n", "CR.CRLF": b"\r.\r\n",
             "CRLF.LF": b"\r\n.\n", "CR.CR": b"\r.\r", "CRLF.CR": b"\r\n.\r"}


def _smuggle(mx, fake_end, split_at=None, pause=0.05):
    text = b"Subject: smuggle\r\n\r\nhello" + fake_end + SMUGGLED + b"\r\n.\r\n"
    with mx.connect() as c:
        c.start()
        c.expect("MAIL FROM:<alice@example.org>", 250)
        c.expect(f"RCPT TO:<{BOB}>", 250)
        c.expect("DATA", 354)
        if split_at is None:
            c.send(text)
        else:
            for part in (text[:split_at], text[split_at:]):
                c.send(part)
                time.sleep(pause)
        r = c.reply()
        assert r.first.startswith("550 5.6.0"), (fake_end, split_at, r.raw)
        r = c.cmd("NOOP")                       # the very next reply is the NOOP's
        assert r.code == 250 and "Ok" in r.text, (fake_end, split_at, r.raw)
    return mx


@pytest.mark.parametrize("name", sorted(FAKE_ENDS))
def test_smuggling_variants_across_packet_boundaries(mx, name):
    fake_end = FAKE_ENDS[name]
    start = len(b"Subject: smuggle\r\n\r\nhello")
    _smuggle(mx, fake_end)                     # one packet
    for k in range(len(fake_end) + 1):         # a split before, inside and after the fake end
        _smuggle(mx, fake_end, split_at=start + k)
    time.sleep(0.5)
    assert mx.messages(BOB) == []
    assert not any("evil" in e.get("from", "") for e in mx.events("accepted"))


# -- log injection ------------------------------------------------------------------------------

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z posthorn\[\d+\]: "
                      r"(error|warning|info|debug) event=[a-z0-9-]+( |$)")
NASTY = ["x\x1b[2J\x1b[31mred", "a\x00b", "fake\rline", "evil event=accepted id=FORGED",
         "\x07\x08\x7f\x9b[1m", "\u202eevil"]


def _assert_clean_log(text):
    for line in text.split("\n")[:-1]:
        assert LOG_LINE.match(line), f"a broken or foreign log line: {line!r}"
        assert not re.search(r"[\x00-\x1f\x7f]", line), f"control byte in a log line: {line!r}"
        # exactly one event= per line: the escaped "=" cannot forge another
        assert line.count("event=") == 1, f"forged event in a log line: {line!r}"
        assert "id=FORGED" not in line, line
    assert text.endswith("\n")


def test_log_injection_in_helo_mail_and_auth(posthorn, cert):
    p = smtp_tls_server(posthorn, cert, anonymous=True,
                        auth=["plaintext-requires-tls no", "lockout 1000 15m 30m"])
    for i, nasty in enumerate(NASTY):
        raw = nasty.encode("utf-8")
        # each from its own address: the failed logins' growing delay is per address
        with SMTPConn(p.port(), source=f"127.0.0.{20 + i}", timeout=30) as c:
            c.greeting()
            c.send(b"EHLO " + raw + b"\r\n")
            c.reply()
            c.send(b"HELO " + raw + b"\r\n")
            c.reply()
            c.expect(f"EHLO {CLIENT_HELO}", 250)
            c.send(b"MAIL FROM:<" + raw + b"@example.org>\r\n")
            c.reply()
            c.send(b'MAIL FROM:<"' + raw + b'"@example.org>\r\n')
            r = c.reply()
            if r.code == 250:
                c.send(b"RCPT TO:<" + raw + b"@example.test>\r\n")
                c.reply()
                c.expect("RSET", 250)
            # AUTH: user names with the same bytes, PLAIN and LOGIN
            c.send(b"AUTH PLAIN " + base64.b64encode(b"\0" + raw + b"\0wrong") + b"\r\n")
            c.reply(timeout=30)
            c.send(b"AUTH LOGIN\r\n")
            if c.reply(timeout=30).code == 334:
                c.send(base64.b64encode(raw + b"\nevent=auth result=ok") + b"\r\n")
                if c.reply(timeout=30).code == 334:
                    c.send(base64.b64encode(b"wrong") + b"\r\n")
                    c.reply(timeout=30)
            c.send(b"AUTH PLAIN " + base64.b64encode(raw + b"\0" + BOB.encode() + b"\0x")
                   + b"\r\n")
            try:
                c.reply(timeout=30)
                c.cmd("QUIT")
            except ConnectionClosed:
                pass                      # a lockout may close the session
    time.sleep(0.5)
    log = p.log
    assert "event=auth" in log and "result=ok" not in log
    _assert_clean_log(log)


# -- 10,000 RCPT ----------------------------------------------------------------------------------

def test_ten_thousand_rcpt_commands(posthorn):
    p = posthorn(limits={"recipients": 100}, asan_options=SMALL_QUARANTINE)
    base = vm_rss_kb(p.pid)
    replies = []
    with p.connect(timeout=30) as c:
        c.start()
        c.expect("MAIL FROM:<alice@example.org>", 250)
        sent = 0
        try:
            while sent < 10000:
                batch = min(500, 10000 - sent)
                c.send(b"".join(f"RCPT TO:<user{sent + i}@example.test>\r\n".encode()
                                for i in range(batch)))
                for _ in range(batch):
                    replies.append(c.reply(timeout=30))
                sent += batch
        except ConnectionClosed:
            pass
        peak = vm_rss_kb(p.pid)
        # every reply bounded and well-formed; the limit holds
        assert all(len(r.raw) < 512 for r in replies)
        codes = [r.code for r in replies]
        assert codes.count(250) <= 100
        assert set(codes) <= {250, 452, 550, 421}, set(codes)
        if len(replies) < 10000:
            # the server may hang up on a client that only makes errors:
            # then with a 421, and before the 10,000th command
            assert replies[-1].code == 421, replies[-1].raw
        else:
            r = c.cmd("RSET")
            assert r.code == 250, r.raw
            c.expect("QUIT", 221)
    growth = (peak - base) / 1024
    assert growth < 64, f"RSS grew by {growth:.0f} MB for 10,000 RCPT"
    # the daemon serves the next client as usual
    with p.connect() as c:
        c.start()
        send_message(c, "alice@example.org", [BOB], "Subject: next\r\n\r\nx\r\n")
    p.wait_messages(BOB, 1)


def test_recipient_limit_with_valid_recipients(posthorn):
    p = posthorn(limits={"recipients": 100})
    with p.connect(timeout=30) as c:
        c.start()
        c.expect("MAIL FROM:<alice@example.org>", 250)
        c.send(b"".join(b"RCPT TO:<bob@example.test>\r\n" for _ in range(10000)))
        codes = [c.reply(timeout=30).code for _ in range(10000)]
        assert codes[:100] == [250] * 100 or codes.count(250) <= 100
        assert codes.count(250) <= 100 and set(codes) <= {250, 452}, set(codes)
        assert codes[-1] == 452
        r = c.cmd("DATA")
        assert r.code == 354
        c.send(b"Subject: many\r\n\r\nonce\r\n.\r\n")
        assert c.reply().code == 250
    msgs = p.wait_messages(BOB, 1, settle=1.0)   # one copy for the repeated address
    assert b"once" in msgs[0]


# -- random SNI names ---------------------------------------------------------------------------

def random_name(rng):
    labels = []
    for _ in range(rng.randint(1, 6)):
        n = rng.randint(1, 63)
        alphabet = string.ascii_lowercase + string.digits + "-"
        label = "".join(rng.choice(alphabet) for _ in range(n)).strip("-") or "x"
        labels.append(label)
    return ".".join(labels)[:253].strip(".-") or "x"


def test_random_sni_names_keep_memory_bounded(posthorn, cert):
    port = free_port()
    p = smtp_tls_server(posthorn, cert, anonymous=True, implicit_port=port,
                        limits={"connections": 10000, "connections-per-ip": 10000},
                        asan_options=SMALL_QUARANTINE)
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname = False
    cctx.verify_mode = ssl.CERT_NONE
    failures = []
    done = [0]
    lock = threading.Lock()

    def worker(seed, count):
        rng = random.Random(seed)
        for _ in range(count):
            name = random_name(rng)
            try:
                with socket.create_connection((HOST, port), timeout=30) as s:
                    with cctx.wrap_socket(s, server_hostname=name) as t:
                        assert t.recv(512).startswith(b"220 ")
            except (OSError, AssertionError) as e:
                with lock:
                    failures.append((name, repr(e)))
            with lock:
                done[0] += 1

    def batch(n, seed):
        threads = [threading.Thread(target=worker, args=(seed + i, n // 8)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(900)
        assert not any(t.is_alive() for t in threads)

    batch(400, 1000)                 # warm up: allocator, session structures
    warm = vm_rss_kb(p.pid)
    t0 = time.monotonic()
    batch(HANDSHAKES, 2000)
    elapsed = time.monotonic() - t0
    wait_until(lambda: not p.events("connect") or
               len(p.events("disconnect")) >= len(p.events("connect")) - 2, 60,
               what="sessions closed")
    after = vm_rss_kb(p.pid)
    assert len(failures) <= done[0] // 100, failures[:5]
    growth = (after - warm) / 1024
    assert growth < 48, f"RSS grew by {growth:.0f} MB over {HANDSHAKES} handshakes"
    print(f"\nabuse SNI: {done[0]} handshakes ({HANDSHAKES} measured in {elapsed:.0f} s), "
          f"RSS {warm // 1024} -> {after // 1024} MB, {len(failures)} failures")
