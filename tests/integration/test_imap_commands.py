"""The rest of RFC 3501 as a mail program uses it (RFC 3501): folder
management (CREATE with parents, names that must be refused, RENAME with
inferiors and of INBOX, DELETE with children -> \\Noselect, SUBSCRIBE,
UNSUBSCRIBE, LSUB), NAMESPACE, ID, ENABLE, CHECK, UNSELECT against CLOSE,
the FETCH macros and RFC822.* items, HEADER.FIELDS.NOT, partial fetches,
and the Maildir shared with POP3 and SMTP: a message deleted over POP3
is an EXPUNGE for the IMAP session that has the folder open.
"""

import os
import time

import pytest

from helpers import SMTPConn
from imaputil import (BOB, BOB_PW, CAROL, CAROL_PW, client_ctx, connect, crlf, deliver,
                      fetch_responses, folder_files, info_flags, login_select, make_cert,
                      parse_data, put_message, quote, start_imap, text)


@pytest.fixture(scope="module")
def cert(posthorn_bin, tmp_path_factory):
    return make_cert(posthorn_bin, tmp_path_factory.mktemp("imap-commands-cert"))


@pytest.fixture(scope="module")
def ctx(cert):
    return client_ctx(cert)


@pytest.fixture
def imap(posthorn, cert):
    return start_imap(posthorn, cert)


def folders(c, pattern="*", cmd="LIST"):
    """{name: set of attributes (lower case)} from LIST/LSUB "" pattern."""
    r = c.ok(f'{cmd} "" {quote(pattern)}')
    out = {}
    for raw in r.untagged:
        if not raw.startswith(f"* {cmd} ".encode()):
            continue
        attrs, delim, name = parse_data(raw[len(cmd) + 3:])
        assert text(delim) == ".", raw
        out[text(name)] = {a.lower() for a in attrs}
    return out


def status(c, mailbox, items="MESSAGES"):
    r = c.ok(f"STATUS {quote(mailbox)} ({items})")
    [line] = r.find(r"^\* STATUS ")
    vals = parse_data(line.encode())[-1]
    return {k: int(v) for k, v in zip(vals[0::2], vals[1::2])}


def append(c, mailbox, msg, flags=""):
    msg = crlf(msg)
    tag = c.send_cmd(f"APPEND {quote(mailbox)} {flags + ' ' if flags else ''}{{{len(msg)}}}")
    line = c.line()
    assert line.startswith("+"), line
    c.send(msg + b"\r\n")
    r = c.collect(tag)
    assert r.ok, r
    return r


# -- folders ----------------------------------------------------------------------------------

def test_create_rename_delete_subscribe(imap, ctx):
    c = connect(imap, tls="imaps", ctx=ctx)
    assert c.login(BOB, BOB_PW).ok
    root = imap.maildir(BOB)
    c.ok("CREATE Work")
    assert os.path.isdir(os.path.join(root, ".Work", "cur"))
    assert c.cmd("CREATE Work").status == "NO"          # exists
    assert c.cmd("CREATE INBOX").status == "NO"
    c.ok("CREATE Work.Reports.2026")                   # parents as needed
    f = folders(c, "Work*")
    assert set(f) == {"Work", "Work.Reports", "Work.Reports.2026"}, f
    assert "\\haschildren" in f["Work"] and "\\hasnochildren" in f["Work.Reports.2026"], f
    assert set(folders(c, "Work.%")) == {"Work.Reports"}
    # names that must not become paths outside the Maildir, or hidden ones
    before = sorted(os.listdir(os.path.dirname(root)))
    for bad in ("../evil", "a/b", ".hidden", "x..y", "tab\tname"):
        r = c.cmd(f"CREATE {quote(bad)}")
        assert r.status in ("NO", "BAD"), (bad, r)
    assert sorted(os.listdir(os.path.dirname(root))) == before
    assert not [d for d in os.listdir(root) if "evil" in d or "hidden" in d or "/" in d]

    append(c, "Work.Reports", "Subject: report\n\nfigures\n")
    assert status(c, "Work.Reports") == {"MESSAGES": 1}
    # RENAME takes the inferiors along
    c.ok("RENAME Work Projects")
    f = folders(c, "*")
    assert {"Projects", "Projects.Reports", "Projects.Reports.2026"} <= set(f), f
    assert not [n for n in f if n.startswith("Work")], f
    assert status(c, "Projects.Reports") == {"MESSAGES": 1}
    assert os.path.isdir(os.path.join(root, ".Projects.Reports", "cur"))
    assert not os.path.exists(os.path.join(root, ".Work"))
    assert c.cmd("RENAME Projects Trash").status == "NO"        # exists
    assert c.cmd("RENAME Nothing.Here Other").status == "NO"    # no such folder
    # DELETE of a folder with children: it becomes \Noselect, the children stay
    append(c, "Projects", "Subject: in the parent\n\nx\n")
    c.ok("DELETE Projects")
    f = folders(c, "Projects*")
    assert "\\noselect" in f["Projects"], f
    assert status(c, "Projects.Reports") == {"MESSAGES": 1}
    assert c.cmd("SELECT Projects").status == "NO"
    assert c.cmd("DELETE Projects").status == "NO"   # \Noselect with inferiors: an error
    c.ok("DELETE Projects.Reports.2026")
    assert "Projects.Reports.2026" not in folders(c)
    assert c.cmd("DELETE INBOX").status == "NO"
    assert c.cmd("DELETE No.Such").status == "NO"
    # subscriptions
    c.ok("SUBSCRIBE Projects.Reports")
    assert "Projects.Reports" in folders(c, "*", "LSUB")
    with open(os.path.join(root, "subscriptions")) as fh:
        assert "Projects.Reports" in fh.read().split("\n")
    c.ok("UNSUBSCRIBE Projects.Reports")
    assert "Projects.Reports" not in folders(c, "*", "LSUB")
    # the hierarchy delimiter
    r = c.ok('LIST "" ""')
    assert r.find(r'^\* LIST \([^)]*\\Noselect[^)]*\) "\." ""$'), r
    c.logout()


def test_rename_inbox_moves_its_messages(imap, ctx):
    for i in range(2):
        deliver(imap, CAROL, f"Subject: old {i}\r\n\r\nbody\r\n")
    c = connect(imap, tls="imaps", ctx=ctx)
    assert c.login(CAROL, CAROL_PW).ok
    c.ok("RENAME INBOX Archive.2025")
    # RFC 3501 §6.3.5: the messages move, INBOX stays (empty)
    assert status(c, "Archive.2025") == {"MESSAGES": 2}
    assert status(c, "INBOX") == {"MESSAGES": 0}
    assert "INBOX" in folders(c)
    assert folder_files(imap, CAROL) == []
    assert len(folder_files(imap, CAROL, "Archive.2025")) == 2
    # new mail still arrives in INBOX
    deliver(imap, CAROL, "Subject: new\r\n\r\nbody\r\n")
    assert status(c, "INBOX") == {"MESSAGES": 1}
    c.logout()


# -- small commands ------------------------------------------------------------------------------

def test_namespace_id_enable_check(imap, ctx):
    c = connect(imap, tls="imaps", ctx=ctx)
    r = c.ok('ID ("name" "posthorn-test" "version" "1")')      # allowed before login
    [line] = r.find(r"^\* ID ")
    assert line == "* ID NIL" or parse_data(line[5:].encode())[0], line
    assert c.login(BOB, BOB_PW).ok
    r = c.ok("NAMESPACE")
    [line] = r.find(r"^\* NAMESPACE ")
    personal, other, shared = parse_data(line[len("* NAMESPACE "):].encode())
    assert personal == [[b"", b"."]] and other is None and shared is None, line
    # ENABLE of something not offered enables nothing (RFC 5161)
    r = c.ok("ENABLE X-NOT-A-THING")
    assert [x.strip() for x in r.find(r"^\* ENABLED")] in ([], ["* ENABLED"]), r
    c.select("INBOX")
    c.ok("CHECK")
    c.logout()


def test_unselect_keeps_close_expunges(imap, ctx):
    for i in range(3):
        put_message(imap, BOB, f"Subject: m{i}\n\nbody {i}\n")
    c = login_select(imap, ctx)
    c.ok("STORE 2 +FLAGS (\\Deleted)")
    c.ok("UNSELECT")
    assert len(folder_files(imap, BOB)) == 3
    assert c.cmd("FETCH 1 FLAGS").status in ("BAD", "NO")    # nothing selected now
    c.select("INBOX")
    r = c.ok("CLOSE")
    assert not r.find("EXPUNGE"), r                         # silently (RFC 3501 §6.4.2)
    assert len(folder_files(imap, BOB)) == 2
    assert c.cmd("FETCH 1 FLAGS").status in ("BAD", "NO")
    # CLOSE after EXAMINE expunges nothing
    c.select("INBOX")
    c.ok("STORE 1 +FLAGS (\\Deleted)")
    c.ok("EXAMINE INBOX")
    c.ok("CLOSE")
    assert len(folder_files(imap, BOB)) == 2
    c.logout()


def test_fetch_items_and_macros(imap, ctx):
    msg = crlf("From: Alice <alice@example.org>\nTo: bob@example.test\nSubject: items\n"
               "X-Secret: hidden\nDate: Mon, 02 Nov 2026 10:00:00 +0000\n\n"
               "first line of the text\nsecond line\n")
    put_message(imap, BOB, msg)
    head, body = msg.split(b"\r\n\r\n", 1)
    head += b"\r\n\r\n"
    c = login_select(imap, ctx)
    f = fetch_responses(c.ok("FETCH 1 (RFC822.HEADER RFC822.SIZE)"))[1]
    assert f["RFC822.HEADER"] == head and f["RFC822.SIZE"] == str(len(msg))
    f = fetch_responses(c.ok("FETCH 1 FLAGS"))[1]
    assert "\\Seen" not in f["FLAGS"], f                   # RFC822.HEADER is a PEEK
    f = fetch_responses(c.ok("FETCH 1 (BODY.PEEK[HEADER.FIELDS.NOT (X-Secret Date)] "
                             "BODY.PEEK[TEXT]<6.10> BODY.PEEK[]<0.4>)"))[1]
    [hk] = [k for k in f if k.startswith("BODY[HEADER.FIELDS.NOT")]
    assert f[hk] == (b"From: Alice <alice@example.org>\r\nTo: bob@example.test\r\n"
                     b"Subject: items\r\n\r\n"), f[hk]
    assert f["BODY[TEXT]<6>"] == body[6:16]
    assert f["BODY[]<0>"] == msg[:4]
    # a partial fetch past the end is empty
    f = fetch_responses(c.ok("FETCH 1 BODY.PEEK[]<100000.10>"))[1]
    assert f["BODY[]<100000>"] in (b"", None), f
    # macros: FAST, ALL, FULL (RFC 3501 §6.4.5)
    f = fetch_responses(c.ok("FETCH 1 FAST"))[1]
    assert set(f) == {"FLAGS", "INTERNALDATE", "RFC822.SIZE"}, f
    f = fetch_responses(c.ok("FETCH 1 ALL"))[1]
    assert set(f) == {"FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"}, f
    assert f["ENVELOPE"][1] == b"items"
    f = fetch_responses(c.ok("FETCH 1 FULL"))[1]
    assert set(f) == {"FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"}, f
    assert "\\Seen" not in fetch_responses(c.ok("FETCH 1 FLAGS"))[1]["FLAGS"]
    # RFC822.TEXT is BODY[TEXT]: it sets \Seen; RFC822 is BODY[]
    f = fetch_responses(c.ok("FETCH 1 RFC822.TEXT"))[1]
    assert f["RFC822.TEXT"] == body
    assert "\\Seen" in fetch_responses(c.ok("FETCH 1 FLAGS"))[1]["FLAGS"]
    f = fetch_responses(c.ok("FETCH 1 RFC822"))[1]
    assert f["RFC822"] == msg
    c.logout()


def test_internal_date_beyond_year_9999_is_not_made_up(imap, ctx):
    """A Maildir file whose name gives a time past year 9999 (RFC 3501
    date-year is 4DIGIT) has no INTERNALDATE: FETCH leaves that message out
    with a NO and a log line instead of sending a made-up date, and the
    other messages and items are answered as usual."""
    put_message(imap, BOB, crlf("Subject: fine\n\nbody\n"), when=1700000000)
    path = put_message(imap, BOB, crlf("Subject: far future\n\nbody\n"), when=1700000001)
    d, name = os.path.split(path)
    os.rename(path, os.path.join(d, "99999999999999" + name[len("1700000001"):]))
    c = login_select(imap, ctx)
    r = c.cmd("FETCH 1:2 (UID INTERNALDATE)")
    assert r.status == "NO" and "internal date" in r.tagged, r
    f = fetch_responses(r)
    assert list(f) == [1] and b"-Nov-2023 " in f[1]["INTERNALDATE"], f
    ev = imap.wait_event("mailbox-error", message="2")
    assert "has no IMAP date-time" in ev["_line"], ev
    assert set(fetch_responses(c.ok("FETCH 2 (FLAGS RFC822.SIZE)"))[2]) == {"FLAGS", "RFC822.SIZE"}
    c.logout()


# -- the Maildir shared with POP3 and SMTP --------------------------------------------------------

def test_pop3_deletion_is_an_expunge_for_imap(posthorn, cert, ctx):
    servers = {"mx": {"anonymous": True},
               "imap": {"anonymous": None, "extra": "\n".join([
                   "protocol imap", "tls {", f"    certificate {cert['crt']}",
                   f"    key {cert['key']}", "}"])},
               "pop": {"anonymous": None, "extra": "\n".join([
                   "protocol pop3", "auth {", "    plaintext-requires-tls no", "}"])}}
    p = posthorn(servers=servers)
    for i in range(2):
        deliver(p, BOB, f"Subject: shared {i}\r\n\r\nbody {i}\r\n")
    c = connect(p, tls="starttls", ctx=ctx)
    assert c.login(BOB, BOB_PW).ok
    c.select("INBOX")
    # POP3 deletes the first message
    pop = SMTPConn(p.port("pop"))
    p.conns.append(pop)
    for cmd, want in ((None, b"+OK"), (f"USER {BOB}", b"+OK"), (f"PASS {BOB_PW}", b"+OK"),
                      ("DELE 1", b"+OK"), ("QUIT", b"+OK")):
        if cmd:
            pop.send(cmd + "\r\n")
        line = pop.readline()
        assert line.startswith(want), (cmd, line)
    r = c.ok("NOOP")
    assert r.find(r"^\* 1 EXPUNGE$"), r
    f = fetch_responses(c.ok("FETCH 1:* (BODY.PEEK[HEADER.FIELDS (Subject)])"))
    assert list(f) == [1] and b"shared 1" in list(f[1].values())[0], f
    # SMTP delivers meanwhile: EXISTS
    deliver(p, BOB, "Subject: shared 2\r\n\r\nbody\r\n")
    r = c.ok("NOOP")
    assert r.find(r"^\* 2 EXISTS$"), r
    c.logout()


def test_select_unseen_and_copy_from_a_read_only_folder(imap, ctx):
    for i, info in enumerate(("S", "FS", "", "S")):
        put_message(imap, BOB, f"Subject: u{i}\n\nbody\n", when=1700000000 + i, sub="cur",
                    info=info)
    c = connect(imap, tls="imaps", ctx=ctx)
    assert c.login(BOB, BOB_PW).ok
    r = c.ok("EXAMINE INBOX")
    # the first unseen message (RFC 3501 §6.3.1, erratum 3032)
    assert r.find(r"^\* OK \[UNSEEN 3\]"), r
    # COPY out of a read-only folder is allowed and changes nothing there
    r = c.ok("COPY 2:3 Trash")
    assert r.code().startswith("COPYUID "), r
    assert status(c, "Trash") == {"MESSAGES": 2}
    assert sorted(info_flags(n) for n in folder_files(imap, BOB)) == ["", "FS", "S", "S"]
    c.logout()


def test_list_with_pathological_wildcards_is_fast(imap, ctx):
    """A pattern of many wildcards against long names is answered at once
    (a backtracking matcher would take exponential time)."""
    c = connect(imap, tls="imaps", ctx=ctx, timeout=30)
    assert c.login(BOB, BOB_PW).ok
    for i in range(20):
        c.ok(f"CREATE {'a' * 60}{i:02d}")
    pattern = "*a" * 25 + "*b"
    t0 = time.monotonic()
    r = c.ok(f'LIST "" "{pattern}"', timeout=30)
    took = time.monotonic() - t0
    assert not r.find(r"^\* LIST "), r
    r = c.ok('LIST "" "%a%a%a%a%a%a%a%a%a%a%a%a%a%a%a%a%a%a%a%a%a%a%a%a%19"', timeout=30)
    assert len(r.find(r"^\* LIST ")) == 1, r
    took = max(took, time.monotonic() - t0)
    print(f"pathological LIST patterns answered in {took:.2f}s")
    assert took < 5, took
    c.logout()
