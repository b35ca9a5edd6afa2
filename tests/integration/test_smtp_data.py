"""The DATA phase (RFC 5321 §4.1.1.4, §4.5.2, §4.5.3.1.6):
`<CRLF>.<CRLF>` is the only end of data, dot-unstuffing, bare CR and bare
LF rejected with 550 5.6.0 (no SMTP smuggling), text lines over 1000
octets rejected with 554 5.6.0, and the message size limit (SIZE=
parameter and the data itself)."""

import time

import pytest

from helpers import queue_id, send_message, split_message


def _start_data(c, rcpts=("bob@example.test",)):
    c.expect("MAIL FROM:<alice@example.org>", 250)
    for r in rcpts:
        c.expect(f"RCPT TO:<{r}>", 250)
    c.expect("DATA", 354)


def _prove_nothing_else_stored(p, c, addr="bob@example.test"):
    """After a rejected transaction: a good one on the same session goes
    through, and it is the only message in the Maildir."""
    c.expect("NOOP", 250, "250 2.0.0")
    qid = queue_id(send_message(c, "alice@example.org", [addr],
                                "Subject: the good one\r\n\r\ngood\r\n"))
    [data] = p.wait_messages(addr, 1, settle=1.0)
    assert f"id {qid}".encode() in data
    assert data.endswith(b"\r\ngood\r\n")
    assert [e["id"] for e in p.events("accepted")] == [qid]


def test_dot_unstuffing(mx):
    with mx.connect() as c:
        c.start()
        _start_data(c)
        c.send(b"Subject: dots\r\n\r\n"
               b"..x\r\n"
               b"...\r\n"
               b"..\r\n"
               b"a.b\r\n"
               b" .\r\n"
               b"end\r\n"
               b".\r\n")
        assert c.reply().code == 250
    [data] = mx.wait_messages("bob@example.test", 1)
    _, body = split_message(data)
    assert body == b".x\r\n..\r\n.\r\na.b\r\n .\r\nend\r\n"


def test_smtplib_dot_stuffing_round_trip(mx):
    msg = b"Subject: leading dots\r\n\r\n.hidden\r\n.\r\n..two\r\nlast\r\n"
    s = mx.smtp()
    s.sendmail("alice@example.org", ["bob@example.test"], msg)
    s.quit()
    [data] = mx.wait_messages("bob@example.test", 1)
    assert split_message(data)[1] == b".hidden\r\n.\r\n..two\r\nlast\r\n"


SMUGGLED = (b"MAIL FROM:<evil@x>\r\n"
            b"RCPT TO:<bob@example.test>\r\n"
            b"DATA\r\n"
            b"smuggled\r\n")


@pytest.mark.parametrize("fake_end", [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\r"],
                         ids=["LF.LF", "CRLF.LF", "LF.CRLF", "CR.CR", "CRLF.CR"])
def test_smuggling_gives_no_second_message(mx, fake_end):
    with mx.connect() as c:
        c.start()
        _start_data(c)
        c.send(b"Subject: smuggle\r\n\r\nhello" + fake_end + SMUGGLED + b"\r\n.\r\n")
        r = c.reply()
        # one reply for the whole thing: the data had a bare CR or LF
        assert r.first.startswith("550 5.6.0"), r.raw
        # nothing of the smuggled text was taken as a command: the next
        # reply is the NOOP's
        _prove_nothing_else_stored(mx, c)
    assert not any("evil" in e.get("from", "") for e in mx.events("accepted"))


@pytest.mark.parametrize("bad", [b"line one\nline two\r\n", b"line one\rline two\r\n",
                                 b"ends with bare LF\n", b"bare CR at the end\r"],
                         ids=["LF-inside", "CR-inside", "LF-at-end", "CR-at-end"])
def test_bare_cr_or_lf_rejected(mx, bad):
    with mx.connect() as c:
        c.start()
        _start_data(c)
        c.send(b"Subject: bare\r\n\r\n" + bad + b"\r\n.\r\n")
        r = c.reply()
        assert r.first.startswith("550 5.6.0"), r.raw
        _prove_nothing_else_stored(mx, c)


def test_bare_lf_in_headers_rejected(mx):
    with mx.connect() as c:
        c.start()
        _start_data(c)
        c.send(b"Subject: bare\nX-Other: y\r\n\r\nbody\r\n.\r\n")
        r = c.reply()
        assert r.first.startswith("550 5.6.0"), r.raw
        _prove_nothing_else_stored(mx, c)


def test_lf_dot_lf_does_not_end_data(mx):
    """A client that ends with LF.LF has not ended the data: the server
    keeps waiting (here it must not answer within a second)."""
    with mx.connect() as c:
        c.start()
        _start_data(c)
        c.send(b"Subject: unix\n\nbody\n.\n")
        c.sock.settimeout(1.0)
        try:
            data = c.sock.recv(1000)
        except TimeoutError:
            data = None
        except OSError as e:        # socket.timeout on older Pythons
            data = None if "timed out" in str(e) else e
        assert data is None, f"server answered after LF.LF: {data!r}"
        c.send(b"\r\n.\r\n")
        r = c.reply()
        assert r.first.startswith("550 5.6.0"), r.raw
        _prove_nothing_else_stored(mx, c)


def test_text_line_of_998_octets_is_fine(mx):
    line = b"y" * 998
    with mx.connect() as c:
        c.start()
        _start_data(c)
        c.send(b"Subject: long\r\n\r\n" + line + b"\r\nshort\r\n.\r\n")
        assert c.reply().code == 250
    [data] = mx.wait_messages("bob@example.test", 1)
    assert split_message(data)[1] == line + b"\r\nshort\r\n"


@pytest.mark.parametrize("length", [1001, 5000, 200000])
@pytest.mark.parametrize("size_limit", [None, "10K"])
def test_text_line_over_1000_octets_rejected(posthorn, length, size_limit):
    mx = posthorn(limits={"message-size": size_limit} if size_limit else None)
    with mx.connect(timeout=20) as c:
        c.start()
        _start_data(c)
        c.send(b"Subject: too long\r\n\r\nstart\r\n" + b"z" * length + b"\r\nend\r\n.\r\n")
        r = c.reply()
        assert r.first.startswith("554 5.6.0"), r.raw
        _prove_nothing_else_stored(mx, c)


def test_header_line_over_1000_octets_rejected(mx):
    with mx.connect() as c:
        c.start()
        _start_data(c)
        c.send(b"Subject: " + b"h" * 1200 + b"\r\n\r\nbody\r\n.\r\n")
        r = c.reply()
        assert r.first.startswith("554 5.6.0"), r.raw
        _prove_nothing_else_stored(mx, c)


# -- size ---------------------------------------------------------------------------

def test_size_parameter_over_limit(posthorn):
    p = posthorn(limits={"message-size": "10K"})
    with p.connect() as c:
        r = c.start()
        assert "SIZE 10240" in r.lines, r.raw
        r = c.cmd("MAIL FROM:<alice@example.org> SIZE=10241")
        assert r.first.startswith("552 5.3.4"), r.raw
        r = c.cmd("MAIL FROM:<alice@example.org> SIZE=99999999999999999999999")
        assert r.code in (501, 552), r.raw
        c.expect("MAIL FROM:<alice@example.org> SIZE=2000", 250, "250 2.1.0")
        c.expect("RCPT TO:<bob@example.test>", 250)
        c.expect("DATA", 354)
        c.send(b"Subject: small\r\n\r\n" + (b"s" * 73 + b"\r\n") * 20 + b".\r\n")
        assert c.reply().code == 250
    p.wait_messages("bob@example.test", 1)


def test_message_over_limit_rejected_after_data(posthorn):
    p = posthorn(limits={"message-size": "10K"})
    with p.connect() as c:
        c.start()
        _start_data(c)
        body = b"Subject: big\r\n\r\n" + (b"b" * 70 + b"\r\n") * 300     # ~21 KB
        c.send(body + b".\r\n")
        r = c.reply()
        assert r.first.startswith("552 5.3.4"), r.raw
        # a lying SIZE= is caught the same way
        c.expect("MAIL FROM:<alice@example.org> SIZE=100", 250)
        c.expect("RCPT TO:<bob@example.test>", 250)
        c.expect("DATA", 354)
        c.send(body + b".\r\n")
        r = c.reply()
        assert r.first.startswith("552 5.3.4"), r.raw
        _prove_nothing_else_stored(p, c)


def test_message_of_a_few_megabytes(posthorn):
    """Lines of every length up to 998 octets, empty ones and stuffed ones,
    in one stream: stored octet for octet, the stuffing dots removed."""
    p = posthorn(limits={"message-size": "8M"})
    sent, want = [], []
    for i in range(12000):                              # ~3 MB
        text = bytes([0x41 + i % 26]) * ((i * 37) % 500)
        if i % 97 == 0:
            sent.append(b".." + text)
            want.append(b"." + text)
        elif i % 50 == 0:
            sent.append(b"")
            want.append(b"")
        else:
            sent.append(text)
            want.append(text)
    sent.append(b"x" * 998)
    want.append(b"x" * 998)
    body = b"\r\n".join(sent) + b"\r\n"
    with p.connect(timeout=30) as c:
        c.start()
        _start_data(c)
        c.send(b"Subject: big one\r\n\r\n" + body + b".\r\n")
        r = c.reply(timeout=30)
        assert r.code == 250, r.raw
    [data] = p.wait_messages("bob@example.test", 1, timeout=20)
    assert split_message(data)[1] == b"\r\n".join(want) + b"\r\n"


def test_empty_body_and_no_headers(mx):
    with mx.connect() as c:
        c.start()
        _start_data(c)
        c.send(b"just a line, no header\r\n.\r\n")
        assert c.reply().code == 250
    [data] = mx.wait_messages("bob@example.test", 1)
    assert data.endswith(b"\r\njust a line, no header\r\n")


def test_data_survives_arbitrary_packet_boundaries(mx):
    """The end-of-data marker split over several writes is still found."""
    with mx.connect() as c:
        c.start()
        _start_data(c)
        payload = b"Subject: split\r\n\r\nsome text\r\n..dotted\r\n.\r\n"
        for i in range(len(payload)):
            c.send(payload[i:i + 1])
            if i % 7 == 0:
                time.sleep(0.005)
        assert c.reply().code == 250
    [data] = mx.wait_messages("bob@example.test", 1)
    assert split_message(data)[1] == b"some text\r\n.dotted\r\n"
