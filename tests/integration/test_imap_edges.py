"""Edges of RFC 3501 that mail programs run into (issue 8): strings with
8-bit octets only ever sent as literals, the single-part message's part 1,
a BODYSTRUCTURE of a message without MIME headers, read-only EXAMINE that
never sets \\Seen, a failed SELECT that leaves the selected state, INBOX
in any case, modified UTF-7 folder names, COPY to a missing folder
([TRYCREATE]), UIDs never used twice (also across a restart after the
highest one was expunged), LOGIN with literals.
"""

import re

import pytest

from imaputil import (BOB, BOB_PW, DAVE, client_ctx, connect, crlf, deliver, fetch_responses,
                      folder_files, info_flags, login_select, make_cert, parse_data,
                      put_message, start_imap, text)


@pytest.fixture(scope="module")
def cert(posthorn_bin, tmp_path_factory):
    return make_cert(posthorn_bin, tmp_path_factory.mktemp("imap-edges-cert"))


@pytest.fixture(scope="module")
def ctx(cert):
    return client_ctx(cert)


@pytest.fixture
def imap(posthorn, cert):
    return start_imap(posthorn, cert)


def outside_literals(raw):
    """raw with the octets of every literal removed (announcements kept)."""
    out, pos = b"", 0
    for m in re.finditer(rb"\{(\d+)\}\r\n", raw):
        if m.start() < pos:
            continue
        out += raw[pos:m.end()]
        pos = m.end() + int(m.group(1))
    return out + raw[pos:]


def test_8bit_strings_are_sent_as_literals(imap, ctx):
    subject = "Grüße aus Köln — 8-bit"
    msg = (f"From: Jörg <joerg@example.org>\r\nTo: bob@example.test\r\n"
           f"Subject: {subject}\r\nDate: Mon, 02 Nov 2026 10:00:00 +0000\r\n"
           "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
           "8-bit body: Grüße\r\n").encode()
    put_message(imap, BOB, msg)
    c = login_select(imap, ctx)
    r = c.ok("FETCH 1 (ENVELOPE BODYSTRUCTURE)")
    [raw] = [u for u in r.untagged if u.startswith(b"* 1 FETCH")]
    # RFC 3501 §4.3, §9: quoted strings are 7-bit; 8-bit text needs a literal
    assert outside_literals(raw).isascii(), raw
    env = fetch_responses(r)[1]["ENVELOPE"]
    assert env[1] == subject.encode(), env
    assert env[2][0][2:] == [b"joerg", b"example.org"], env
    c.logout()


def test_single_part_message_structure_and_part_1(imap, ctx):
    body = "just a line\r\nand another\r\n"
    msg = crlf("From: a@example.org\nSubject: plain\n\n") + body.encode()
    put_message(imap, BOB, msg)
    c = login_select(imap, ctx)
    f = fetch_responses(c.ok("FETCH 1 (BODYSTRUCTURE BODY.PEEK[1] BODY.PEEK[TEXT])"))[1]
    bs = f["BODYSTRUCTURE"]
    # no MIME headers: text/plain (RFC 2045 §5.2), 7bit, sizes of the body
    assert text(bs[0]).lower() == "text" and text(bs[1]).lower() == "plain", bs
    assert text(bs[5]).lower() == "7bit" and bs[6] == str(len(body)) and bs[7] == "2", bs
    # every message has a part 1 (RFC 3501 §6.4.5): here, the body
    assert f["BODY[1]"] == body.encode() == f["BODY[TEXT]"]
    c.logout()


def test_examine_never_sets_seen(imap, ctx):
    put_message(imap, BOB, "Subject: read only\n\nbody\n")
    c = connect(imap, tls="imaps", ctx=ctx)
    assert c.login(BOB, BOB_PW).ok
    c.ok("EXAMINE INBOX")
    f = fetch_responses(c.ok("FETCH 1 (BODY[] FLAGS)"))[1]
    assert "\\Seen" not in f.get("FLAGS", []), f
    assert "\\Seen" not in fetch_responses(c.ok("FETCH 1 FLAGS"))[1]["FLAGS"]
    assert "S" not in "".join(info_flags(n) for n in folder_files(imap, BOB))
    c.logout()


def test_failed_select_leaves_selected_state(imap, ctx):
    put_message(imap, BOB, "Subject: one\n\nbody\n")
    c = login_select(imap, ctx)
    assert c.cmd("SELECT No.Such.Folder").status == "NO"
    # RFC 3501 §6.3.1: the previous mailbox is no longer selected
    assert c.cmd("FETCH 1 FLAGS").status in ("BAD", "NO")
    # INBOX is case-insensitive
    r = c.select("inbox")
    assert "* 1 EXISTS" in r.lines(), r
    r = c.ok('LIST "" inbox')
    assert r.find(r'^\* LIST \([^)]*\) "\." "?INBOX"?$'), r
    c.logout()


def test_modified_utf7_folder_names(imap, ctx):
    c = connect(imap, tls="imaps", ctx=ctx)
    assert c.login(BOB, BOB_PW).ok
    name = "Entw&APw-rfe"                                   # "Entwürfe"
    c.ok(f'CREATE "{name}"')
    r = c.ok('LIST "" "Entw*"')
    names = [text(parse_data(u[len("* LIST "):])[2]) for u in r.untagged
             if u.startswith(b"* LIST ")]
    assert names == [name], r
    c.ok(f'SELECT "{name}"')
    c.logout()


def test_copy_to_a_missing_folder_trycreate(imap, ctx):
    put_message(imap, BOB, "Subject: one\n\nbody\n")
    c = login_select(imap, ctx)
    r = c.cmd("COPY 1 No.Such.Folder")
    assert r.status == "NO" and r.code() == "TRYCREATE", r
    r = c.cmd("MOVE 1 No.Such.Folder")
    assert r.status == "NO" and r.code() == "TRYCREATE", r
    assert len(folder_files(imap, BOB)) == 1
    c.logout()


def test_uids_never_reused(imap, ctx):
    for i in range(3):
        deliver(imap, DAVE, f"Subject: u{i}\r\n\r\nbody\r\n")
    c = login_select(imap, ctx, "dave@example.test", "dave-Secret-3")
    f = fetch_responses(c.ok("FETCH 1:* (UID)"))
    uids = [int(f[i]["UID"]) for i in (1, 2, 3)]
    # the highest UID goes away
    c.ok("STORE 3 +FLAGS (\\Deleted)")
    c.ok("EXPUNGE")
    c.logout()
    imap.restart()
    deliver(imap, DAVE, "Subject: u3\r\n\r\nbody\r\n")
    c = login_select(imap, ctx, "dave@example.test", "dave-Secret-3")
    f = fetch_responses(c.ok("FETCH 1:* (UID)"))
    new = [int(f[i]["UID"]) for i in sorted(f)]
    assert new[:2] == uids[:2] and new[2] > uids[2], (uids, new)
    # APPENDUID and STATUS UIDNEXT agree with what FETCH shows
    r = c.ok("STATUS INBOX (UIDNEXT)")
    uidnext = int(re.search(r"UIDNEXT (\d+)", " ".join(r.lines())).group(1))
    assert uidnext > new[2]
    msg = b"Subject: appended\r\n\r\nx\r\n"
    tag = c.send_cmd("APPEND INBOX {%d}" % len(msg))
    assert c.line().startswith("+")
    c.send(msg + b"\r\n")
    r = c.collect(tag)
    assert r.ok, r
    validity, appended = r.code().split()[1:]
    assert int(appended) >= uidnext
    r = c.ok("NOOP")
    f = fetch_responses(c.ok("UID FETCH %s (UID BODY.PEEK[])" % appended))
    assert [v["BODY[]"] for v in f.values()] == [msg], f
    c.logout()


def test_login_with_literals(imap, ctx):
    c = connect(imap, tls="imaps", ctx=ctx)
    tag = c.send_cmd("LOGIN {%d}" % len(BOB))
    assert c.line().startswith("+")
    c.send(f"{BOB} {{{len(BOB_PW)}}}\r\n".encode())
    assert c.line().startswith("+")
    c.send(BOB_PW.encode() + b"\r\n")
    r = c.collect(tag)
    assert r.ok, r
    c.logout()
    # non-synchronizing (LITERAL-: up to 4096 octets)
    c = connect(imap, tls="imaps", ctx=ctx)
    r = c.cmd(f"LOGIN {{{len(BOB)}+}}\r\n{BOB} {{{len(BOB_PW)}+}}\r\n{BOB_PW}")
    assert r.ok, r
    c.logout()
