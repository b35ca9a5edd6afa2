"""What real clients tripped on in SMTP: a text line over 1,000 octets
just before the end of data (RFC 5321 §4.5.3.1.6: refused with 554 5.6.0
at once, the session still usable), the Received: field of SMTPUTF8 mail
(RFC 6531 §4.3: UTF8SMTP, UTF8SMTPS, UTF8SMTPA, UTF8SMTPSA), EXPN
(502 5.5.1, not 500), and MAIL's AUTH= parameter (RFC 4954 §5, xtext of
RFC 3461 §4).

Every read is bounded by a short timeout: a server that misses the end of
data fails the test in seconds instead of hanging it.
"""

import select
import smtplib
import time

import pytest

from conftest import DEFAULT_USERS, run_cli
from helpers import CLIENT_HELO, HOST, queue_id, send_message, split_message
from tlsutil import client_context

BOB, BOB_PW = "bob@example.test", DEFAULT_USERS["bob@example.test"]
CAROL = "carol@example.test"

REPLY_TIMEOUT = 5.0     # a refusal or an answer comes well within this


def _nothing_sent(c, wait=0.2):
    """Has the server kept quiet (for `wait` seconds)?"""
    if c.buf:
        return False
    return not select.select([c.sock], [], [], wait)[0]


# -- a long text line, then the end of data --------------------------------------------

# Where the over-long line stands in the message text.
POSITIONS = {
    "first": (b"", b"\r\nSubject: t\r\n\r\nbody\r\n"),
    "middle": (b"Subject: t\r\n\r\nbefore\r\n", b"\r\nafter\r\n"),
    "last": (b"Subject: t\r\n\r\n", b"\r\n"),
    "alone": (b"", b"\r\n"),
}


def _pieces(before, line, after, split):
    """The message text and the end of data, in one write or in several:
    cut inside the long line, between its CR and LF, and before the dot."""
    whole = before + line + after + b".\r\n"
    if not split:
        return [whole]
    cr = len(before) + len(line) + 1            # just after the long line's CR
    dot = len(whole) - 3
    cuts = sorted({len(before) + len(line) // 2, cr, dot})
    return [whole[a:b] for a, b in zip([0] + cuts, cuts + [len(whole)])]


def _refused_at_the_dot(c, pieces):
    """Send the pieces with pauses (separate reads for the server): no
    answer before the last one, then 554 5.6.0 within REPLY_TIMEOUT."""
    for piece in pieces[:-1]:
        c.send(piece)
        assert _nothing_sent(c, 0.1), f"answer before the end of data: {c.buf!r}"
    c.send(pieces[-1])
    t0 = time.monotonic()
    r = c.reply(REPLY_TIMEOUT)
    assert r.first.startswith("554 5.6.0"), r.raw
    return time.monotonic() - t0


def _then_usable(p, c):
    """RSET, then a new transaction whose last text line is exactly at the
    limit (998 octets and CRLF): accepted and delivered whole."""
    c.expect("RSET", 250, "250 2.0.0")
    at_limit = b"k" * 998
    qid = queue_id(send_message(c, "alice@example.org", [BOB],
                                b"Subject: after the long line\r\n\r\n" + at_limit + b"\r\n"))
    [data] = p.wait_messages(BOB, 1)
    assert f"id {qid}".encode() in data
    assert split_message(data)[1] == at_limit + b"\r\n"


@pytest.mark.parametrize("split", [False, True], ids=["one-write", "several-writes"])
@pytest.mark.parametrize("length", [1001, 64 * 1024], ids=["1001", "64KiB"])
def test_long_line_then_end_of_data_refused_at_once(mx, length, split):
    """Wherever the over-long line stands (first, middle, last, alone),
    554 5.6.0 comes as soon as the dot arrives, and RSET plus a new
    message work afterwards."""
    with mx.connect(timeout=REPLY_TIMEOUT) as c:
        c.start()
        for where, (before, after) in POSITIONS.items():
            c.expect("MAIL FROM:<alice@example.org>", 250)
            c.expect(f"RCPT TO:<{BOB}>", 250)
            c.expect("DATA", 354)
            took = _refused_at_the_dot(c, _pieces(before, b"L" * length, after, split))
            assert took < REPLY_TIMEOUT, (where, took)
            c.expect("RSET", 250, "250 2.0.0")
        _then_usable(mx, c)
    assert len(mx.events("accepted")) == 1
    assert len(mx.events("reject")) == len(POSITIONS)
    assert {e["reason"] for e in mx.events("reject")} == {"long-line"}


def test_megabyte_line_trickled_then_end_of_data(mx):
    """1 MiB without a line end, written in pieces over a second, then
    CRLF and the dot: the refusal comes at once, the session goes on."""
    chunk = b"M" * (64 * 1024)
    with mx.connect(timeout=REPLY_TIMEOUT) as c:
        c.start()
        c.expect("MAIL FROM:<alice@example.org>", 250)
        c.expect(f"RCPT TO:<{BOB}>", 250)
        c.expect("DATA", 354)
        c.send(b"Subject: huge\r\n\r\n")
        for i in range(16):
            c.send(chunk)
            if i % 4 == 3:
                assert _nothing_sent(c, 0.25), f"answer in the middle of a line: {c.buf!r}"
        c.send(b"\r\n.\r\n")
        r = c.reply(REPLY_TIMEOUT)
        assert r.first.startswith("554 5.6.0"), r.raw
        _then_usable(mx, c)


def test_long_line_ended_by_bare_lf_does_not_end_data(mx):
    """The dropped line's ending counts: after a bare LF, ".\\r\\n" is text
    (no SMTP smuggling), and the real end still gives the refusal."""
    with mx.connect(timeout=REPLY_TIMEOUT) as c:
        c.start()
        c.expect("MAIL FROM:<alice@example.org>", 250)
        c.expect(f"RCPT TO:<{BOB}>", 250)
        c.expect("DATA", 354)
        c.send(b"Subject: t\r\n\r\n" + b"L" * 2000 + b"\n.\r\n")
        assert _nothing_sent(c, 0.5), f"a dot after a bare LF ended the data: {c.buf!r}"
        c.send(b"tail\r\n" + b"L" * 2000 + b"\r\n.\r\n")
        r = c.reply(REPLY_TIMEOUT)
        assert r.first.startswith("554 5.6.0"), r.raw
        _then_usable(mx, c)


# -- Received: of SMTPUTF8 mail --------------------------------------------------------

def _received(data):
    fields, _ = split_message(data)
    return [v.decode() for k, v in fields if k.lower() == "received"]


@pytest.fixture(scope="module")
def cert(posthorn_bin, tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 (Python's ssl checks it)."""
    d = tmp_path_factory.mktemp("cert")
    res = run_cli(posthorn_bin, ["cert", "new", "--hostname", HOST, "--out", str(d)])
    assert res.returncode == 0, f"cert new: {res.returncode} {res.stderr}"
    return {"crt": str(d / f"{HOST}.crt"), "key": str(d / f"{HOST}.key")}


def _servers(cert):
    """`mx`: anonymous, STARTTLS offered; `sub`: login required, PLAIN
    allowed before TLS too (so that UTF8SMTPA can be seen)."""
    tls = f"tls {{\n    certificate {cert['crt']}\n    key {cert['key']}\n}}"
    return {
        "mx": {"anonymous": True, "extra": tls},
        "sub": {"anonymous": None,
                "extra": tls + "\nauth {\n    anonymous no\n    plaintext-requires-tls no\n}"},
    }


def _smtp(p, name):
    s = smtplib.SMTP(HOST, p.port(name), local_hostname=CLIENT_HELO, timeout=REPLY_TIMEOUT)
    p.conns.append(s)
    return s


MSG = "From: {frm}\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nbody\r\n"


@pytest.mark.parametrize("tls,login,expected", [
    (False, False, "UTF8SMTP"),
    (True, False, "UTF8SMTPS"),
    (False, True, "UTF8SMTPA"),
    (True, True, "UTF8SMTPSA"),
])
def test_received_names_utf8smtp(posthorn, cert, tls, login, expected):
    """RFC 6531 §4.3 with SMTPUTF8; RFC 3848's ESMTP names without it."""
    p = posthorn(servers=_servers(cert))
    for utf8 in (True, False):
        s = _smtp(p, "sub" if login else "mx")
        if tls:
            s.starttls(context=client_context(cert["crt"]))
        s.ehlo()
        assert s.has_extn("smtputf8")
        # (with a login server beside it, a local sender must log in)
        frm = BOB if login else "someone@elsewhere.example"
        if login:
            s.login(BOB, BOB_PW)
        subject = f"{expected} utf8={utf8}"
        s.sendmail(frm, [CAROL], MSG.format(frm=frm, to=CAROL, subject=subject).encode(),
                   mail_options=["SMTPUTF8"] if utf8 else [])
        s.quit()
    msgs = p.wait_messages(CAROL, 2)
    by_subject = {}
    for m in msgs:
        fields, _ = split_message(m)
        by_subject[dict(fields)["Subject"].decode()] = _received(m)[0]
    with_utf8 = by_subject[f"{expected} utf8=True"]
    without = by_subject[f"{expected} utf8=False"]
    plain_name = expected.replace("UTF8SMTP", "ESMTP")
    assert f" with {expected} id " in with_utf8, with_utf8
    assert f" with {plain_name} id " in without, without


# -- EXPN ------------------------------------------------------------------------------

def test_expn_not_implemented_and_session_goes_on(mx):
    with mx.connect(timeout=REPLY_TIMEOUT) as c:
        c.greeting()
        # before EHLO and after, inside a transaction too
        c.expect("EXPN staff", 502, "502 5.5.1")
        c.ehlo()
        c.expect("EXPN postmaster@example.test", 502, "502 5.5.1")
        c.expect("VRFY bob@example.test", 252, "252 2.5.2")
        c.expect("MAIL FROM:<alice@example.org>", 250)
        c.expect("EXPN all", 502, "502 5.5.1")
        c.expect(f"RCPT TO:<{BOB}>", 250)
        c.expect("DATA", 354)
        c.send(b"Subject: after EXPN\r\n\r\nhi\r\n.\r\n")
        assert c.reply().code == 250
    mx.wait_messages(BOB, 1)


# -- MAIL ... AUTH= --------------------------------------------------------------------

@pytest.mark.parametrize("param", ["AUTH=<>", "auth=<>", "AUTH=+3C+3E",
                                   "AUTH=somebody@example.org", "AUTH=e+3Dmc2@example.org"])
def test_mail_auth_param_accepted_from_anyone(mx, param):
    """EHLO offers AUTH, so every client may send AUTH= (RFC 4954 §5); an
    unauthenticated client's mailbox is taken as AUTH=<>."""
    with mx.connect(timeout=REPLY_TIMEOUT) as c:
        c.start()
        c.expect(f"MAIL FROM:<alice@example.org> {param}", 250, "250 2.1.0")
        c.expect(f"RCPT TO:<{BOB}>", 250)
        c.expect("DATA", 354)
        c.send(b"Subject: auth param\r\n\r\nhi\r\n.\r\n")
        assert c.reply().code == 250
    mx.wait_messages(BOB, 1)


@pytest.mark.parametrize("param", ["AUTH=+", "AUTH=a+4@b.example", "AUTH=+ZZ@b.example",
                                   "AUTH=a+00b@example.org", "AUTH=not-a-mailbox"])
def test_mail_auth_param_malformed(mx, param):
    with mx.connect(timeout=REPLY_TIMEOUT) as c:
        c.start()
        c.expect(f"MAIL FROM:<alice@example.org> {param}", 501, "501 5.5.4")
        # nothing half-done: the next MAIL is the first of a transaction
        c.expect("MAIL FROM:<alice@example.org> AUTH=<>", 250, "250 2.1.0")


def test_mail_auth_param_from_an_authenticated_client(posthorn, cert):
    """A submission client that relays with AUTH=<its user> (as MTAs do)."""
    p = posthorn(servers=_servers(cert))
    s = _smtp(p, "sub")
    s.starttls(context=client_context(cert["crt"]))
    s.ehlo()
    s.login(BOB, BOB_PW)
    for value in (f"<{BOB}>", BOB, "<>"):
        code, text = s.mail(BOB, [f"AUTH={value}"])
        assert (code, text[:5]) == (250, b"2.1.0"), (value, code, text)
        assert s.rcpt(CAROL)[0] == 250
        code, _ = s.data(MSG.format(frm=BOB, to=CAROL, subject=value).encode())
        assert code == 250
    s.quit()
    msgs = p.wait_messages(CAROL, 3)
    for m in msgs:
        assert f"(authenticated as {BOB})" in _received(m)[0]
