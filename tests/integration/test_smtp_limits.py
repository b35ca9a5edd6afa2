"""Limits of a virtual server (posthorn.conf(5) `limits`): recipients per
message, concurrent connections per server and per client address, the
idle timeout, and the command line length — including a 5 MB line without
a newline, which must be answered without the daemon's memory growing."""

import socket
import time

from helpers import ConnectionClosed, SMTPConn, queue_id, send_message, vm_rss_kb


def test_too_many_recipients(posthorn):
    p = posthorn(limits={"recipients": 3})
    rcpts = ["bob@example.test", "carol@example.test", "dave@example.test",
             "alice@example.org", "postmaster@example.test"]
    with p.connect() as c:
        c.start()
        c.expect("MAIL FROM:<alice@example.org>", 250)
        for r in rcpts[:3]:
            c.expect(f"RCPT TO:<{r}>", 250, "250 2.1.5")
        for r in rcpts[3:]:
            c.expect(f"RCPT TO:<{r}>", 452, "452 4.5.3")
        c.expect("DATA", 354)
        c.send("Subject: limited\r\n\r\nthree only\r\n.\r\n")
        qid = queue_id(c.reply())
    for r in rcpts[:3]:
        p.wait_messages(r, 1)
    assert p.messages("alice@example.org") == []
    assert p.wait_event("accepted", id=qid)["nrcpt"] == "3"


def test_recipient_limit_is_per_message(posthorn):
    p = posthorn(limits={"recipients": 1})
    with p.connect() as c:
        c.start()
        for rcpt in ("bob@example.test", "carol@example.test"):
            c.expect("MAIL FROM:<alice@example.org>", 250)
            c.expect(f"RCPT TO:<{rcpt}>", 250)
            c.expect("RCPT TO:<dave@example.test>", 452, "452 4.5.3")
            c.expect("DATA", 354)
            c.send("Subject: one\r\n\r\nx\r\n.\r\n")
            assert c.reply().code == 250
    p.wait_messages("bob@example.test", 1)
    p.wait_messages("carol@example.test", 1)
    assert p.messages("dave@example.test") == []


def _open_greeted(p, source):
    c = p.connect(source=source)
    r = c.reply()
    return c, r


def test_connections_per_ip(posthorn):
    p = posthorn(limits={"connections-per-ip": 2, "connections": 10})
    a, ra = _open_greeted(p, "127.0.0.1")
    b, rb = _open_greeted(p, "127.0.0.1")
    assert ra.code == 220 and rb.code == 220
    c, rc = _open_greeted(p, "127.0.0.1")
    assert rc.first.startswith("421 4.7.0"), rc.raw
    c.wait_closed(5)
    # another client address is not affected
    d, rd = _open_greeted(p, "127.0.0.2")
    assert rd.code == 220, rd.raw
    # the first two still work
    a.expect("NOOP", 250)
    b.expect("NOOP", 250)
    # when one leaves, the address may connect again
    a.expect("QUIT", 221)
    a.wait_closed(5)
    for _ in range(50):
        e, re_ = _open_greeted(p, "127.0.0.1")
        if re_.code == 220:
            break
        e.close()
        time.sleep(0.1)
    assert re_.code == 220, re_.raw
    e.expect("NOOP", 250)


def test_connections_per_server(posthorn):
    p = posthorn(limits={"connections": 2, "connections-per-ip": 20})
    a, ra = _open_greeted(p, "127.0.0.1")
    b, rb = _open_greeted(p, "127.0.0.2")
    assert ra.code == 220 and rb.code == 220
    c, rc = _open_greeted(p, "127.0.0.3")
    assert rc.first.startswith("421 4.7.0"), rc.raw
    c.wait_closed(5)
    a.expect("NOOP", 250)
    b.expect("NOOP", 250)


def test_connection_limit_is_per_virtual_server(posthorn):
    p = posthorn(servers={"mx": {"limits": {"connections": 1}}, "other": {}})
    a, ra = _open_greeted(p, "127.0.0.1")
    assert ra.code == 220
    with p.connect("other") as o:
        assert o.greeting().code == 220
    c, rc = _open_greeted(p, "127.0.0.1")
    assert rc.first.startswith("421 4.7.0"), rc.raw


def test_idle_timeout(posthorn):
    p = posthorn(limits={"timeout": "2s"})
    with p.connect(timeout=15) as c:
        c.start()
        t0 = time.monotonic()
        r = c.reply(timeout=12)
        waited = time.monotonic() - t0
        assert r.first.startswith("421 4.4.2"), r.raw
        assert 1.5 <= waited <= 8, f"timeout after {waited:.1f}s, configured 2s"
        c.wait_closed(5)
    # an active client is not timed out: activity resets the clock
    with p.connect(timeout=15) as c:
        c.start()
        for _ in range(4):
            time.sleep(1)
            c.expect("NOOP", 250)
    # a client stalled in the middle of DATA is timed out as well
    with p.connect(timeout=15) as c:
        c.start()
        c.expect("MAIL FROM:<alice@example.org>", 250)
        c.expect("RCPT TO:<bob@example.test>", 250)
        c.expect("DATA", 354)
        c.send("Subject: stalled\r\n\r\nhalf a mess")
        r = c.reply(timeout=12)
        assert r.first.startswith("421 4.4.2"), r.raw
        c.wait_closed(5)
    time.sleep(0.5)
    assert p.messages("bob@example.test") == []


def test_command_line_length_limit(mx):
    with mx.connect() as c:
        c.start()
        # 512 octets including CRLF is the most RFC 5321 §4.5.3.1.4 allows
        line = "NOOP " + "x" * (510 - 5)
        assert len(line) + 2 == 512
        c.expect(line, 250, "250 2.0.0")
        r = c.cmd("NOOP " + "x" * 600)
        assert r.first.startswith("500 5.5.2"), r.raw
        assert "line too long" in r.text.lower()
        # the session continues, in the same state
        c.expect("MAIL FROM:<alice@example.org>", 250)
        r = c.cmd("RCPT TO:<" + "b" * 1200 + "@example.test>")
        assert r.first.startswith("500 5.5.2"), r.raw
        c.expect("RCPT TO:<bob@example.test>", 250)
        c.expect("DATA", 354)
        c.send("Subject: after long lines\r\n\r\nok\r\n.\r\n")
        assert c.reply().code == 250
    mx.wait_messages("bob@example.test", 1)


def test_five_megabyte_line_without_newline(posthorn):
    # A small ASan quarantine, so that RSS shows what the daemon keeps,
    # not what the sanitizer holds back from reuse.
    p = posthorn(asan_options={"quarantine_size_mb": "1"})
    # warm up: one full session, so that lazily allocated things exist
    with p.connect() as c:
        c.start()
        c.expect("NOOP", 250)
        c.expect("QUIT", 221)
    time.sleep(0.2)
    before = vm_rss_kb(p.pid)

    garbage = b"A" * (64 * 1024)
    replies = []
    with p.connect(timeout=30) as c:
        c.start()
        sent = 0
        try:
            for _ in range(80):                  # 80 x 64 KiB = 5 MiB
                c.sock.sendall(garbage)
                sent += len(garbage)
            c.sock.sendall(b"\r\nNOOP\r\n")
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass
        peak = vm_rss_kb(p.pid)
        try:
            for _ in range(5):
                r = c.reply(timeout=10)
                replies.append(r)
                if r.code == 250:
                    break
        except (ConnectionClosed, socket.timeout, ConnectionResetError):
            pass
    after = vm_rss_kb(p.pid)

    assert replies, "no reply to a 5 MB line"
    assert replies[0].first.startswith("500 5.5.2"), replies[0].raw
    assert sum(1 for r in replies if r.code == 500) == 1, replies
    # whatever came after the one 500 is the NOOP's 250 (or nothing: closed)
    assert all(r.code == 250 for r in replies[1:]), replies
    growth_kb = max(peak, after) - before
    assert growth_kb < 8 * 1024, f"RSS grew by {growth_kb} KiB while reading a 5 MB line"
    # and the daemon is still fine
    with p.connect() as c:
        c.start()
        c.expect("NOOP", 250)


def test_many_sessions_at_once(posthorn):
    p = posthorn(limits={"connections": 100, "connections-per-ip": 100})
    conns = []
    try:
        for i in range(50):
            conns.append(SMTPConn(p.port(), timeout=10))
        for c in conns:
            c.start()
        for i, c in enumerate(conns[:10]):
            send_message(c, "alice@example.org", ["bob@example.test"],
                         f"Subject: m{i}\r\n\r\nbody {i}\r\n")
        for c in conns:
            c.expect("QUIT", 221)
    finally:
        for c in conns:
            c.close()
    p.wait_messages("bob@example.test", 10)
