"""Mail collection over IMAP4rev1 (RFC 3501 and the
extensions IDLE 2177, UIDPLUS 4315, MOVE 6851, SPECIAL-USE 6154, CHILDREN
3348) with Python's imaplib over STARTTLS and over implicit TLS, as a user's
mail program would use it: LOGIN, CAPABILITY, LIST with the special-use
folders, SELECT, FETCH of a multipart message with attachments delivered
by SMTP (ENVELOPE and BODYSTRUCTURE checked field by field, sections,
\\Seen), STORE with the flags visible in the Maildir file names, COPY and
MOVE to Trash with COPYUID, EXPUNGE, APPEND with APPENDUID, SEARCH by
header and by body text (a quoted-printable ISO-8859-1 body searched in
UTF-8), the UID commands, IDLE seeing a message that SMTP delivers
during the IDLE, and the end-to-end story: submission with STARTTLS and
AUTH, collection over IMAPS, nothing readable on either leg of the wire.

Every connection goes to 127.0.0.1 under a certificate made for that
address; the test mail goes in through the daemon's own SMTP server.
"""

import base64
import email.header
import imaplib
import os
import re
import smtplib
import time

import pytest

from helpers import CLIENT_HELO, HOST, free_port, wait_until
from imaputil import (BOB, BOB_PW, CAROL, CAROL_PW, DAVE, DAVE_PW, FLAG_LETTERS,
                      SPECIAL_USE, client_ctx, code_of, connect, crlf, deliver, fetch_responses,
                      folder_files, folder_path, imap_spec, imaplib_fetch, info_flags,
                      login_select, make_cert, parse_data, start_imap, text, uid_set)
from tlsutil import RecordingProxy, reveals

MODES = ["starttls", "imaps"]


# -- fixtures ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cert(posthorn_bin, tmp_path_factory):
    return make_cert(posthorn_bin, tmp_path_factory.mktemp("imap-cert"))


@pytest.fixture(scope="module")
def ctx(cert):
    return client_ctx(cert)


@pytest.fixture
def imap(posthorn, cert):
    """TLS configured, secure defaults (LOGIN only inside TLS)."""
    return start_imap(posthorn, cert)


class _Client:
    """An imaplib client the daemon fixture closes at teardown (imaplib's
    own close() is the IMAP CLOSE command, so it is not handed over)."""

    def __init__(self, m):
        self.m = m

    def close(self):
        try:
            self.m.shutdown()
        except OSError:
            pass


def imaplib_client(p, ctx, mode, login=(BOB, BOB_PW)):
    if mode == "imaps":
        m = imaplib.IMAP4_SSL(HOST, p.imaps_port, ssl_context=ctx, timeout=30)
    else:
        m = imaplib.IMAP4(HOST, p.port("imap"), timeout=30)
        assert "STARTTLS" in m.capabilities and "LOGINDISABLED" in m.capabilities, m.capabilities
        m.starttls(ssl_context=ctx)
    p.conns.append(_Client(m))
    if login:
        typ, data = m.login(*login)
        assert typ == "OK", data
    return m


def ok(res):
    typ, data = res
    assert typ == "OK", (typ, data)
    return data


def listing(m, ref='""', pattern='"*"', cmd="LIST"):
    """LIST/LSUB -> {name: (set of attributes, delimiter)}."""
    typ, data = m._simple_command(cmd, ref, pattern)
    assert typ == "OK", data
    typ, data = m._untagged_response(typ, data, cmd)
    out = {}
    for raw in data:
        if raw is None:
            continue
        if isinstance(raw, tuple):
            raw = raw[0] + b"\r\n" + raw[1]
        attrs, delim, name = parse_data(raw)
        out[text(name)] = ({a.lower() for a in attrs}, text(delim))
    return out


def logout(m):
    """imaplib's LOGOUT returns the untagged BYE (RFC 3501 §6.1.3)."""
    typ, data = m.logout()
    assert typ == "BYE", (typ, data)


def internaldate(value):
    """An INTERNALDATE string -> seconds since the epoch."""
    t = imaplib.Internaldate2tuple(b'INTERNALDATE "' + value + b'"')
    assert t, value
    return time.mktime(t)


def search(m, *criteria, uid=False, charset=None, literal=None):
    if literal is not None:
        m.literal = literal
    if uid:
        args = (["CHARSET", charset] if charset else []) + list(criteria)
        data = ok(m.uid("SEARCH", *args))
    else:
        data = ok(m.search(charset, *criteria))
    return sorted(int(x) for x in b" ".join(d for d in data if d).split())


# -- the test messages -------------------------------------------------------------------------

def b64_lines(data):
    enc = base64.b64encode(data).decode()
    return "".join(enc[i:i + 76] + "\r\n" for i in range(0, len(enc), 76))


TEXT_PART = "Hello Carol,\r\n\r\nthe report is attached. Gr=C3=BC=C3=9Fe, Bob\r\n"
HTML_PART = "<p>Hello Carol,</p>\r\n<p>the report is attached.</p>\r\n"
PDF_PART = b64_lines(b"%PDF-1.4\n" + bytes(range(256)) * 9 + b"\n%%EOF\n")
PNG_PART = b64_lines(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
INNER_MSG = ("From: Alice <alice@example.org>\r\n"
             "To: bob@example.test\r\n"
             "Subject: the original\r\n"
             "Date: Sun, 15 Nov 2026 08:00:00 +0000\r\n"
             "Message-ID: <orig.1@example.org>\r\n"
             "Content-Type: text/plain; charset=us-ascii\r\n"
             "\r\n"
             "original body line one\r\n"
             "original body line two\r\n")
INNER_BODY = "original body line one\r\noriginal body line two\r\n"

MIXED = "=_mixed_b1"
ALT = "=_alt_b2"


def multipart_message(token):
    """A message as a mail program writes it: text and HTML alternatives,
    a PDF attachment, an inline image with a Content-ID, a forwarded
    message; every part's body ends with a line end before its boundary."""
    return (
        'From: "Bob Sender" <bob@example.test>\r\n'
        "To: Carol <carol@example.test>, dave@example.test\r\n"
        "Cc: =?utf-8?q?J=C3=B6rg?= <joerg@example.org>\r\n"
        "Reply-To: Replies <replies@example.org>\r\n"
        "Subject: =?utf-8?q?Quarterly_report_Gr=C3=BC=C3=9Fe?=\r\n"
        "Date: Mon, 16 Nov 2026 09:30:00 +0100\r\n"
        f"Message-ID: <{token}@example.test>\r\n"
        "In-Reply-To: <parent.1@example.test>\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/mixed; boundary="{MIXED}"\r\n'
        "\r\n"
        "This is a multi-part message in MIME format.\r\n"
        f"--{MIXED}\r\n"
        f'Content-Type: multipart/alternative; boundary="{ALT}"\r\n'
        "\r\n"
        f"--{ALT}\r\n"
        "Content-Type: text/plain; charset=utf-8; format=flowed\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n"
        "\r\n"
        f"{TEXT_PART}\r\n"
        f"--{ALT}\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 7bit\r\n"
        "\r\n"
        f"{HTML_PART}\r\n"
        f"--{ALT}--\r\n"
        "\r\n"
        f"--{MIXED}\r\n"
        'Content-Type: application/pdf; name="report.pdf"\r\n'
        "Content-Description: Quarterly report\r\n"
        'Content-Disposition: attachment; filename="report.pdf"\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n"
        f"{PDF_PART}\r\n"
        f"--{MIXED}\r\n"
        'Content-Type: image/png; name="dot.png"\r\n'
        "Content-ID: <dot.1@example.test>\r\n"
        'Content-Disposition: inline; filename="dot.png"\r\n'
        "Content-Language: en\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n"
        f"{PNG_PART}\r\n"
        f"--{MIXED}\r\n"
        "Content-Type: message/rfc822\r\n"
        'Content-Disposition: attachment; filename="original.eml"\r\n'
        "Content-Transfer-Encoding: 7bit\r\n"
        "\r\n"
        f"{INNER_MSG}\r\n"
        f"--{MIXED}--\r\n")


# -- checking ENVELOPE and BODYSTRUCTURE ---------------------------------------------------------

def same_ci(got, want):
    return isinstance(got, bytes) and got.decode().lower() == want.lower()


def rfc2047(value):
    return str(email.header.make_header(email.header.decode_header(value)))


def check_address_list(got, want, what):
    """want: list of (name, mailbox, host); the route (adl) must be NIL."""
    if want is None:
        assert got is None, f"{what}: {got!r} instead of NIL"
        return
    assert isinstance(got, list) and len(got) == len(want), f"{what}: {got!r}"
    for addr, (name, mbox, host) in zip(got, want):
        assert len(addr) == 4, f"{what}: {addr!r}"
        if name is not None and "=?" in name:
            # an RFC 2047 display name: what the client shows must be the
            # same (the server may keep or re-encode the encoded words)
            assert isinstance(addr[0], bytes) and addr[0].isascii(), f"{what} name: {addr!r}"
            assert rfc2047(addr[0].decode()) == rfc2047(name), f"{what} name: {addr!r}"
        else:
            assert addr[0] == (name.encode() if name is not None else None), \
                f"{what} name: {addr!r}"
        assert addr[1] is None, f"{what} adl: {addr!r}"
        assert addr[2] == mbox.encode(), f"{what} mailbox: {addr!r}"
        assert addr[3] == host.encode(), f"{what} host: {addr!r}"


def check_envelope(env, token):
    assert isinstance(env, list) and len(env) == 10, env
    assert env[0] == b"Mon, 16 Nov 2026 09:30:00 +0100", env[0]
    # RFC 3501 §7.4.2: the header's own text; the client decodes RFC 2047 words
    assert env[1] == b"=?utf-8?q?Quarterly_report_Gr=C3=BC=C3=9Fe?=", env[1]
    bob = [("Bob Sender", "bob", "example.test")]
    check_address_list(env[2], bob, "from")
    check_address_list(env[3], bob, "sender (absent: the From value)")
    check_address_list(env[4], [("Replies", "replies", "example.org")], "reply-to")
    check_address_list(env[5], [("Carol", "carol", "example.test"),
                                (None, "dave", "example.test")], "to")
    check_address_list(env[6], [("=?utf-8?q?J=C3=B6rg?=", "joerg", "example.org")], "cc")
    check_address_list(env[7], None, "bcc")
    assert env[8] == b"<parent.1@example.test>", env[8]
    assert env[9] == f"<{token}@example.test>".encode(), env[9]


def check_params(got, want, what):
    """body-fld-param: NIL or (name value ...); names case-insensitive,
    values exact (charset names case-insensitive)."""
    if not want:
        assert got is None, f"{what}: {got!r} instead of NIL"
        return
    assert isinstance(got, list) and len(got) == 2 * len(want), f"{what}: {got!r}"
    for (gk, gv), (wk, wv) in zip(zip(got[0::2], got[1::2]), want):
        assert same_ci(gk, wk), f"{what}: {got!r}"
        if wk.lower() == "charset":
            assert same_ci(gv, wv), f"{what}: {got!r}"
        else:
            assert gv == wv.encode(), f"{what}: {got!r}"


def check_disposition(got, want, what):
    if want is None:
        assert got is None, f"{what}: disposition {got!r} instead of NIL"
        return
    kind, params = want
    assert isinstance(got, list) and len(got) == 2, f"{what}: disposition {got!r}"
    assert same_ci(got[0], kind), f"{what}: disposition {got!r}"
    check_params(got[1], params, what + " disposition")


def check_language(got, want, what):
    if want is None:
        assert got is None, f"{what}: language {got!r}"
    else:
        # nstring or a list of strings
        langs = got if isinstance(got, list) else [got]
        assert [x.lower() for x in langs] == [want.encode()], f"{what}: language {got!r}"


def check_leaf(got, want, what, extended):
    """One non-multipart body (RFC 3501 §7.4.2 body-type-1part)."""
    typ, sub, params, cid, desc, enc, size = want[:7]
    assert isinstance(got, list), f"{what}: {got!r}"
    assert same_ci(got[0], typ) and same_ci(got[1], sub), f"{what}: type {got[:2]!r}"
    check_params(got[2], params, what + " params")
    assert got[3] == (cid.encode() if cid else None), f"{what}: id {got[3]!r}"
    assert got[4] == (desc.encode() if desc else None), f"{what}: description {got[4]!r}"
    assert same_ci(got[5], enc), f"{what}: encoding {got[5]!r}"
    assert got[6] == str(size), f"{what}: size {got[6]!r}, expected {size}"
    rest = got[7:]
    if typ == "text":
        assert rest[:1] == [str(want[7])], f"{what}: lines {rest[:1]!r}, expected {want[7]}"
        rest = rest[1:]
    elif typ == "message":
        inner_env, inner_body, lines = want[7], want[8], want[9]
        assert len(rest) >= 3, f"{what}: {got!r}"
        inner_env(rest[0])
        check_body(rest[1], inner_body, what + " (inner)", extended)
        assert rest[2] == str(lines), f"{what}: lines {rest[2]!r}, expected {lines}"
        rest = rest[3:]
    if not extended:
        assert rest == [], f"{what}: extension data in BODY: {rest!r}"
        return
    # body-ext-1part: md5, disposition, language, location
    dsp, lang = want[-2], want[-1]
    assert len(rest) >= 4, f"{what}: extension data incomplete: {rest!r}"
    assert rest[0] is None, f"{what}: md5 {rest[0]!r}"
    check_disposition(rest[1], dsp, what)
    check_language(rest[2], lang, what)
    assert rest[3] is None, f"{what}: location {rest[3]!r}"


def check_multipart(got, parts, subtype, boundary, what, extended):
    assert isinstance(got, list) and len(got) > len(parts), f"{what}: {got!r}"
    for i, (g, w) in enumerate(zip(got, parts), 1):
        check_body(g, w, f"{what}.{i}", extended)
    rest = got[len(parts):]
    assert same_ci(rest[0], subtype), f"{what}: subtype {rest[0]!r}"
    rest = rest[1:]
    if not extended:
        assert rest == [], f"{what}: extension data in BODY: {rest!r}"
        return
    # body-ext-mpart: parameters, disposition, language, location
    assert len(rest) >= 4, f"{what}: extension data incomplete: {rest!r}"
    check_params(rest[0], [("boundary", boundary)], what + " params")
    assert rest[1] is None and rest[2] is None and rest[3] is None, f"{what}: {rest!r}"


def check_body(got, want, what, extended):
    if want[0] == "multipart":
        check_multipart(got, want[1], want[2], want[3], what, extended)
    else:
        check_leaf(got, want, what, extended)


def lines_of(s):
    return s.count("\r\n")


def check_inner_envelope(env):
    assert len(env) == 10, env
    assert env[0] == b"Sun, 15 Nov 2026 08:00:00 +0000" and env[1] == b"the original", env
    alice = [("Alice", "alice", "example.org")]
    check_address_list(env[2], alice, "inner from")
    check_address_list(env[3], alice, "inner sender")
    check_address_list(env[4], alice, "inner reply-to")
    check_address_list(env[5], [(None, "bob", "example.test")], "inner to")
    assert env[6] is None and env[7] is None and env[8] is None, env
    assert env[9] == b"<orig.1@example.org>", env


EXPECTED_STRUCTURE = (
    "multipart", [
        ("multipart", [
            ("text", "plain", [("charset", "utf-8"), ("format", "flowed")], None, None,
             "quoted-printable", len(TEXT_PART), lines_of(TEXT_PART), None, None),
            ("text", "html", [("charset", "utf-8")], None, None, "7bit", len(HTML_PART),
             lines_of(HTML_PART), None, None),
        ], "alternative", ALT),
        ("application", "pdf", [("name", "report.pdf")], None, "Quarterly report", "base64",
         len(PDF_PART), ("attachment", [("filename", "report.pdf")]), None),
        ("image", "png", [("name", "dot.png")], "<dot.1@example.test>", None, "base64",
         len(PNG_PART), ("inline", [("filename", "dot.png")]), "en"),
        ("message", "rfc822", None, None, None, "7bit", len(INNER_MSG), check_inner_envelope,
         ("text", "plain", [("charset", "us-ascii")], None, None, "7bit", len(INNER_BODY),
          lines_of(INNER_BODY), None, None),
         lines_of(INNER_MSG), ("attachment", [("filename", "original.eml")]), None),
    ], "mixed", MIXED)


def strip_trace(data):
    """The stored message without the trace fields SMTP delivery put on top."""
    m = re.match(rb"((?:(?:Return-Path|Delivered-To|Received):[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*)*)",
                 data, re.I)
    return data[m.end():]


# -- login, capabilities, folders ------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_login_capabilities_and_special_use_folders(imap, ctx, mode):
    m = imaplib_client(imap, ctx, mode, login=None)
    caps = set(m.capabilities)
    # inside TLS: logins usable, no STARTTLS, no LOGINDISABLED
    assert "IMAP4REV1" in caps and "AUTH=PLAIN" in caps, caps
    assert "STARTTLS" not in caps and "LOGINDISABLED" not in caps, caps
    typ, data = m.login(BOB, BOB_PW)
    assert typ == "OK", data
    typ, data = m.capability()
    caps = set(data[0].decode().upper().split())
    for cap in ("IMAP4REV1", "IDLE", "UIDPLUS", "MOVE", "UNSELECT", "NAMESPACE", "ID", "ENABLE",
                "SPECIAL-USE", "CHILDREN", "SASL-IR"):
        assert cap in caps, (cap, caps)
    assert "LITERAL+" in caps or "LITERAL-" in caps, caps

    folders = listing(m)
    assert set(folders) == {"INBOX", "Sent", "Drafts", "Trash", "Junk"}, folders
    for name, (attrs, delim) in folders.items():
        assert delim == ".", (name, delim)
        assert "\\hasnochildren" in attrs, (name, attrs)
        want_use = SPECIAL_USE.get(name)
        uses = {a for a in attrs if a in {u.lower() for u in SPECIAL_USE.values()}}
        assert uses == ({want_use.lower()} if want_use else set()), (name, attrs)
    # Maildir++ folders on disk, each a Maildir
    for name in SPECIAL_USE:
        for sub in ("cur", "new", "tmp"):
            assert os.path.isdir(os.path.join(folder_path(imap, BOB, name), sub)), (name, sub)
    # subscribed at first login
    assert set(SPECIAL_USE) <= set(listing(m, cmd="LSUB"))
    # a folder with a child has \HasChildren; the child is found with %
    ok(m.create("Projects.2026"))
    folders = listing(m)
    assert "\\haschildren" in folders["Projects"][0], folders
    assert "\\hasnochildren" in folders["Projects.2026"][0], folders
    assert set(listing(m, pattern='"Projects.%"')) == {"Projects.2026"}
    assert set(listing(m, pattern='"%"')) == {"INBOX", "Sent", "Drafts", "Trash", "Junk",
                                               "Projects"}
    assert os.path.isdir(os.path.join(folder_path(imap, BOB, "Projects.2026"), "cur"))
    logout(m)
    logins = [e for e in imap.events("login") if e.get("user") == BOB]
    assert logins and all(e.get("tls") == "yes" for e in logins), logins
    assert BOB_PW not in imap.log


def test_select_responses(imap, ctx):
    deliver(imap, BOB, "Subject: one\r\n\r\nfirst\r\n")
    deliver(imap, BOB, "Subject: two\r\n\r\nsecond\r\n")
    c = connect(imap, tls="imaps", ctx=ctx)
    assert c.login(BOB, BOB_PW).ok
    r = c.select("INBOX")
    assert re.match(r"OK \[READ-WRITE\]", r.tagged), r
    lines = r.lines()
    [flags] = r.find(r"^\* FLAGS ")
    got = set(parse_data(flags[len("* FLAGS "):].encode())[0])
    assert {"\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"} <= got, flags
    [pflags] = r.find(r"^\* OK \[PERMANENTFLAGS ")
    assert {"\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"} <= \
        set(re.search(r"\(([^)]*)\)", pflags).group(1).split()), pflags
    assert "* 2 EXISTS" in lines and "* 2 RECENT" in lines, lines
    [v] = r.find(r"^\* OK \[UIDVALIDITY \d+\]")
    [n] = r.find(r"^\* OK \[UIDNEXT \d+\]")
    [u] = r.find(r"^\* OK \[UNSEEN 1\]")
    uidnext = int(re.search(r"UIDNEXT (\d+)", n).group(1))
    # the two messages have UIDs below UIDNEXT, ascending
    f = fetch_responses(c.ok("FETCH 1:* (UID FLAGS)"))
    uids = [int(f[i]["UID"]) for i in (1, 2)]
    assert 0 < uids[0] < uids[1] < uidnext, (uids, uidnext)
    assert "\\Recent" in f[1]["FLAGS"], f
    # the first session that saw them took them out of new/
    assert folder_files(imap, BOB, subs=("new",)) == []
    # EXAMINE: read-only, and a second session does not see them as recent
    c2 = connect(imap, tls="imaps", ctx=ctx)
    assert c2.login(BOB, BOB_PW).ok
    r = c2.ok("EXAMINE INBOX")
    assert re.match(r"OK \[READ-ONLY\]", r.tagged), r
    assert "* 0 RECENT" in r.lines(), r
    assert c2.cmd("STORE 1 +FLAGS (\\Seen)").status == "NO"
    c2.logout()
    # STATUS of another folder without selecting it
    r = c.ok("STATUS Trash (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN)")
    [st] = r.find(r"^\* STATUS ")
    items = parse_data(st.encode())[-1]
    d = dict(zip(items[0::2], items[1::2]))
    assert d["MESSAGES"] == "0" and d["RECENT"] == "0" and d["UNSEEN"] == "0", st
    assert int(d["UIDVALIDITY"]) > 0 and int(d["UIDNEXT"]) >= 1, st
    c.logout()


# -- FETCH of a multipart message delivered by SMTP ------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_fetch_envelope_bodystructure_of_a_multipart_message(imap, ctx, mode):
    token = "tok" + os.urandom(6).hex()
    msg = multipart_message(token).encode()
    deliver(imap, CAROL, msg, sender=BOB)
    [stored] = imap.messages(CAROL)
    assert strip_trace(stored) == msg

    m = imaplib_client(imap, ctx, mode, login=(CAROL, CAROL_PW))
    assert ok(m.select("INBOX")) == [b"1"]
    f = imaplib_fetch(ok(m.fetch("1", "(UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE "
                                      "BODYSTRUCTURE)")))[1]
    assert f["RFC822.SIZE"] == str(len(stored)), (f["RFC822.SIZE"], len(stored))
    assert "\\Seen" not in f["FLAGS"], f["FLAGS"]
    # INTERNALDATE: the delivery time, within the test's minutes
    assert abs(internaldate(f["INTERNALDATE"]) - time.time()) < 600, f["INTERNALDATE"]
    check_envelope(f["ENVELOPE"], token)
    check_body(f["BODYSTRUCTURE"], EXPECTED_STRUCTURE, "BODYSTRUCTURE", extended=True)
    # BODY: the same without extension data
    f2 = imaplib_fetch(ok(m.fetch("1", "(BODY)")))[1]
    check_body(f2["BODY"], EXPECTED_STRUCTURE, "BODY", extended=False)

    # sections, without setting \Seen (PEEK)
    f = imaplib_fetch(ok(m.fetch("1", "(BODY.PEEK[1.1] BODY.PEEK[1.2.MIME] BODY.PEEK[2] "
                                      "BODY.PEEK[4.HEADER] BODY.PEEK[4.TEXT] "
                                      "BODY.PEEK[HEADER.FIELDS (Subject Message-ID)] "
                                      "BODY.PEEK[]<0.20>)")))[1]
    assert f["BODY[1.1]"] == TEXT_PART.encode()
    assert f["BODY[1.2.MIME]"] == (b"Content-Type: text/html; charset=utf-8\r\n"
                                   b"Content-Transfer-Encoding: 7bit\r\n\r\n")
    assert f["BODY[2]"] == PDF_PART.encode()
    assert base64.b64decode(f["BODY[2]"]).startswith(b"%PDF-1.4\n")
    assert f["BODY[4.HEADER]"] == INNER_MSG.split("\r\n\r\n")[0].encode() + b"\r\n\r\n"
    assert f["BODY[4.TEXT]"] == INNER_BODY.encode()
    hf = [k for k in f if k.startswith("BODY[HEADER.FIELDS")]
    assert len(hf) == 1 and f[hf[0]] == (
        b"Subject: =?utf-8?q?Quarterly_report_Gr=C3=BC=C3=9Fe?=\r\n"
        + f"Message-ID: <{token}@example.test>\r\n\r\n".encode()), f
    assert f["BODY[]<0>"] == stored[:20], f
    f = imaplib_fetch(ok(m.fetch("1", "(FLAGS)")))[1]
    assert "\\Seen" not in f["FLAGS"], f

    # the whole message: BODY[] sets \Seen and is the stored file in CRLF form
    f = imaplib_fetch(ok(m.fetch("1", "(BODY[])")))[1]
    assert f["BODY[]"] == stored
    f = imaplib_fetch(ok(m.fetch("1", "(FLAGS)")))[1]
    assert "\\Seen" in f["FLAGS"], f
    wait_until(lambda: [info_flags(n) for n in folder_files(imap, CAROL)] == ["S"],
               what="S in the Maildir file name")
    logout(m)


# -- STORE, COPY, MOVE, EXPUNGE ----------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_store_flags_in_maildir_names_copy_move_expunge(imap, ctx, mode):
    for i in range(4):
        deliver(imap, DAVE, f"Subject: message {i}\r\nFrom: x@example.org\r\n\r\nbody {i}\r\n")
    m = imaplib_client(imap, ctx, mode, login=(DAVE, DAVE_PW))
    assert ok(m.select("INBOX")) == [b"4"]
    uids = [int(imaplib_fetch(ok(m.fetch(str(i), "(UID)")))[i]["UID"]) for i in (1, 2, 3, 4)]

    def name_of(uid):
        """The Maildir file of the message with that UID (by its subject)."""
        seq = uids.index(uid)
        for sub in ("cur", "new"):
            d = os.path.join(folder_path(imap, DAVE), sub)
            for n in os.listdir(d):
                with open(os.path.join(d, n), "rb") as fh:
                    if f"Subject: message {seq}\r\n".encode() in crlf(fh.read()):
                        return n
        return None

    # STORE +FLAGS: the untagged FETCH shows them, the file name carries them
    data = ok(m.store("1", "+FLAGS", "(\\Flagged \\Answered)"))
    f = imaplib_fetch(data)[1]
    assert set(f["FLAGS"]) >= {"\\Flagged", "\\Answered"} and "\\Seen" not in f["FLAGS"], f
    assert info_flags(name_of(uids[0])) == "FR"
    ok(m.store("1", "+FLAGS", "(\\Seen)"))
    assert info_flags(name_of(uids[0])) == "FRS"
    ok(m.store("1", "-FLAGS", "(\\Answered)"))
    assert info_flags(name_of(uids[0])) == "FS"
    data = ok(m.store("2", "FLAGS", "(\\Draft \\Seen)"))
    assert set(imaplib_fetch(data)[2]["FLAGS"]) - {"\\Recent"} == {"\\Draft", "\\Seen"}
    assert info_flags(name_of(uids[1])) == "DS"
    # .SILENT: no FETCH response, the flag is stored all the same
    data = ok(m.store("3", "+FLAGS.SILENT", "(\\Flagged)"))
    assert data in ([None], []), data
    assert info_flags(name_of(uids[2])) == "F"
    # every system flag has its letter
    for flag, letter in FLAG_LETTERS.items():
        ok(m.store("4", "FLAGS", f"({flag})"))
        assert info_flags(name_of(uids[3])) == letter, (flag, name_of(uids[3]))
    ok(m.store("4", "FLAGS", "()"))
    assert info_flags(name_of(uids[3])) == ""

    # COPY to Trash: COPYUID names Trash's UIDVALIDITY and both UID sets
    typ, data = m.copy("1", "Trash")
    assert typ == "OK", data
    code = code_of(data[0]).split()
    assert code[0] == "COPYUID" and len(code) == 4, data
    trash_validity, src, dst = int(code[1]), uid_set(code[2]), uid_set(code[3])
    assert src == [uids[0]], (src, uids)
    typ, st = m.status("Trash", "(UIDVALIDITY MESSAGES)")
    assert typ == "OK" and f"UIDVALIDITY {trash_validity}".encode() in st[0], st
    assert b"MESSAGES 1" in st[0], st
    [copied] = folder_files(imap, DAVE, "Trash")
    assert info_flags(copied) == "FS", copied           # flags travel with the copy
    assert len(folder_files(imap, DAVE)) == 4           # the original stays

    # UID MOVE to Trash: COPYUID, then EXPUNGE of the source
    typ, data = m.uid("MOVE", str(uids[2]), "Trash")
    assert typ == "OK", data
    copyuid = m.response("COPYUID")[1]
    assert copyuid and copyuid[0], "no COPYUID for MOVE"
    code = copyuid[-1].decode().split()
    assert int(code[0]) == trash_validity and uid_set(code[1]) == [uids[2]], code
    moved_uid = uid_set(code[2])[0]
    assert moved_uid not in dst
    assert m.response("EXPUNGE")[1][-1] == b"3", "MOVE did not expunge message 3"
    assert len(folder_files(imap, DAVE)) == 3
    assert sorted(info_flags(n) for n in folder_files(imap, DAVE, "Trash")) == ["F", "FS"]

    # EXPUNGE removes exactly the \Deleted ones
    ok(m.store("2", "+FLAGS", "(\\Deleted)"))
    assert info_flags(name_of(uids[1])) == "DST"
    typ, data = m.expunge()
    assert typ == "OK" and data == [b"2"], data
    assert len(folder_files(imap, DAVE)) == 2
    f = imaplib_fetch(ok(m.fetch("1:*", "(UID)")))
    assert [int(f[i]["UID"]) for i in sorted(f)] == [uids[0], uids[3]], f

    # the copies in Trash are the messages
    assert ok(m.select("Trash")) == [b"2"]
    f = imaplib_fetch(ok(m.uid("FETCH", f"{dst[0]},{moved_uid}", "(UID BODY.PEEK[HEADER.FIELDS "
                                                                   "(Subject)])")))
    subjects = sorted(v[k] for v in f.values() for k in v if k.startswith("BODY["))
    assert subjects == [b"Subject: message 0\r\n\r\n", b"Subject: message 2\r\n\r\n"], f
    logout(m)


# -- APPEND ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_append_with_appenduid(imap, ctx, mode):
    m = imaplib_client(imap, ctx, mode)
    msg = crlf("From: Bob <bob@example.test>\nTo: carol@example.test\nSubject: draft\n"
               "Date: Tue, 17 Nov 2026 10:00:00 +0100\n\nA draft with a line\n.starting with a dot\n")
    date = '"17-Nov-2026 10:00:05 +0100"'
    typ, data = m.append("Drafts", "(\\Draft \\Seen)", date, msg)
    assert typ == "OK", data
    code = code_of(data[0]).split()
    assert code[0] == "APPENDUID" and len(code) == 3, data
    validity, uid = int(code[1]), int(code[2])
    [name] = folder_files(imap, BOB, "Drafts")
    assert info_flags(name) == "DS", name
    with open(os.path.join(folder_path(imap, BOB, "Drafts"), "cur", name), "rb") as fh:
        assert crlf(fh.read()) == msg

    typ, data = m.select("Drafts")
    assert typ == "OK" and data == [b"1"], data
    assert m.response("UIDVALIDITY")[1][-1] == str(validity).encode()
    f = imaplib_fetch(ok(m.uid("FETCH", str(uid), "(UID FLAGS INTERNALDATE RFC822.SIZE "
                                                    "BODY.PEEK[])")))[1]
    assert int(f["UID"]) == uid
    assert set(f["FLAGS"]) - {"\\Recent"} == {"\\Draft", "\\Seen"}, f
    # the same instant (the zone it is shown in may differ)
    assert internaldate(f["INTERNALDATE"]) == internaldate(b"17-Nov-2026 10:00:05 +0100"), \
        f["INTERNALDATE"]
    assert f["BODY[]"] == msg and f["RFC822.SIZE"] == str(len(msg))
    # a second APPEND gets the next UID; APPEND to a missing folder: TRYCREATE
    typ, data = m.append("Drafts", None, None, crlf("Subject: second\n\nx\n"))
    assert typ == "OK" and int(code_of(data[0]).split()[2]) > uid, data
    typ, data = m.append("No.Such.Folder", None, None, crlf("Subject: x\n\nx\n"))
    assert typ == "NO" and b"[TRYCREATE]" in data[0], (typ, data)
    logout(m)


# -- SEARCH -----------------------------------------------------------------------------------------

SEARCH_MSGS = [
    "From: Alice <alice@example.org>\r\nTo: bob@example.test\r\nSubject: Apollo launch plan\r\n"
    "X-Project: apollo\r\nDate: Mon, 02 Nov 2026 10:00:00 +0000\r\n\r\n"
    "The countdown starts at noon.\r\n",
    "From: Dave <dave@example.test>\r\nTo: bob@example.test\r\n"
    "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe_aus_M=C3=BCnchen?=\r\n"
    "Date: Tue, 03 Nov 2026 10:00:00 +0000\r\n\r\nnothing special here\r\n",
    "From: Carol <carol@example.test>\r\nTo: bob@example.test\r\nSubject: Reise\r\n"
    "Date: Wed, 04 Nov 2026 10:00:00 +0000\r\n"
    "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
    "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    "Wir sehen uns in K=F6ln, sch=F6ne Gr=FC=DFe!\r\n"
    "A soft line break joins spec=\r\ntacular words.\r\n",
    "From: Alice <alice@example.org>\r\nTo: bob@example.test\r\nSubject: minutes\r\n"
    "Date: Thu, 05 Nov 2026 10:00:00 +0000\r\n\r\n"
    "The apollo countdown was moved.\r\n",
]


@pytest.mark.parametrize("mode", MODES)
def test_search_by_header_and_body_text(imap, ctx, mode):
    for msg in SEARCH_MSGS:
        deliver(imap, BOB, msg)
    m = imaplib_client(imap, ctx, mode)
    ok(m.select("INBOX"))
    assert search(m, "ALL") == [1, 2, 3, 4]
    assert search(m, "HEADER", "X-Project", "apollo") == [1]
    assert search(m, "FROM", "alice") == [1, 4]
    assert search(m, "SUBJECT", '"launch plan"') == [1]
    assert search(m, "BODY", "countdown") == [1, 4]
    assert search(m, "TEXT", "apollo") == [1, 4]          # header of 1, body of 4
    assert search(m, "BODY", "apollo") == [4]
    assert search(m, "OR", "FROM", "dave", "SUBJECT", "minutes") == [2, 4]
    assert search(m, "NOT", "FROM", "alice") == [2, 3]
    assert search(m, "SENTSINCE", "03-Nov-2026", "SENTBEFORE", "05-Nov-2026") == [2, 3]
    assert search(m, "BODY", "zebra-not-there") == []
    # charset decoding: the body is ISO-8859-1 in quoted-printable, the
    # search string UTF-8; soft line breaks are undone
    assert search(m, "BODY", charset="UTF-8", literal="Köln".encode()) == [3]
    assert search(m, "BODY", charset="UTF-8", literal="schöne Grüße".encode()) == [3]
    assert search(m, "BODY", "spectacular") == [3]
    # a search string in another charset: converted, or (RFC 3501 §6.4.4:
    # only US-ASCII and UTF-8 are required) NO [BADCHARSET (<the supported>)]
    m.literal = "Köln".encode("latin-1")
    typ, data = m.search("ISO-8859-1", "BODY")
    if typ == "OK":
        assert data == [b"3"], data
    else:
        assert typ == "NO" and re.match(rb"\[BADCHARSET \([^)]*UTF-8", data[0], re.I), data
    # RFC 2047 encoded subject, case-insensitive
    assert search(m, "SUBJECT", charset="UTF-8", literal="grüße aus münchen".encode()) == [2]
    # a charset the server does not know: NO [BADCHARSET]
    typ, data = m.search("X-NO-SUCH-CHARSET", "BODY", "x")
    assert typ == "NO" and b"BADCHARSET" in data[0], (typ, data)
    # flags and sizes
    ok(m.store("2,4", "+FLAGS", "(\\Flagged)"))
    assert search(m, "FLAGGED") == [2, 4]
    assert search(m, "UNFLAGGED", "FROM", "alice") == [1]
    sizes = {i: int(imaplib_fetch(ok(m.fetch(str(i), "(RFC822.SIZE)")))[i]["RFC822.SIZE"])
             for i in (1, 2, 3, 4)}
    big = max(sizes.values())
    assert search(m, "LARGER", str(big - 1)) == [i for i in sizes if sizes[i] > big - 1]
    logout(m)


# -- UID FETCH / STORE / SEARCH ----------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_uid_commands(imap, ctx, mode):
    for i in range(3):
        deliver(imap, BOB, f"Subject: uid test {i}\r\n\r\nbody {i}\r\n")
    m = imaplib_client(imap, ctx, mode)
    ok(m.select("INBOX"))
    f = imaplib_fetch(ok(m.uid("FETCH", "1:*", "(FLAGS)")))
    # UID FETCH always returns UID
    uids = [int(f[i]["UID"]) for i in (1, 2, 3)]
    assert uids == sorted(uids) and len(set(uids)) == 3
    assert search(m, "ALL", uid=True) == uids
    assert search(m, "SUBJECT", '"uid test 1"', uid=True) == [uids[1]]
    assert search(m, "UID", f"{uids[1]}:*", uid=True) == uids[1:]
    # UID STORE by UID, answered with sequence numbers and UIDs
    data = ok(m.uid("STORE", str(uids[2]), "+FLAGS", "(\\Flagged)"))
    f = imaplib_fetch(data)
    assert list(f) == [3] and int(f[3]["UID"]) == uids[2] and "\\Flagged" in f[3]["FLAGS"], f
    assert search(m, "FLAGGED", uid=True) == [uids[2]]
    # UIDs that do not exist are not an error for UID commands
    big = uids[-1] + 1000
    typ, data = m.uid("FETCH", f"{big}:{big + 5}", "(FLAGS)")
    assert typ == "OK" and data in ([None], []), data
    typ, data = m.uid("STORE", str(big), "+FLAGS", "(\\Seen)")
    assert typ == "OK", data
    # "n:*" with n above every UID matches the last message (RFC 3501 §6.4.8)
    f = imaplib_fetch(ok(m.uid("FETCH", f"{big}:*", "(UID)")))
    assert [int(v["UID"]) for v in f.values()] == [uids[2]], f
    # UID EXPUNGE (UIDPLUS) removes only the given \Deleted messages
    ok(m.store("1:2", "+FLAGS", "(\\Deleted)"))
    typ, data = m._simple_command("UID", "EXPUNGE", str(uids[0]))
    assert typ == "OK", data
    assert m.response("EXPUNGE")[1][-1] == b"1"
    f = imaplib_fetch(ok(m.fetch("1:*", "(UID FLAGS)")))
    assert [int(f[i]["UID"]) for i in sorted(f)] == uids[1:], f
    assert "\\Deleted" in f[1]["FLAGS"]
    logout(m)


# -- IDLE ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_idle_sees_a_message_delivered_by_smtp(imap, ctx, mode):
    deliver(imap, CAROL, "Subject: before\r\n\r\nalready here\r\n")
    c = login_select(imap, ctx, CAROL, CAROL_PW, tls=mode)
    tag = c.send_cmd("IDLE")
    cont = c.line()
    assert cont.startswith("+"), cont
    assert c.quiet(0.5) == b"", "IDLE announced something before anything happened"
    token = os.urandom(6).hex()
    deliver(imap, CAROL, f"Subject: during idle\r\n\r\ntoken {token}\r\n")
    arrived = time.monotonic()
    got = []
    while "* 2 EXISTS" not in got:
        got.append(c.line(timeout=10))
    latency = time.monotonic() - arrived
    print(f"IDLE announced the new message {latency:.2f}s after it was in the Maildir")
    assert latency < 3.0, f"IDLE took {latency:.2f}s to announce the message"
    c.send(b"DONE\r\n")
    r = c.collect(tag)
    assert r.ok, r
    f = fetch_responses(c.ok("FETCH 2 (BODY.PEEK[TEXT])"))
    assert f[2]["BODY[TEXT]"] == f"token {token}\r\n".encode()
    # flags changed by another session are announced during IDLE too
    other = login_select(imap, ctx, CAROL, CAROL_PW)
    tag = c.send_cmd("IDLE")
    assert c.line().startswith("+")
    other.ok("STORE 1 +FLAGS (\\Flagged)")
    line = c.line(timeout=10)
    assert re.match(r"^\* 1 FETCH \(.*FLAGS \([^)]*\\Flagged", line), line
    c.send(b"DONE\r\n")
    assert c.collect(tag).ok
    other.logout()
    c.logout()


# -- the end-to-end story ------------------------------------------------------------------------

def test_end_to_end_submission_then_imap_nothing_in_clear(posthorn, cert, ctx):
    """Bob submits over SMTP with STARTTLS and AUTH, Carol reads it with
    IMAP over implicit TLS; a network monitor on both legs sees neither
    password, nor the addresses, nor a word of the message."""
    tls_port = free_port()
    servers = {"sub": {"anonymous": None, "extra": "\n".join([
                   "tls {", f"    certificate {cert['crt']}", f"    key {cert['key']}", "}",
                   "auth {", "    anonymous no", "}"])},
               "imap": imap_spec(cert, tls_port)}
    p = posthorn(servers=servers)
    token = "E2E-" + os.urandom(8).hex()
    sent = crlf(f"From: Bob <{BOB}>\nTo: Carol <{CAROL}>\nSubject: end to end {token}\n"
                f"Message-ID: <{token}@example.test>\n\nThe secret is {token}.\n")
    with RecordingProxy(p.port("sub")) as smtp_leg, RecordingProxy(tls_port) as imap_leg:
        s = smtplib.SMTP(HOST, smtp_leg.port, local_hostname=CLIENT_HELO, timeout=30)
        p.conns.append(s)
        s.starttls(context=ctx)
        s.login(BOB, BOB_PW)
        assert s.sendmail(BOB, [CAROL], sent) == {}
        s.quit()
        p.wait_messages(CAROL, 1, timeout=20)
        m = imaplib.IMAP4_SSL(HOST, imap_leg.port, ssl_context=ctx, timeout=30)
        p.conns.append(_Client(m))
        ok(m.login(CAROL, CAROL_PW))
        assert ok(m.select("INBOX")) == [b"1"]
        f = imaplib_fetch(ok(m.fetch("1", "(BODY[] ENVELOPE)")))[1]
        logout(m)
        captures = {"smtp": smtp_leg.capture, "imap": imap_leg.capture}
    assert strip_trace(f["BODY[]"]) == sent
    assert f["ENVELOPE"][1] == f"end to end {token}".encode()
    for leg, cap in captures.items():
        assert len(cap) > 1000, (leg, len(cap))
        for secret in (BOB_PW, CAROL_PW, token, CAROL):
            assert not reveals(cap, secret), f"{secret!r} visible on the {leg} leg"
    assert BOB_PW not in p.log and CAROL_PW not in p.log
