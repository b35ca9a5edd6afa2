"""SMTP receiving basics (RFC 5321; docs/protocols.md): greeting and EHLO, delivery into
Maildir with its trace headers (through smtplib and through swaks), the
reply of every command in every state, address syntax, local recipients,
postmaster, aliases, relay refusal and the log lines of a transaction."""

import os
import re
import subprocess

import pytest

from helpers import (CLIENT_HELO, ehlo_keywords, queue_id, send_message,
                     split_message)

SWAKS = "/usr/bin/swaks"

# swaks always looks up the machine's own host name with gethostbyname(),
# which may reach the DNS resolver; this wrapper answers it locally.
SWAKS_NO_DNS = ("BEGIN { *CORE::GLOBAL::gethostbyname = sub { return ($_[0]) } } "
                "$0 = '" + SWAKS + "'; do '" + SWAKS + "'; die $@ if $@;")


def swaks(*args, timeout=60):
    return subprocess.run(["perl", "-e", SWAKS_NO_DNS, "--"] + list(args),
                          capture_output=True, text=True, timeout=timeout)


def header(fields, name):
    vals = [v for n, v in fields if n.lower() == name.lower()]
    return vals


# -- greeting and EHLO --------------------------------------------------------

def test_greeting_names_the_server(mx):
    with mx.connect() as c:
        g = c.greeting()
        assert g.first.startswith("220 mx.example.test ESMTP"), g.raw
        assert "posthorn" in g.text


def test_ehlo_advertises_extensions(posthorn):
    p = posthorn(limits={"message-size": "10M"})
    with p.connect() as c:
        c.greeting()
        r = c.ehlo()
        assert r.lines[0].split()[0] == "mx.example.test", r.raw
        kw = ehlo_keywords(r)
        for ext in ("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"):
            assert ext in kw, f"{ext} missing from {r.raw!r}"
        assert kw.get("SIZE") == [str(10 * 1024 * 1024)], r.raw
        # no TLS configured: nothing to offer
        assert "STARTTLS" not in kw, r.raw


def test_helo_is_accepted(mx):
    with mx.connect() as c:
        c.greeting()
        r = c.cmd(f"HELO {CLIENT_HELO}")
        assert r.code == 250, r.raw
        c.expect("MAIL FROM:<alice@example.org>", 250, "250 2.1.0")


def test_each_virtual_server_has_its_own_hostname(posthorn):
    p = posthorn(servers={"mx": {}, "other": {"hostname": "smtp.example.org"}})
    with p.connect("mx") as a, p.connect("other") as b:
        assert a.greeting().first.startswith("220 mx.example.test ")
        assert b.greeting().first.startswith("220 smtp.example.org ")
        assert b.ehlo().lines[0].split()[0] == "smtp.example.org"


def test_server_listens_on_several_addresses(posthorn):
    from helpers import SMTPConn, free_port
    second = free_port("127.0.0.2")
    p = posthorn(servers={"mx": {"extra": f"listen 127.0.0.2:{second}"}})
    listening = {e["address"] for e in p.events("listening") if e.get("server") == "mx"}
    assert listening == {f"127.0.0.1:{p.port()}", f"127.0.0.2:{second}"}, p.log
    with SMTPConn(second, host="127.0.0.2") as c:
        c.start()
        send_message(c, "alice@example.org", ["bob@example.test"], "Subject: 2nd\r\n\r\nvia .2\r\n")
    p.wait_messages("bob@example.test", 1)


# -- delivery ---------------------------------------------------------------------

def test_delivery_with_smtplib_into_maildir(mx):
    body = ("From: Alice <alice@example.org>\r\nTo: Bob <bob@example.test>\r\n"
            "Subject: hello from smtplib\r\n\r\nHi Bob,\r\nthis is the body.\r\n")
    s = mx.smtp()
    code, _ = s.ehlo()
    assert code == 250
    s.mail("alice@example.org")
    s.rcpt("bob@example.test")
    code, msg = s.data(body.encode())
    s.quit()
    assert code == 250, msg
    m = re.match(r"2\.0\.0 Ok: queued as (\S+)$", msg.decode())
    assert m, msg
    qid = m.group(1)

    [data] = mx.wait_messages("bob@example.test", 1)
    lines = data.split(b"\r\n")
    assert lines[0] == b"Return-Path: <alice@example.org>", data[:300]
    assert lines[1] == b"Delivered-To: bob@example.test", data[:300]
    assert lines[2] == f"Received: from {CLIENT_HELO} (unknown [127.0.0.1])".encode(), data[:300]
    assert lines[3].startswith(f"\tby mx.example.test (posthorn) with ESMTP id {qid}".encode()), \
        data[:300]
    fields, got_body = split_message(data)
    assert header(fields, "Subject") == [b"hello from smtplib"]
    assert header(fields, "From") == [b"Alice <alice@example.org>"]
    assert got_body == b"Hi Bob,\r\nthis is the body.\r\n"

    # one line-end convention for the whole file (LF, as Maildir tools
    # write, or CRLF as on the wire), never a mix
    [raw] = mx.messages("bob@example.test", raw=True)
    crlf = raw.count(b"\r\n")
    assert crlf == 0 or crlf == raw.count(b"\n"), raw[:400]

    # a proper Maildir: tmp/ new/ cur/, nothing left behind in tmp/
    md = mx.maildir("bob@example.test")
    for sub in ("tmp", "new", "cur"):
        assert os.path.isdir(os.path.join(md, sub)), sub
    assert os.listdir(os.path.join(md, "tmp")) == []
    assert len(os.listdir(os.path.join(md, "new"))) == 1

    # the log tells the story: connect, accepted (with id, size, sender), delivered
    acc = mx.wait_event("accepted", id=qid)
    assert acc["from"] == "<alice@example.org>"
    assert acc["nrcpt"] == "1"
    assert int(acc["size"]) > 0
    assert mx.events("connect")[0]["client"] == "127.0.0.1"
    assert mx.events("connect")[0]["server"] == "mx"
    assert acc["session"] == mx.events("connect")[0]["session"]
    mx.wait_event("delivered", id=qid, to="bob@example.test")


def test_delivery_with_swaks(mx):
    res = swaks("--server", f"127.0.0.1:{mx.port()}", "--helo", "swaks.example.test",
                "--from", "alice@example.org", "--to", "carol@example.test",
                "--header", "Subject: swaks test", "--body", "Sent by swaks.",
                "--timeout", "10")
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(r"<-\s+250 2\.0\.0 Ok: queued as \S+", res.stdout), res.stdout
    [data] = mx.wait_messages("carol@example.test", 1)
    assert data.startswith(b"Return-Path: <alice@example.org>\r\nDelivered-To: carol@example.test\r\n"
                           b"Received: from swaks.example.test (unknown [127.0.0.1])\r\n"
                           b"\tby mx.example.test (posthorn) with ESMTP id "), data[:300]
    fields, body = split_message(data)
    assert header(fields, "Subject") == [b"swaks test"]
    assert b"Sent by swaks." in body


def test_several_recipients_each_get_one_copy(mx):
    with mx.connect() as c:
        c.start()
        r = send_message(c, "alice@example.org", ["bob@example.test", "carol@example.test",
                                                   "alice@example.org"],
                         "Subject: to three\r\n\r\nhello all\r\n")
        qid = queue_id(r)
    for addr in ("bob@example.test", "carol@example.test", "alice@example.org"):
        [data] = mx.wait_messages(addr, 1)
        assert f"Delivered-To: {addr}\r\n".encode() in data.split(b"\r\n\r\n")[0] + b"\r\n"
        assert f"id {qid}".encode() in data
        assert data.endswith(b"\r\nhello all\r\n")
    ev = mx.wait_event("accepted", id=qid)
    assert ev["nrcpt"] == "3"


def test_same_recipient_twice_is_delivered_once(mx):
    with mx.connect() as c:
        c.start()
        c.expect("MAIL FROM:<alice@example.org>", 250)
        c.expect("RCPT TO:<bob@example.test>", 250)
        r = c.cmd("RCPT TO:<bob@example.test>")
        assert r.code == 250, r.raw
        c.expect("DATA", 354)
        c.send("Subject: dup\r\n\r\nonce\r\n.\r\n")
        assert c.reply().code == 250
    mx.wait_messages("bob@example.test", 1, settle=1.0)


def test_null_sender_is_accepted(mx):
    with mx.connect() as c:
        c.start()
        send_message(c, "", ["bob@example.test"], "Subject: bounce\r\n\r\nnull sender\r\n")
    [data] = mx.wait_messages("bob@example.test", 1)
    assert data.startswith(b"Return-Path: <>\r\n"), data[:100]


def test_session_allows_several_transactions(mx):
    with mx.connect() as c:
        c.start()
        ids = set()
        for i in range(3):
            ids.add(queue_id(send_message(c, "alice@example.org", ["bob@example.test"],
                                          f"Subject: n{i}\r\n\r\nmessage {i}\r\n")))
        c.expect("QUIT", 221, "221 2.0.0")
    assert len(ids) == 3, "queue ids must be unique"
    msgs = mx.wait_messages("bob@example.test", 3)
    assert sorted(m.split(b"\r\n")[-2] for m in msgs) == [b"message 0", b"message 1", b"message 2"]


def test_eight_bit_body_is_kept_byte_for_byte(mx):
    body = "Subject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\r\n\r\nGrüße, Jörg — ça va? 日本語\r\n".encode()
    with mx.connect() as c:
        c.start()
        c.expect("MAIL FROM:<alice@example.org> BODY=8BITMIME", 250, "250 2.1.0")
        c.expect("RCPT TO:<bob@example.test>", 250)
        c.expect("DATA", 354)
        c.send(body + b".\r\n")
        assert c.reply().code == 250
    [data] = mx.wait_messages("bob@example.test", 1)
    assert data.endswith(body.split(b"\r\n\r\n", 1)[1])


def test_smtputf8_address(mx):
    with mx.connect() as c:
        c.start()
        r = c.cmd("MAIL FROM:<jörg@example.org>")
        assert r.first.startswith("553 5.6.7"), r.raw
        c.expect("MAIL FROM:<jörg@example.org> SMTPUTF8", 250, "250 2.1.0")
        c.expect("RCPT TO:<bob@example.test>", 250)
        c.expect("DATA", 354)
        c.send("Subject: utf8\r\n\r\nhej\r\n.\r\n")
        assert c.reply().code == 250
    [data] = mx.wait_messages("bob@example.test", 1)
    assert data.startswith("Return-Path: <jörg@example.org>\r\n".encode()), data[:100]


# -- replies in every state -----------------------------------------------------------

def test_command_sequence_errors(mx):
    with mx.connect() as c:
        c.greeting()
        c.expect("MAIL FROM:<alice@example.org>", 503, "503 5.5.1")
        c.expect("RCPT TO:<bob@example.test>", 503, "503 5.5.1")
        c.expect("DATA", 503, "503 5.5.1")
        c.ehlo()
        c.expect("RCPT TO:<bob@example.test>", 503, "503 5.5.1")
        c.expect("DATA", 503, "503 5.5.1")
        c.expect("MAIL FROM:<alice@example.org>", 250, "250 2.1.0")
        c.expect("MAIL FROM:<alice@example.org>", 503, "503 5.5.1")
        c.expect("DATA", 503, "503 5.5.1")
        c.expect("RCPT TO:<bob@example.test>", 250, "250 2.1.5")
        c.expect("RSET", 250, "250 2.0.0")
        # RSET forgot the transaction
        c.expect("RCPT TO:<bob@example.test>", 503, "503 5.5.1")
        c.expect("DATA", 503, "503 5.5.1")
        # a second EHLO also resets it, and the session goes on
        c.expect("MAIL FROM:<alice@example.org>", 250)
        c.ehlo()
        c.expect("RCPT TO:<bob@example.test>", 503, "503 5.5.1")


def test_simple_commands(mx):
    with mx.connect() as c:
        c.start()
        c.expect("NOOP", 250, "250 2.0.0")
        c.expect("NOOP anything at all", 250, "250 2.0.0")
        c.expect("RSET", 250, "250 2.0.0")
        c.expect("VRFY bob@example.test", 252, "252 2.5.2")
        c.expect("VRFY nobody", 252, "252 2.5.2")
        c.expect("HELP", 214)
        c.expect("noop", 250, "250 2.0.0")        # verbs are case-insensitive
        c.expect("FROBNICATE now", 500, "500 5.5.1")
        r = c.cmd("QUIT")
        assert r.first.startswith("221 2.0.0"), r.raw
        assert c.wait_closed(5) == b""


def test_every_reply_has_an_enhanced_status_code(mx):
    with mx.connect() as c:
        c.greeting()
        replies = [c.cmd(line) for line in (
            "MAIL FROM:<a@example.org>", "EHLO x.example.test", "MAIL FROM:<alice@example.org>",
            "RCPT TO:<nobody@example.test>", "RCPT TO:<bob@example.test>", "NOOP", "RSET",
            "VRFY bob", "BOGUS", "MAIL FROM:<x@@y>", "MAIL FROM:<alice@example.org> NOPE=1")]
        for r in replies:
            if r.code == 250 and len(r.lines) > 1:
                continue    # EHLO keyword lines carry no status code
            assert re.match(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}( |$)", r.raw.decode().splitlines()[0]), \
                r.raw


def test_mail_and_rcpt_syntax_errors(mx):
    with mx.connect() as c:
        c.start()
        c.expect("MAIL <alice@example.org>", 501, "501 5.5.4")
        c.expect("MAIL TO:<alice@example.org>", 501, "501 5.5.4")
        c.expect("MAIL FROM:<alice@@example.org>", 501, "501 5.1.7")
        c.expect("MAIL FROM:<alice@example.org> SIZE=lots", 501, "501 5.5.4")
        c.expect("MAIL FROM:<alice@example.org> FROBNICATE=yes", 555, "555 5.5.4")
        c.expect("MAIL FROM:<alice@example.org>", 250, "250 2.1.0")
        c.expect("RCPT <bob@example.test>", 501, "501 5.5.4")
        c.expect("RCPT FROM:<bob@example.test>", 501, "501 5.5.4")
        c.expect("RCPT TO:<bob@@example.test>", 501, "501 5.1.3")
        c.expect("RCPT TO:<bob@example.test>", 250, "250 2.1.5")


def test_address_forms_rfc5321(mx):
    """Quoted local parts, address literals, case in the domain."""
    with mx.connect() as c:
        c.start()
        for sender in ('<"john doe"@example.org>', "<alice@[127.0.0.1]>", "<alice@[IPv6:::1]>",
                       "<alice@example.org>"):
            c.expect(f"MAIL FROM:{sender}", 250, "250 2.1.0")
            c.expect("RSET", 250)
        c.expect("MAIL FROM:<alice@example.org>", 250)
        c.expect("RCPT TO:<bob@EXAMPLE.TEST>", 250, "250 2.1.5")
        c.expect("DATA", 354)
        c.send("Subject: case\r\n\r\nx\r\n.\r\n")
        assert c.reply().code == 250
    mx.wait_messages("bob@example.test", 1)


# -- recipients -------------------------------------------------------------------------

def test_unknown_local_user_is_rejected(mx):
    with mx.connect() as c:
        c.start()
        c.expect("MAIL FROM:<alice@example.org>", 250)
        r = c.cmd("RCPT TO:<nosuchuser@example.test>")
        assert r.first.startswith("550 5.1.1 <nosuchuser@example.test>: Recipient address rejected"), \
            r.raw
        r = c.cmd("RCPT TO:<nosuchuser@example.org>")
        assert r.first.startswith("550 5.1.1"), r.raw
        c.expect("RCPT TO:<bob@example.test>", 250)


def test_non_local_domain_is_not_relayed(mx):
    with mx.connect() as c:
        c.start()
        c.expect("MAIL FROM:<alice@example.org>", 250)
        r = c.cmd("RCPT TO:<someone@remote.example>")
        assert r.first.startswith("550 5.7.1 Unable to relay for"), r.raw
        assert "someone@remote.example" in r.text
        # subdomains of local domains are not local
        r = c.cmd("RCPT TO:<bob@sub.example.test>")
        assert r.first.startswith("550 5.7.1"), r.raw


@pytest.mark.parametrize("rcpt", [
    "bob%remote.example@example.test",
    "@example.test:bob@remote.example",
    '"bob@remote.example"@example.test',
    "remote.example!bob@example.test",
])
def test_routing_tricks_are_never_accepted(mx, rcpt):
    with mx.connect() as c:
        c.start()
        c.expect("MAIL FROM:<alice@example.org>", 250)
        r = c.cmd(f"RCPT TO:<{rcpt}>")
        assert 500 <= r.code < 600, f"{rcpt}: {r.raw!r}"


def test_postmaster_is_always_accepted(mx):
    with mx.connect() as c:
        c.start()
        c.expect("MAIL FROM:<alice@example.org>", 250)
        for rcpt in ("postmaster@example.test", "postmaster@example.org", "postmaster",
                     "Postmaster", "POSTMASTER@Example.Test"):
            c.expect(f"RCPT TO:<{rcpt}>", 250, "250 2.1.5")


def test_aliases_deliver_to_each_target_once(posthorn):
    p = posthorn(aliases="# test aliases\n"
                         "team@example.test: bob@example.test, carol@example.test\n"
                         "all@example.org: team@example.test, alice@example.org\n")
    with p.connect() as c:
        c.start()
        c.expect("MAIL FROM:<alice@example.org>", 250)
        c.expect("RCPT TO:<team@example.test>", 250, "250 2.1.5")
        c.expect("RCPT TO:<all@example.org>", 250, "250 2.1.5")
        c.expect("RCPT TO:<bob@example.test>", 250, "250 2.1.5")
        c.expect("DATA", 354)
        c.send("Subject: to the team\r\n\r\nhello team\r\n.\r\n")
        assert c.reply().code == 250
    for addr in ("bob@example.test", "carol@example.test", "alice@example.org"):
        [data] = p.wait_messages(addr, 1, settle=0.5)
        assert f"Delivered-To: {addr}\r\n".encode() in data
        assert data.endswith(b"hello team\r\n")


def test_anonymous_no_requires_authentication(posthorn):
    p = posthorn(anonymous=False)
    with p.connect() as c:
        c.start()
        r = c.cmd("MAIL FROM:<alice@example.org>")
        assert r.first.startswith("530 5.7.0 Authentication required"), r.raw
        # the default (no auth block at all) is the same
    q = posthorn(anonymous=None)
    with q.connect() as c:
        c.start()
        r = c.cmd("MAIL FROM:<alice@example.org>")
        assert r.first.startswith("530 5.7.0"), r.raw


def test_quit_closes_and_log_records_disconnect(mx):
    with mx.connect() as c:
        c.start()
        c.expect("QUIT", 221)
        c.wait_closed(5)
    ev = mx.wait_event("disconnect")
    assert ev["session"] == mx.events("connect")[0]["session"]


def test_untrusted_text_cannot_forge_log_fields(mx):
    """A sender address with spaces and '=' in a quoted local part must not
    add key=value fields to the log line (posthorn(8) LOGGING: escape before
    logging)."""
    with mx.connect() as c:
        c.start()
        c.cmd("EHLO evil.example event=accepted id=FAKE")
        qid = queue_id(send_message(c, '"x nrcpt=99 id=FAKE"@example.org', ["bob@example.test"],
                                    "Subject: log\r\n\r\nlog\r\n"))
    ev = mx.wait_event("accepted", id=qid)
    line = ev["_line"]
    assert line.count("nrcpt=") == 1 and line.count(" id=") == 1, line
    assert all(" id=FAKE" not in e["_line"] for e in mx.events())
    assert len(mx.events("accepted")) == 1
