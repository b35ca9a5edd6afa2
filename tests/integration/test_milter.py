"""Milters (the Sendmail mail filter protocol) in the SMTP path: a filter
on Debian's libmilter (tests/milter/testfilter.c) for every reply and
modification, a filter that hangs and one that sends garbage for
on-failure, and a real rspamd (milters.Rspamd) for GTUBE, a clean message
and rspamd stopped.  Each message's fate is what a user sees: the SMTP
reply, and what lands in which Maildir folder."""

import os
import time

import pytest

from helpers import CLIENT_HELO, maildir_files, split_message, wait_until
from milters import GarbageMilter, Rspamd, ScriptedMilter, SilentMilter, TestFilter
from milters import _packet as _pkt

BIG = 10 * 1024 * 1024


@pytest.fixture
def testfilter(posthorn_bin, tmp_path):
    f = TestFilter(os.path.join(os.path.dirname(posthorn_bin), "testfilter"), str(tmp_path))
    yield f
    f.stop()


def milter_server(sockets, on_failure="tempfail", timeout="5s", junk=True, stages=None):
    """The `extra` of an mx server block with these milters in order."""
    out = []
    for i, sock in enumerate(sockets):
        out += [f"milter m{i} {{", f"    socket {sock}", f"    timeout {timeout}",
                "    connect-timeout 2s", f"    on-failure {on_failure}"]
        if stages:
            out.append(f"    stages {stages}")
        out.append("}")
    if junk:
        out.append("junk-header X-Spam yes")
    return "\n".join(out)


def start(posthorn, sockets, **kw):
    return posthorn(servers={"mx": {"extra": milter_server(sockets, **kw)}})


def message(action=None, subject="hello", extra="", body="Hello Bob.\r\n"):
    head = f"From: alice@example.org\r\nTo: bob@example.test\r\nSubject: {subject}\r\n"
    if action:
        head += f"X-Test-Action: {action}\r\n"
    return head + extra + "\r\n" + body


def send(d, rcpts=("bob@example.test",), helo=None, **kw):
    """One message in a session of its own: the first refusal (of the
    greeting, EHLO, MAIL or RCPT), else the reply at the end of data."""
    c = d.connect()
    r = c.reply(timeout=30)
    if r.code != 220:
        return r
    for line, code in ([f"EHLO {helo or CLIENT_HELO}", 250],
                       ["MAIL FROM:<alice@example.org>", 250],
                       *[[f"RCPT TO:<{x}>", 250] for x in rcpts], ["DATA", 354]):
        r = c.cmd(line, timeout=30)
        if r.code != code:
            return r
    c.send(message(**kw).encode() + b".\r\n")
    r = c.reply(timeout=30)
    c.cmd("QUIT")
    return r


def junk(d, addr):
    return os.path.join(d.maildir(addr), ".Junk")


def header(msg, name):
    fields, _ = split_message(msg)
    return [v for n, v in fields if n.lower() == name.lower()]


# ---- replies -----------------------------------------------------------------

def test_continue_delivers_unchanged(posthorn, testfilter):
    d = start(posthorn, [testfilter.socket])
    r = send(d, action="none")
    assert r.code == 250
    [m] = d.wait_messages("bob@example.test", 1)
    assert header(m, "Subject") == [b"hello"]


def test_unix_socket(posthorn, posthorn_bin, tmp_path):
    f = TestFilter(os.path.join(os.path.dirname(posthorn_bin), "testfilter"), str(tmp_path),
                   unix=True)
    try:
        d = start(posthorn, [f.socket])
        assert send(d, action="addheader").code == 250
        [m] = d.wait_messages("bob@example.test", 1)
        assert header(m, "X-Test-Added") == [b"yes"]
    finally:
        f.stop()


def test_accept_reject_tempfail_discard(posthorn, testfilter):
    d = start(posthorn, [testfilter.socket])
    assert send(d, action="accept").code == 250
    r = send(d, action="reject")
    assert r.code == 550 and "5.7.1" in r.text
    r = send(d, action="tempfail")
    assert r.code == 451 and "4.7.1" in r.text
    r = send(d, action="discard")
    assert r.code == 250  # the sender is told it was taken; nothing is kept
    d.wait_messages("bob@example.test", 1)  # only the accepted one
    assert "verdict=discard" in d.log


def test_replycode_is_the_filters_own(posthorn, testfilter):
    d = start(posthorn, [testfilter.socket])
    r = send(d, action="replycode")
    assert r.code == 554 and "Rejected by the test filter" in r.text
    r = send(d, action="multiline")
    assert r.code == 450 and r.lines == ["4.7.0 first line", "4.7.0 second line"]
    assert d.messages("bob@example.test") == []


def test_each_step_answered_when_the_client_takes_it(posthorn, testfilter):
    """A refusal at HELO, MAIL or RCPT answers that command, as Postfix
    does, and the session goes on: a refused recipient is left out, the
    message goes to the others."""
    d = start(posthorn, [testfilter.socket])
    c = d.connect()
    c.greeting()
    assert c.cmd("EHLO reject-helo").code == 550
    r = c.cmd("EHLO tempfail-helo")
    assert r.code == 451 and "4.7.1" in r.text
    c.ehlo()
    r = c.cmd("MAIL FROM:<reject-mail@example.net>")
    assert r.code == 550 and "5.7.1" in r.text
    c.expect("RCPT TO:<bob@example.test>", 503)  # the refused MAIL began nothing
    c.expect("MAIL FROM:<alice@example.org>", 250)
    c.expect("RCPT TO:<bob@example.test>", 250)
    r = c.cmd("RCPT TO:<postmaster@example.test>")
    assert r.code == 550 and "5.7.1" in r.text
    assert c.cmd("RCPT TO:<alice@example.org>").code == 451
    c.expect("DATA", 354)
    c.send(message(action="none").encode() + b".\r\n")
    assert c.reply(timeout=30).code == 250
    c.cmd("QUIT")
    d.wait_messages("bob@example.test", 1)
    assert d.messages("alice@example.org") == []
    assert "nrcpt=1 to=<bob@example.test>" in d.log


def test_pipelined_steps_and_two_messages_over_one_connection(posthorn, posthorn_bin, tmp_path):
    """Pipelined commands are answered in order while the filter is asked
    about each; the session's two messages (and a transaction given up
    with RSET) go over one filter connection, closed after QUIT."""
    events = tmp_path / "filter-events"
    f = TestFilter(os.path.join(os.path.dirname(posthorn_bin), "testfilter"), str(tmp_path),
                   env={"TESTFILTER_EVENTS": str(events)})
    try:
        d = start(posthorn, [f.socket])
        c = d.connect()
        c.greeting()
        c.ehlo()
        c.send("MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.test>\r\n"
               "RCPT TO:<postmaster@example.test>\r\nRCPT TO:<carol@example.test>\r\n"
               "DATA\r\n")
        assert [c.reply(timeout=30).code for _ in range(5)] == [250, 250, 550, 250, 354]
        c.send(message(action="addheader").encode() + b".\r\n")
        assert c.reply(timeout=30).code == 250
        c.expect("MAIL FROM:<alice@example.org>", 250)
        c.expect("RSET", 250)
        c.expect("MAIL FROM:<alice@example.org>", 250)
        c.expect("RCPT TO:<dave@example.test>", 250)
        c.expect("DATA", 354)
        c.send(message(action="addheader").encode() + b".\r\n")
        assert c.reply(timeout=30).code == 250
        c.cmd("QUIT")
        for rcpt in ("bob@example.test", "carol@example.test", "dave@example.test"):
            [m] = d.wait_messages(rcpt, 1)
            assert header(m, "X-Test-Added") == [b"yes"]
        # (the fixture's probe of the filter's port is a close without connect)
        session = lambda: events.read_text().split()[events.read_text().split().index("connect"):]
        wait_until(lambda: "close" in session(), 10, what="the filter's close")
        lines = session()
        assert lines.count("connect") == 1 and lines.count("close") == 1, lines
        assert "abort" in lines  # the RSET
    finally:
        f.stop()


@pytest.mark.parametrize("mode", ["reject", "tempfail"])
def test_refused_at_connect(posthorn, posthorn_bin, tmp_path, mode):
    """A filter's refusal of the connection is the greeting: 554 and then
    only QUIT, or 421 and the connection closed."""
    f = TestFilter(os.path.join(os.path.dirname(posthorn_bin), "testfilter"), str(tmp_path),
                   env={"TESTFILTER_CONNECT": mode})
    try:
        d = start(posthorn, [f.socket])
        c = d.connect()
        r = c.reply(timeout=30)
        if mode == "reject":
            assert r.code == 554 and "5.7.1" in r.text
            c.expect("EHLO client.example.test", 503)
            c.expect("QUIT", 221)
        else:
            assert r.code == 421 and "4.7.0" in r.text
            assert c.sock.recv(100) == b""  # closed
    finally:
        f.stop()


# ---- modifications -------------------------------------------------------------

def test_header_changes_in_the_durable_copy(posthorn, testfilter):
    d = start(posthorn, [testfilter.socket])
    r = send(d, action="addheader,insheader,chgheader,delheader",
             extra="X-Test-Remove: please\r\n")
    assert r.code == 250
    [m] = d.wait_messages("bob@example.test", 1)
    fields, body = split_message(m)
    names = [n for n, _ in fields]
    assert header(m, "X-Test-Added") == [b"yes"]
    # inserted at the top: before our own Received: field (after the
    # delivery's Return-Path and Delivered-To)
    assert names.index("X-Test-First") < names.index("Received")
    assert header(m, "Subject") == [b"changed by the filter"]
    assert header(m, "X-Test-Remove") == []
    assert body == b"Hello Bob.\r\n"


def test_envelope_changes(posthorn, testfilter):
    d = start(posthorn, [testfilter.socket])
    r = send(d, rcpts=("bob@example.test", "dave@example.test"), action="chgfrom,addrcpt,delrcpt")
    assert r.code == 250
    [m] = d.wait_messages("bob@example.test", 1)
    assert header(m, "Return-Path") == [b"<changed@example.net>"]
    d.wait_messages("carol@example.test", 1)   # added
    assert d.messages("dave@example.test") == []  # deleted


def test_macros_reach_the_filter(posthorn, testfilter):
    d = start(posthorn, [testfilter.socket])
    assert send(d, action="macros").code == 250
    [m] = d.wait_messages("bob@example.test", 1)
    [macros] = header(m, "X-Test-Macros")
    text = macros.decode()
    assert "{client_addr}=127.0.0.1" in text
    assert "j=mx.example.test" in text
    assert "{daemon_name}=mx" in text
    assert "{mail_addr}=alice@example.org" in text
    assert "{rcpt_addr}=bob@example.test" in text


def test_body_replaced(posthorn, testfilter):
    d = start(posthorn, [testfilter.socket])
    assert send(d, action="replbody,progress").code == 250
    [m] = d.wait_messages("bob@example.test", 1)
    _, body = split_message(m)
    assert body == b"The body was replaced.\r\n"


def test_body_replaced_with_10_mib(posthorn, testfilter):
    d = posthorn(servers={"mx": {"extra": milter_server([testfilter.socket], timeout="30s"),
                                 "limits": {"message-size": "20M"}}})
    t0 = time.monotonic()
    assert send(d, action="replbody-big").code == 250
    [m] = d.wait_messages("bob@example.test", 1, timeout=30)
    _, body = split_message(m)
    assert len(body) >= BIG - 100 and body.startswith(b"BIG-") and body.count(b"\r\n") > 100000
    assert time.monotonic() - t0 < 60


def test_body_replacement_over_the_message_size_limit_fails(posthorn, testfilter):
    d = posthorn(servers={"mx": {"extra": milter_server([testfilter.socket], timeout="30s"),
                                 "limits": {"message-size": "1M"}}})
    r = send(d, action="replbody-big")
    assert r.code == 451  # on-failure tempfail: the filter broke a bound
    assert "replaced body too long" in d.log
    assert d.messages("bob@example.test") == []


# ---- spam into Junk -----------------------------------------------------------

def test_quarantine_goes_to_junk(posthorn, testfilter):
    d = start(posthorn, [testfilter.socket])
    assert send(d, action="quarantine").code == 250
    wait_until(lambda: len(maildir_files(junk(d, "bob@example.test"))) == 1, 10,
               what="a message in Junk")
    assert d.messages("bob@example.test") == []  # not in INBOX
    with open(os.path.join(junk(d, "bob@example.test"), "posthorn-special-use")) as f:
        assert "\\Junk" in f.read()


def test_junk_header_goes_to_junk(posthorn, testfilter):
    d = start(posthorn, [testfilter.socket])
    assert send(d, action="none", extra="X-Spam: Yes\r\n").code == 250
    wait_until(lambda: len(maildir_files(junk(d, "bob@example.test"))) == 1, 10,
               what="a message in Junk")
    assert send(d, action="none", extra="X-Spam: no\r\n").code == 250
    d.wait_messages("bob@example.test", 1)


# ---- failures ----------------------------------------------------------------------

# a filter that cannot be reached fails at the connection: its on-failure
# is the greeting (421 for tempfail, 554 for reject, as Postfix answers)
@pytest.mark.parametrize("on_failure,code", [("tempfail", 421), ("reject", 554), ("accept", 250)])
def test_filter_down(posthorn, testfilter, on_failure, code):
    testfilter.stop()
    d = start(posthorn, [testfilter.socket], on_failure=on_failure)
    assert send(d, action="none").code == code
    assert "event=milter-error" in d.log


def test_filter_that_hangs_times_out(posthorn):
    silent = SilentMilter()
    try:
        d = start(posthorn, [silent.socket], timeout="1s")
        t0 = time.monotonic()
        assert send(d, action="none").code == 421
        assert time.monotonic() - t0 < 10
        assert 'reason="timeout"' in d.log
    finally:
        silent.stop()


def test_filter_that_sends_garbage(posthorn):
    bad = GarbageMilter()
    try:
        d = start(posthorn, [bad.socket], on_failure="reject")
        assert send(d, action="none").code == 554
        assert 'reason="reply too long"' in d.log
        assert d.messages("bob@example.test") == []
    finally:
        bad.stop()


def test_two_milters_in_order(posthorn, testfilter):
    """The second filter sees what the first changed (the message is
    written again between them): both add their header."""
    d = start(posthorn, [testfilter.socket, testfilter.socket])
    assert send(d, action="addheader").code == 250
    [m] = d.wait_messages("bob@example.test", 1)
    assert header(m, "X-Test-Added") == [b"yes", b"yes"]


# ---- rspamd ---------------------------------------------------------------------

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
# rspamd's test pattern for the "add header" action (enable_test_patterns)
GTUBE_ADD_HEADER = "Y" + GTUBE[1:]


@pytest.fixture
def rspamd(tmp_path, default_dns):
    r = Rspamd(str(tmp_path), default_dns.address)
    yield r
    r.close()


def test_rspamd_gtube_rejected_clean_delivered_with_its_headers(posthorn, rspamd):
    d = start(posthorn, [rspamd.socket], timeout="20s")
    r = send(d, subject="spam", body=GTUBE + "\r\n")
    # rspamd's verdict for GTUBE is "reject" (its score is the reject score)
    assert r.code == 554 and r.text.startswith("5.7.1 Gtube pattern"), r.raw
    r = send(d, subject="Lunch on Friday",
             body="Hi Bob,\r\n\r\nshall we have lunch on Friday at noon?\r\n\r\nAlice\r\n")
    assert r.code == 250
    [m] = d.wait_messages("bob@example.test", 1)
    assert header(m, "X-Spamd-Result"), m[:2000]
    assert header(m, "X-Rspamd-Queue-Id")
    assert "milter=m0" in d.log


def test_rspamd_stopped_on_failure(posthorn, rspamd):
    rspamd.stop()
    for on_failure, code in (("tempfail", 421), ("accept", 250), ("reject", 554)):
        d = start(posthorn, [rspamd.socket], on_failure=on_failure)
        assert send(d, action="none").code == code, on_failure


def test_rspamd_add_header_goes_to_junk(posthorn, rspamd):
    """rspamd's "add header" verdict is its X-Spam: Yes; junk-header X-Spam
    yes puts the message into Junk, not INBOX."""
    d = start(posthorn, [rspamd.socket], timeout="20s")
    r = send(d, subject="maybe spam", body=GTUBE_ADD_HEADER + "\r\n")
    assert r.code == 250, r.raw
    folder = junk(d, "bob@example.test")
    wait_until(lambda: len(maildir_files(folder)) == 1, 10, what="a message in Junk")
    with open(maildir_files(folder)[0], "rb") as f:
        m = f.read().replace(b"\n", b"\r\n")
    assert header(m, "X-Spam") == [b"Yes"]
    assert d.messages("bob@example.test") == []


def test_junk_header_alone_pop3_sees_inbox_imap_sees_junk(posthorn):
    """junk-header without any milter (a filter in front of posthorn may
    have added the field): the message is in Junk; POP3 sees INBOX only,
    IMAP lists Junk with the \\Junk special use."""
    import imaplib
    import poplib
    from helpers import HOST
    login = "auth {\n    plaintext-requires-tls no\n}"
    d = posthorn(servers={"mx": {"extra": "junk-header X-Spam yes"},
                          "pop": {"anonymous": None, "extra": "protocol pop3\n" + login},
                          "imap": {"anonymous": None, "extra": "protocol imap\n" + login}})
    assert send(d, extra="X-Spam: YES\r\n").code == 250
    assert send(d, subject="not spam").code == 250
    d.wait_messages("bob@example.test", 1)
    wait_until(lambda: len(maildir_files(junk(d, "bob@example.test"))) == 1, 10,
               what="a message in Junk")
    pop = poplib.POP3(HOST, d.port("pop"), timeout=10)
    pop.user("bob@example.test")
    pop.pass_("bob-Secret-1")
    assert pop.stat()[0] == 1
    pop.quit()
    im = imaplib.IMAP4(HOST, d.port("imap"), timeout=10)
    im.login("bob@example.test", "bob-Secret-1")
    typ, lines = im.list()
    junk_lines = [x for x in lines if x.endswith(b"Junk") or x.endswith(b'"Junk"')]
    assert junk_lines and b"\\Junk" in junk_lines[0], lines
    typ, data = im.select("Junk")
    assert typ == "OK" and data == [b"1"]
    im.logout()


def test_header_block_over_the_bound(posthorn, testfilter):
    """A header block over 1 MiB: the filters get the fields within the
    bound as header and the rest as body (never a bypass of the filter),
    and the delivered message keeps every field in its place."""
    d = start(posthorn, [testfilter.socket])
    pad = "".join(f"X-Pad-{i}: {'p' * 900}\r\n" for i in range(1300))  # ~1.2 MB
    assert send(d, action="addheader", extra=pad).code == 250
    [m] = d.wait_messages("bob@example.test", 1)
    fields, body = split_message(m)
    names = [n for n, _ in fields]
    assert names.count("X-Test-Added") == 1
    assert sum(1 for n in names if n.startswith("X-Pad-")) == 1300
    assert body == b"Hello Bob.\r\n"


def test_stages_left_out_are_not_sent(posthorn, testfilter):
    """Without helo and data in `stages` the filter never sees the HELO it
    would refuse nor the header field that asks it for a change."""
    d = start(posthorn, [testfilter.socket], stages="connect mail rcpt")
    assert send(d, helo="reject-helo", action="addheader").code == 250
    [m] = d.wait_messages("bob@example.test", 1)
    assert header(m, "X-Test-Added") == []


@pytest.mark.parametrize("script,reason,code", [
    # a header value that would start a new field (a Bcc: smuggled in)
    (dict(eom=_pkt(b"h", b"X-Note\0a\r\nBcc: evil@example.net\0") + _pkt(b"c")),
     "bad header field value", 451),
    # a change the filter did not ask for in the negotiation
    (dict(eom=_pkt(b"h", b"X-Note\0yes\0") + _pkt(b"c"), actions=0),
     "modification not negotiated", 451),
    # a change offered before the end of the message, where none may come:
    # at the first step, the connection (421 at the greeting)
    (dict(eom=_pkt(b"c"), step=_pkt(b"h", b"X-Early\0yes\0")), "unexpected reply", 421),
])
def test_filter_replies_are_never_trusted(posthorn, script, reason, code):
    fake = ScriptedMilter(**script)
    try:
        d = start(posthorn, [fake.socket])
        assert send(d, action="none").code == code
        assert reason in d.log
        assert d.messages("bob@example.test") == []
    finally:
        fake.stop()


def test_auth_macro_after_login(posthorn, testfilter):
    import base64
    auth = "auth {\n    anonymous yes\n    plaintext-requires-tls no\n}\n"
    d = posthorn(servers={"mx": {"anonymous": None,
                                 "extra": auth + milter_server([testfilter.socket])}})
    c = d.connect()
    c.greeting()
    c.ehlo()
    token = base64.b64encode(b"\0bob@example.test\0bob-Secret-1").decode()
    c.expect(f"AUTH PLAIN {token}", 235)
    c.expect("MAIL FROM:<bob@example.test>", 250)
    c.expect("RCPT TO:<carol@example.test>", 250)
    c.expect("DATA", 354)
    c.send(message(action="macros").encode() + b".\r\n")
    assert c.reply(timeout=30).code == 250
    [m] = d.wait_messages("carol@example.test", 1)
    [macros] = header(m, "X-Test-Macros")
    assert "{auth_authen}=bob@example.test" in macros.decode()


def test_tls_macros_after_starttls(posthorn, posthorn_bin, testfilter, tmp_path):
    from authutil import client_context, starttls
    from conftest import run_cli
    from helpers import HOST
    res = run_cli(posthorn_bin, ["cert", "new", "--hostname", HOST, "--out", str(tmp_path)])
    assert res.returncode == 0, res.stderr
    tls = (f"tls {{\n    certificate {tmp_path}/{HOST}.crt\n    key {tmp_path}/{HOST}.key\n}}\n")
    d = posthorn(servers={"mx": {"extra": tls + milter_server([testfilter.socket])}})
    c = d.connect()
    c.greeting()
    c.ehlo()
    starttls(c, client_context(f"{tmp_path}/{HOST}.crt"))
    c.ehlo()
    c.expect("MAIL FROM:<alice@example.org>", 250)
    c.expect("RCPT TO:<bob@example.test>", 250)
    c.expect("DATA", 354)
    c.send(message(action="macros").encode() + b".\r\n")
    r = c.reply(timeout=30)
    assert r.code == 250
    [m] = d.wait_messages("bob@example.test", 1)
    text = header(m, "X-Test-Macros")[0].decode()
    assert "{tls_version}=TLSv1.3" in text and "{cipher}=TLS_" in text, text
    assert f"i={r.text.split()[-1]}" in text  # the queue ID of the 250
