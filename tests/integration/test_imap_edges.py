"""Edges of RFC 3501 that mail programs run into: strings with
8-bit octets only ever sent as literals, the single-part message's part 1,
a BODYSTRUCTURE of a message without MIME headers, read-only EXAMINE that
never sets \\Seen, a failed SELECT that leaves the selected state, INBOX
in any case, modified UTF-7 folder names, COPY to a missing folder
([TRYCREATE]), UIDs never used twice (also across a restart after the
highest one was expunged), LOGIN with literals, pipelined commands,
AUTHENTICATE SCRAM-SHA-256 with SASL-IR, an EXPUNGE by another session
announced during IDLE (and a FETCH of the message it removed), and a
folder of 10,000 messages (FETCH of every ENVELOPE twice, SEARCH, RSS),
every SEARCH key of RFC 3501 §6.4.4 (also as UID SEARCH), UID COPY of
many messages keeping the COPYUID pairing, a 1 MB APPEND and
HEADER.FIELDS with repeated and folded fields, malformed and extreme MIME
with a BODYSTRUCTURE of valid syntax, ENVELOPE group syntax, 8-bit folder
names, IDLE's DONE pipelined, IDLE seeing APPEND and MOVE, and commands
dripped one octet per TLS record.
"""

import os
import re
import time

import pytest

from authutil import ScramClient
from helpers import vm_rss_kb
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
    # non-synchronizing (LITERAL+)
    c = connect(imap, tls="imaps", ctx=ctx)
    r = c.cmd(f"LOGIN {{{len(BOB)}+}}\r\n{BOB} {{{len(BOB_PW)}+}}\r\n{BOB_PW}")
    assert r.ok, r
    c.logout()


def test_pipelined_commands_answered_in_order(imap, ctx):
    for i in range(2):
        put_message(imap, BOB, f"Subject: p{i}\n\nbody\n")
    c = connect(imap, tls="imaps", ctx=ctx)
    c.send(f'p1 LOGIN "{BOB}" "{BOB_PW}"\r\np2 SELECT INBOX\r\np3 FETCH 1:* (UID FLAGS)\r\n'
           "p4 STORE 2 +FLAGS (\\Flagged)\r\np5 SEARCH FLAGGED\r\np6 NOOP\r\np7 LOGOUT\r\n")
    results = [c.collect(t) for t in ("p1", "p2", "p3", "p4", "p5", "p6", "p7")]
    assert all(r.ok for r in results), results
    assert "* 2 EXISTS" in results[1].lines()
    assert len(fetch_responses(results[2])) == 2
    assert results[4].find(r"^\* SEARCH 2$"), results[4]
    assert results[6].find(r"^\* BYE"), results[6]


def test_authenticate_scram_sha_256(imap, ctx):
    # inside TLS: before it, plaintext-requires-tls (the default) refuses
    # SCRAM-SHA-256 as it refuses PLAIN
    for tls in ("starttls", "imaps"):
        c = connect(imap, tls=tls, ctx=ctx)
        sc = ScramClient(BOB, BOB_PW)
        tag = c.send_cmd("AUTHENTICATE SCRAM-SHA-256 " + sc.first())       # SASL-IR
        line = c.line()
        assert line.startswith("+ "), line
        c.send(sc.final(line[2:]) + "\r\n")
        line = c.line()
        # the server-final message comes as a last challenge, answered empty
        assert line.startswith("+ "), line
        sc.check_server_final(line[2:])
        c.send(b"\r\n")
        r = c.collect(tag)
        assert r.ok, r
        c.select("INBOX")
        c.logout()
    logins = [e for e in imap.events("login") if e.get("user") == BOB]
    assert [e.get("mechanism") for e in logins] == ["SCRAM-SHA-256"] * 2, logins


def test_idle_sees_expunge_and_fetch_of_an_expunged_message(imap, ctx):
    for i in range(3):
        put_message(imap, BOB, f"Subject: e{i}\n\nbody {i}\n")
    a = login_select(imap, ctx)
    b = login_select(imap, ctx)
    # b removes message 2 while a is not told yet: a's FETCH of it must not
    # crash anything; it answers with the data or NO (RFC 2180 §4.1), never EXPUNGE
    b.ok("STORE 2 +FLAGS (\\Deleted)")
    b.ok("EXPUNGE")
    r = a.cmd("FETCH 2 (BODY[] FLAGS)")
    assert r.status in ("OK", "NO"), r
    assert not r.find(r"EXPUNGE$"), r
    r = a.ok("NOOP")
    assert r.find(r"^\* 2 EXPUNGE$"), r
    # during IDLE an EXPUNGE is announced as it happens
    tag = a.send_cmd("IDLE")
    assert a.line().startswith("+")
    b.ok("STORE 1 +FLAGS (\\Deleted)")
    b.ok("EXPUNGE")
    got = []
    while "* 1 EXPUNGE" not in got:
        got.append(a.line(timeout=10))
    a.send(b"DONE\r\n")
    assert a.collect(tag).ok
    f = fetch_responses(a.ok("FETCH 1:* (BODY.PEEK[HEADER.FIELDS (Subject)])"))
    assert [list(v.values())[0] for v in f.values()] == [b"Subject: e2\r\n\r\n"], f
    a.logout()
    b.logout()


def test_ten_thousand_messages(posthorn, cert, ctx):
    p = start_imap(posthorn, cert, asan_options={"quarantine_size_mb": "1"})
    n = 10000
    for i in range(n):
        put_message(p, BOB, f"From: s{i % 97}@example.org\nTo: bob@example.test\n"
                    f"Subject: bulk {i}\nMessage-ID: <b{i}@example.org>\n\nbody {i}\n",
                    when=1700000000 + i, sub="cur")
    c = login_select(p, ctx, timeout=300)
    t0 = time.monotonic()
    r = c.select("INBOX")
    assert f"* {n} EXISTS" in r.lines(), r.lines()[:5]
    before = vm_rss_kb(p.pid)
    times = []
    for _ in range(2):
        t0 = time.monotonic()
        f = fetch_responses(c.ok("FETCH 1:* (UID ENVELOPE)", timeout=300))
        times.append(time.monotonic() - t0)
        assert len(f) == n
        assert f[n]["ENVELOPE"][1] == f"bulk {n - 1}".encode(), f[n]
    r = c.ok("SEARCH FROM s5@example.org", timeout=300)
    [line] = r.find(r"^\* SEARCH")
    assert len(line.split()) - 2 == len([i for i in range(n) if i % 97 == 5]), line[:100]
    r = c.ok("UID SEARCH 1:* SUBJECT \"bulk 9999\"", timeout=300)
    assert len(r.find(r"^\* SEARCH \d+$")) == 1, r
    after = vm_rss_kb(p.pid)
    print(f"FETCH 1:{n} ENVELOPE: {times[0]:.1f}s, again {times[1]:.1f}s; "
          f"VmRSS {before} -> {after} KiB")
    assert after - before < 48 * 1024, f"RSS grew by {after - before} KiB"
    # half of them go: every EXPUNGE announced, here and in another session
    other = login_select(p, ctx, timeout=300)
    t0 = time.monotonic()
    c.ok("STORE 1:* +FLAGS.SILENT (\\Deleted)", timeout=300)
    c.ok("STORE 1:%d -FLAGS.SILENT (\\Deleted)" % (n // 2), timeout=300)
    r = c.ok("EXPUNGE", timeout=300)
    assert len(r.find(r"^\* \d+ EXPUNGE$")) == n // 2, len(r.untagged)
    r = other.ok("NOOP", timeout=300)
    assert len(r.find(r"^\* \d+ EXPUNGE$")) == n // 2, len(r.untagged)
    took = time.monotonic() - t0
    print(f"expunging {n // 2} of {n} took {took:.1f}s")
    assert took < 240, took
    assert len(folder_files(p, BOB)) == n // 2
    other.logout()
    c.logout()


# -- every SEARCH key of RFC 3501 §6.4.4 against known messages ---------------------------------

DAY = 86400
T0 = 1793613600          # 2026-11-02 08:00:00 UTC: internal dates are T0 + i days


def test_search_keys_table(imap, ctx):
    msgs = [
        # (text, info flags, internal date)
        ("From: Alice <alice@example.org>\nTo: bob@example.test\nCc: carol@example.test\n"
         "Bcc: hidden@example.org\nSubject: alpha\nDate: Mon, 02 Nov 2026 09:00:00 +0000\n"
         "X-Tag: red\n\nsmall body\n", "S", T0),
        ("From: Dave <dave@example.test>\nTo: carol@example.test\nSubject: beta\n"
         "Date: Tue, 03 Nov 2026 09:00:00 +0000\n\n" + "long body line\n" * 200, "FR", T0 + DAY),
        ("From: Alice <alice@example.org>\nTo: dave@example.test\nSubject: gamma\n"
         "Date: Wed, 04 Nov 2026 09:00:00 +0000\nX-Tag: blue\n\nbody gamma\n", "DT", T0 + 2 * DAY),
        ("From: Eve <eve@example.org>\nTo: bob@example.test\nSubject: delta\n"
         "Date: Thu, 05 Nov 2026 09:00:00 +0000\n\nlast body\n", "", T0 + 3 * DAY),
    ]
    for text_, info, when in msgs:
        put_message(imap, BOB, text_, when=when, sub="cur", info=info)
    # the fifth arrives in new/: \Recent for the first session that sees it
    put_message(imap, BOB, "From: Zed <zed@example.org>\nTo: bob@example.test\n"
                "Subject: epsilon\nDate: Fri, 06 Nov 2026 09:00:00 +0000\n\nnew one\n",
                when=T0 + 4 * DAY, sub="new")
    c = login_select(imap, ctx)
    sizes = [int(v["RFC822.SIZE"]) for _, v in
             sorted(fetch_responses(c.ok("FETCH 1:* RFC822.SIZE")).items())]
    table = [
        ("ALL", [1, 2, 3, 4, 5]),
        ("ANSWERED", [2]), ("UNANSWERED", [1, 3, 4, 5]),
        ("DELETED", [3]), ("UNDELETED", [1, 2, 4, 5]),
        ("DRAFT", [3]), ("UNDRAFT", [1, 2, 4, 5]),
        ("FLAGGED", [2]), ("UNFLAGGED", [1, 3, 4, 5]),
        ("SEEN", [1]), ("UNSEEN", [2, 3, 4, 5]),
        ("RECENT", [5]), ("NEW", [5]), ("OLD", [1, 2, 3, 4]),
        ("FROM alice", [1, 3]), ("TO carol", [2]), ("CC carol", [1]),
        ("BCC hidden", [1]), ("SUBJECT GAMMA", [3]),
        ("HEADER X-Tag red", [1]), ("HEADER X-Tag \"\"", [1, 3]),
        ("BODY \"long body line\"", [2]), ("TEXT eve", [4]),
        ("BEFORE 03-Nov-2026", [1]), ("ON 03-Nov-2026", [2]), ("SINCE 04-Nov-2026", [3, 4, 5]),
        ("SENTBEFORE 03-Nov-2026", [1]), ("SENTON 04-Nov-2026", [3]),
        ("SENTSINCE 04-Nov-2026", [3, 4, 5]),
        (f"LARGER {sizes[0]}", [i + 1 for i, s in enumerate(sizes) if s > sizes[0]]),
        (f"SMALLER {sizes[1]}", [i + 1 for i, s in enumerate(sizes) if s < sizes[1]]),
        ("2:3", [2, 3]), ("*", [5]), ("1,4", [1, 4]),
        ("NOT SEEN", [2, 3, 4, 5]), ("OR SEEN FLAGGED", [1, 2]),
        ("(FROM alice SUBJECT gamma)", [3]), ("FROM alice NOT DELETED", [1]),
        ("OR (FROM eve) (OR DRAFT ANSWERED)", [2, 3, 4]),
        ("KEYWORD $Forwarded", []), ("UNKEYWORD $Forwarded", [1, 2, 3, 4, 5]),
        ("UNDELETED UNSEEN SINCE 03-Nov-2026", [2, 4, 5]),
    ]
    f = fetch_responses(c.ok("FETCH 1:* UID"))
    uids = [int(f[i]["UID"]) for i in (1, 2, 3, 4, 5)]
    table.append((f"UID {uids[1]}:{uids[2]}", [2, 3]))
    wrong = []
    for key, want in table:
        r = c.cmd(f"SEARCH {key}")
        lines = r.find(r"^\* SEARCH")
        got = sorted(int(x) for x in lines[0].split()[2:]) if r.ok and len(lines) == 1 else r
        if got != want:
            wrong.append((key, want, got))
        # UID SEARCH answers the same messages by UID
        r = c.cmd(f"UID SEARCH {key}")
        lines = r.find(r"^\* SEARCH")
        ugot = sorted(int(x) for x in lines[0].split()[2:]) if r.ok and len(lines) == 1 else r
        if ugot != [uids[i - 1] for i in want]:
            wrong.append(("UID " + key, want, ugot))
    assert not wrong, "\n".join(f"SEARCH {k}: expected {w}, got {g}" for k, w, g in wrong)
    c.logout()


def test_copy_many_keeps_the_uid_pairing(imap, ctx):
    for i in range(40):
        put_message(imap, BOB, f"Subject: many {i}\n\nbody {i}\n", when=T0 + i)
    c = login_select(imap, ctx)
    c.ok("STORE 5:9 +FLAGS (\\Deleted)")
    c.ok("EXPUNGE")                                     # holes in the UIDs
    r = c.ok("UID COPY 1:* Junk")
    kind, validity, src, dst = r.code().split()
    assert kind == "COPYUID"
    src, dst = uid_list(src), uid_list(dst)
    assert len(src) == len(dst) == 35, (src, dst)
    subjects = {}
    f = fetch_responses(c.ok("FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (Subject)])"))
    for v in f.values():
        subjects[int(v["UID"])] = [x for k, x in v.items() if k.startswith("BODY[")][0]
    c.select("Junk")
    f = fetch_responses(c.ok("FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (Subject)])"))
    junk = {int(v["UID"]): [x for k, x in v.items() if k.startswith("BODY[")][0]
            for v in f.values()}
    # the n-th source UID went to the n-th destination UID
    assert [junk[d] for d in dst] == [subjects[s] for s in src]
    c.logout()


def uid_list(s):
    out = []
    for part in s.split(","):
        a, _, b = part.partition(":")
        out += list(range(int(a), int(b or a) + 1)) if int(b or a) >= int(a) else \
            list(range(int(a), int(b) - 1, -1))
    return out


def test_append_of_a_megabyte_and_header_fields(imap, ctx):
    body = b"".join(b"line %06d of the appended message\r\n" % i for i in range(30000))
    msg = (b"From: a@example.org\r\nSubject: first\r\nX-Multi: one\r\nsubject: second\r\n"
           b"X-Folded: part one\r\n\tpart two\r\nX-Multi: two\r\n\r\n" + body)
    c = login_select(imap, ctx, timeout=60)
    tag = c.send_cmd("APPEND INBOX {%d}" % len(msg))
    assert c.line().startswith("+")
    c.send(msg + b"\r\n")
    r = c.collect(tag, timeout=60)
    assert r.ok and r.code().startswith("APPENDUID"), r
    c.ok("NOOP")
    f = fetch_responses(c.ok("FETCH 1 (RFC822.SIZE BODY.PEEK[] "
                             "BODY.PEEK[HEADER.FIELDS (x-multi SUBJECT X-Folded)])", timeout=60))
    v = f[1]
    assert v["RFC822.SIZE"] == str(len(msg)) and v["BODY[]"] == msg
    [hk] = [k for k in v if k.startswith("BODY[HEADER.FIELDS")]
    # every occurrence, in the message's order, folding kept, names as written
    assert v[hk] == (b"Subject: first\r\nX-Multi: one\r\nsubject: second\r\n"
                     b"X-Folded: part one\r\n\tpart two\r\nX-Multi: two\r\n\r\n"), v[hk]
    c.logout()


def test_8bit_mailbox_names_refused(imap, ctx):
    """Mailbox names are 7-bit modified UTF-7 (RFC 3501 §5.1.3); raw UTF-8
    is refused rather than stored under a name no client can ask for."""
    c = connect(imap, tls="imaps", ctx=ctx)
    assert c.login(BOB, BOB_PW).ok
    name = "Entwürfe".encode()
    tag = c.send_cmd(b"CREATE {%d}" % len(name))
    line = c.line()
    if line.startswith("+"):
        c.send(name + b"\r\n")
        answer = c.collect(tag).tagged
    else:                                   # refused before the literal
        assert line.startswith(tag + " "), line
        answer = line[len(tag) + 1:]
    assert answer.split()[0] in ("NO", "BAD"), answer
    assert not [d for d in os.listdir(imap.maildir(BOB)) if not d.isascii()]
    c.logout()


# -- malformed and extreme MIME: BODYSTRUCTURE stays valid RFC 3501 syntax -----------------------

def valid_nstring(v):
    return v is None or isinstance(v, bytes)


def valid_params(v):
    return v is None or (isinstance(v, list) and v and len(v) % 2 == 0
                         and all(isinstance(x, bytes) for x in v))


def valid_number(v):
    return isinstance(v, str) and v.isdigit()


def valid_envelope(e):
    if not (isinstance(e, list) and len(e) == 10):
        return False
    addrs_ok = all(a is None or (isinstance(a, list) and a and all(
        isinstance(x, list) and len(x) == 4 and all(valid_nstring(y) for y in x) for x in a))
        for a in e[2:8])
    return addrs_ok and all(valid_nstring(x) for x in (e[0], e[1], e[8], e[9]))


def check_body_syntax(b, depth=0, where="body"):
    """RFC 3501 §9 body: raises AssertionError naming the first bad place."""
    assert isinstance(b, list) and b, f"{where}: not a list: {b!r}"
    assert depth < 200, where
    if isinstance(b[0], list):                          # body-type-mpart
        i = 0
        while i < len(b) and isinstance(b[i], list):
            check_body_syntax(b[i], depth + 1, f"{where}.{i + 1}")
            i += 1
        assert i >= 1 and i < len(b) and isinstance(b[i], bytes), f"{where}: subtype {b[i:]!r}"
        ext = b[i + 1:]
        if ext:
            assert valid_params(ext[0]), f"{where}: params {ext[0]!r}"
        return
    assert len(b) >= 7, f"{where}: {b!r}"
    typ, sub, params, cid, desc, enc, size = b[:7]
    assert isinstance(typ, bytes) and isinstance(sub, bytes), f"{where}: type {b[:2]!r}"
    assert valid_params(params), f"{where}: params {params!r}"
    assert valid_nstring(cid) and valid_nstring(desc), f"{where}: id/desc {b[3:5]!r}"
    assert isinstance(enc, bytes) and valid_number(size), f"{where}: enc/size {b[5:7]!r}"
    rest = b[7:]
    if typ.lower() == b"message" and sub.lower() == b"rfc822":
        assert len(rest) >= 3 and valid_envelope(rest[0]), f"{where}: envelope {rest[:1]!r}"
        check_body_syntax(rest[1], depth + 1, where + ".msg")
        assert valid_number(rest[2]), f"{where}: lines {rest[2]!r}"
    elif typ.lower() == b"text":
        assert rest and valid_number(rest[0]), f"{where}: lines {rest[:1]!r}"


def nested(depth):
    head = "Subject: deep\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b0\"\n\n"
    out = head
    for i in range(1, depth):
        out += f"--b{i - 1}\nContent-Type: multipart/mixed; boundary=\"b{i}\"\n\n"
    out += f"--b{depth - 1}\nContent-Type: text/plain\n\ninnermost\n"
    for i in reversed(range(depth)):
        out += f"--b{i}--\n"
    return out


WEIRD = {
    "deep-nesting": nested(60),
    "many-parts": "Subject: many\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=x\n\n"
                  + "".join(f"--x\nContent-Type: text/plain\n\npart {i}\n" for i in range(1500))
                  + "--x--\n",
    "no-final-boundary": "Subject: cut\nContent-Type: multipart/mixed; boundary=x\n\n"
                         "--x\nContent-Type: text/plain\n\nfirst\n--x\nContent-Type: text/html\n\n<p>\n",
    "no-parts": "Subject: empty\nContent-Type: multipart/mixed; boundary=x\n\njust a preamble\n",
    "garbage-type": "Subject: g\nContent-Type: ;;;=\"\n\nbody\n",
    "bad-params": "Subject: p\nContent-Type: text/plain; charset; =x; name=\"unterminated\n\nb\n",
    "unknown-cte": "Subject: c\nContent-Type: text/plain\nContent-Transfer-Encoding: x-weird\n\nb\n",
    "bad-rfc822": "Subject: r\nContent-Type: multipart/mixed; boundary=x\n\n--x\n"
                  "Content-Type: message/rfc822\n\nnot a header at all\n--x--\n",
    "addresses": "From: <>, ,\"unterminated <a@b\nTo: undisclosed-recipients:;\n"
                 "Cc: a@b@c, (comment only)\nSubject: addr\n\nb\n",
    "header-only": "Subject: no body and no blank line\n",
    "empty": "",
}


@pytest.mark.parametrize("kind", sorted(WEIRD))
def test_weird_mime_gives_valid_bodystructure(imap, ctx, kind):
    put_message(imap, BOB, WEIRD[kind])
    c = login_select(imap, ctx, timeout=60)
    r = c.ok("FETCH 1 (ENVELOPE BODYSTRUCTURE BODY RFC822.SIZE)", timeout=60)
    f = fetch_responses(r)[1]
    assert valid_envelope(f["ENVELOPE"]), f["ENVELOPE"]
    check_body_syntax(f["BODYSTRUCTURE"])
    check_body_syntax(f["BODY"])
    assert int(f["RFC822.SIZE"]) == len(crlf(WEIRD[kind]))
    # the whole message and part 1 can be fetched
    f = fetch_responses(c.ok("FETCH 1 (BODY.PEEK[] BODY.PEEK[1])", timeout=60))[1]
    assert f["BODY[]"] == crlf(WEIRD[kind]), f
    r = c.ok("SEARCH BODY innermost")
    assert r.find(r"^\* SEARCH( 1)?$"), r
    c.logout()


def test_envelope_group_syntax(imap, ctx):
    """RFC 3501 §7.4.2: a group is a start marker (mailbox = group name,
    host NIL), its members, and an end marker (all NIL)."""
    put_message(imap, BOB, "From: a@example.org\nTo: undisclosed-recipients:;\n"
                "Cc: Team: x@example.org, \"Y Person\" <y@example.org>;\nSubject: groups\n\nb\n")
    c = login_select(imap, ctx)
    env = fetch_responses(c.ok("FETCH 1 ENVELOPE"))[1]["ENVELOPE"]
    end = [None, None, None, None]
    assert env[5] == [[None, None, b"undisclosed-recipients", None], end], env[5]
    assert env[6] == [[None, None, b"Team", None], [None, None, b"x", b"example.org"],
                      [b"Y Person", None, b"y", b"example.org"], end], env[6]
    c.logout()


def test_idle_done_pipelined_with_the_next_commands(imap, ctx):
    put_message(imap, BOB, "Subject: one\n\nbody\n")
    c = login_select(imap, ctx)
    tag = c.send_cmd("IDLE")
    assert c.line().startswith("+")
    c.send(b"DONE\r\nq1 NOOP\r\nq2 FETCH 1 (FLAGS)\r\nq3 IDLE\r\n")
    assert c.collect(tag).ok
    assert c.collect("q1").ok
    assert fetch_responses(c.collect("q2"))
    assert c.line().startswith("+")
    c.send(b"done\r\n")                                      # case-insensitive
    assert c.collect("q3").ok
    c.logout()


def test_idle_sees_an_append_and_a_move_from_another_session(imap, ctx):
    c = login_select(imap, ctx, mailbox="Trash")
    other = login_select(imap, ctx)
    tag = c.send_cmd("IDLE")
    assert c.line().startswith("+")
    msg = b"Subject: appended elsewhere\r\n\r\nx\r\n"
    other.ok("APPEND Trash {%d+}\r\n%s" % (len(msg), msg.decode()))
    got = []
    while "* 1 EXISTS" not in got:
        got.append(c.line(timeout=10))
    other.ok("APPEND INBOX {%d+}\r\n%s" % (len(msg), msg.decode()))
    other.ok("NOOP")
    other.ok("MOVE 1 Trash")
    while "* 2 EXISTS" not in got:
        got.append(c.line(timeout=10))
    c.send(b"DONE\r\n")
    assert c.collect(tag).ok
    c.logout()
    other.logout()


def test_commands_dripped_one_octet_at_a_time(imap, ctx):
    """Every octet in its own TLS record: the parser is incremental across
    reads, literals included."""
    put_message(imap, BOB, "Subject: drip\n\nbody\n")
    c = connect(imap, tls="imaps", ctx=ctx)

    def drip(data):
        for i in range(len(data)):
            c.send(data[i:i + 1])

    drip(b"d1 LOGIN {%d}\r\n" % len(BOB))
    assert c.line().startswith("+")
    drip(BOB.encode() + b" {%d+}\r\n" % len(BOB_PW) + BOB_PW.encode() + b"\r\n")
    r = c.collect("d1")
    assert r.ok, r
    drip(b"d2 SELECT INBOX\r\nd3 FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n")
    assert c.collect("d2").ok
    f = fetch_responses(c.collect("d3"))
    assert list(f[1].values()) == [b"Subject: drip\r\n\r\n"], f
    c.logout()


def test_no_expunge_without_a_command_in_progress(imap, ctx):
    """RFC 3501 §7.4.1: an EXPUNGE response is never sent when no command is
    in progress (outside IDLE); it comes with the next NOOP."""
    for i in range(2):
        put_message(imap, BOB, f"Subject: q{i}\n\nbody\n")
    a = login_select(imap, ctx)
    b = login_select(imap, ctx)
    b.ok("STORE 1 +FLAGS (\\Deleted)")
    b.ok("EXPUNGE")
    unsolicited = a.quiet(2.0)
    assert b"EXPUNGE" not in unsolicited, unsolicited
    r = a.ok("NOOP")
    assert r.find(r"^\* 1 EXPUNGE$"), (unsolicited, r)
    a.logout()
    b.logout()
