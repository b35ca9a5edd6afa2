"""What real IMAP clients and Dovecot's imaptest compliance scripts found
in the field: ID before login names no version and ID is one log line
(RFC 2971); mailbox names with a backslash, "&" and modified UTF-7 round
trip and bad ones are refused with a reason (RFC 3501 §5.1, §5.1.3);
special uses are stored with the folder and follow a RENAME, CREATE takes
a USE (RFC 6154); COPY makes the copies \\Recent (RFC 3501 §6.4.7); LSUB
gives the \\Noselect parent of a subscribed child (RFC 3501 §6.3.9);
SEARCH FROM matches the address however the header writes it; ENVELOPE
keeps a source route (RFC 3501 §7.4.2); and a maximum-size ID fits the
command-line limit (RFC 2971 §3.3).
"""

import os
import re

import pytest

from imaputil import (BOB, BOB_PW, CAROL, CAROL_PW, client_ctx, connect, folder_path,
                      login_select, make_cert, parse_data, put_message, quote, start_imap,
                      text)


@pytest.fixture(scope="module")
def cert(posthorn_bin, tmp_path_factory):
    return make_cert(posthorn_bin, tmp_path_factory.mktemp("field-imap-cert"))


@pytest.fixture(scope="module")
def ctx(cert):
    return client_ctx(cert)


@pytest.fixture
def imap(posthorn, cert):
    return start_imap(posthorn, cert)


def login(p, ctx, user=BOB, password=BOB_PW):
    c = connect(p, tls="imaps", ctx=ctx)
    r = c.login(user, password)
    assert r.ok, r
    return c


def listing(c, args='"" "*"', cmd="LIST"):
    """{name: set of attributes (lower case)} of a LIST/LSUB."""
    r = c.ok(f"{cmd} {args}")
    out = {}
    for raw in r.untagged:
        if not raw.startswith(f"* {cmd} ".encode()):
            continue
        attrs, delim, name = parse_data(raw[len(cmd) + 3:])
        assert text(delim) == ".", raw
        out[text(name)] = {a.lower() for a in attrs}
    return out


def special(c, args='"" "*"'):
    """{name: its special-use attributes} of the folders that have any."""
    uses = {"\\sent", "\\drafts", "\\trash", "\\junk", "\\archive", "\\all", "\\flagged"}
    return {n: a & uses for n, a in listing(c, args).items() if a & uses}


# -- ID (RFC 2971) --------------------------------------------------------------------------

def id_reply(c, args):
    r = c.ok(f"ID {args}")
    [line] = r.find(r"^\* ID ")
    [fields] = parse_data(line[len("* ID "):].encode())
    return {text(k).lower(): text(v) for k, v in zip(fields[0::2], fields[1::2])}


def test_id_names_no_version_before_login(imap, ctx):
    c = connect(imap, tls="imaps", ctx=ctx)
    before = id_reply(c, '("name" "probe")')
    assert before == {"name": "posthorn"}, before
    assert c.login(BOB, BOB_PW).ok
    after = id_reply(c, "NIL")
    assert after.get("name") == "posthorn" and after.get("version"), after
    c.logout()


def test_id_is_one_log_line_with_every_field_escaped(imap, ctx):
    c = connect(imap, tls="imaps", ctx=ctx)
    mark = imap.log_mark()
    c.ok('ID ("name" "Mutt" "version" "2.2.9" "os" "Linux" "x-evil" "a\\" event=fake b")')
    c.logout()
    lines = [e["_line"] for e in imap.events("client-id", since=mark)]
    assert len(lines) == 1, lines
    line = lines[0]
    assert 'id-name="Mutt"' in line and 'id-version="2.2.9"' in line, line
    assert 'id-os="Linux"' in line, line
    # the client's quote cannot end the value: no second event= on the line
    assert line.count("event=") == 1 and "fields=4" in line, line


# -- mailbox names (RFC 3501 §5.1, §5.1.3) ---------------------------------------------------

ROUND_TRIP = ["foo\\bar", "A&-B", "Entw&APw-rfe", 'say "hi"', "tilde~and#hash",
              "Top.back\\slash"]


def test_folder_names_round_trip(imap, ctx):
    c = login(imap, ctx)
    root = imap.maildir(BOB)
    for name in ROUND_TRIP:
        c.ok(f"CREATE {quote(name)}")
        assert os.path.isdir(os.path.join(folder_path(imap, BOB, name), "cur")), name
        assert name in listing(c, f'"" {quote(name)}'), name
        c.ok(f"SELECT {quote(name)}")
        c.ok("UNSELECT")
        c.ok(f"RENAME {quote(name)} {quote(name + '2')}")
        assert set(listing(c, f'"" {quote(name + "*")}')) == {name + "2"}, name
        c.ok(f"DELETE {quote(name + '2')}")
        assert not listing(c, f'"" {quote(name + "*")}'), name
    # every directory stayed inside the Maildir
    assert sorted(os.listdir(os.path.dirname(root))) == [os.path.basename(root)]
    c.logout()


@pytest.mark.parametrize("name,why", [
    ("a..b", "empty hierarchy level"), (".lead", "empty hierarchy level"),
    ("x/y", '"/"'), ("tab\tname", "control"), ("&Jjo", "closing"),
    ("&AGE-", "printable"), ("&Jjo-&Jjo-", "side by side"), ("&2D0-", "surrogate"),
    ("&A-", "whole"), ("a%b", "wildcard"),
])
def test_bad_folder_names_refused_with_a_reason(imap, ctx, name, why):
    c = login(imap, ctx)
    before = sorted(os.listdir(imap.maildir(BOB)))
    r = c.cmd(f"CREATE {quote(name)}")
    assert r.status == "NO" and "Invalid mailbox name" in r.tagged and why in r.tagged, r
    assert sorted(os.listdir(imap.maildir(BOB))) == before
    c.logout()


# -- SPECIAL-USE (RFC 6154) ------------------------------------------------------------------

DEFAULT_USES = {"Sent": {"\\sent"}, "Drafts": {"\\drafts"}, "Trash": {"\\trash"},
                "Junk": {"\\junk"}}


def test_special_use_follows_rename(imap, ctx):
    c = login(imap, ctx)
    assert special(c) == DEFAULT_USES
    c.ok('RENAME Sent "Sent Items"')
    c.ok('CREATE Archive.Sent')
    want = dict(DEFAULT_USES)
    want["Sent Items"] = want.pop("Sent")
    assert special(c) == want
    assert special(c, '(SPECIAL-USE) "" "*"') == want
    assert special(c, '"" "*" RETURN (SPECIAL-USE)') == want
    c.ok("CREATE Sent")                     # a new folder of that name is no \Sent
    c.logout()
    c = login(imap, ctx)                    # kept on disk, across sessions
    assert special(c) == want
    assert set(listing(c, '(SPECIAL-USE) "" "*"')) == set(want)
    c.logout()


def test_special_use_given_to_an_older_store(imap, ctx):
    """A store made before uses were stored: its default folders get their
    use at the next login, once, and then it follows the folder."""
    root = imap.maildir(CAROL)
    for d in ("", ".Sent", ".Trash", ".Projects"):
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(root, d, sub), exist_ok=True)
    with open(os.path.join(root, "subscriptions"), "w") as f:
        f.write("INBOX\nSent\nTrash\n")
    c = login(imap, ctx, CAROL, CAROL_PW)
    assert special(c) == {"Sent": {"\\sent"}, "Trash": {"\\trash"}}
    c.ok("RENAME Sent Outbox")
    c.logout()
    c = login(imap, ctx, CAROL, CAROL_PW)
    assert special(c) == {"Outbox": {"\\sent"}, "Trash": {"\\trash"}}
    c.logout()


def test_create_with_special_use(imap, ctx):
    c = login(imap, ctx)
    assert "CREATE-SPECIAL-USE" in c.capabilities()
    c.ok("CREATE Old.Mail (USE (\\Archive))")
    c.ok('CREATE "My Drafts" (USE (\\Drafts \\Junk))')
    got = special(c)
    assert got["Old.Mail"] == {"\\archive"} and got["My Drafts"] == {"\\drafts", "\\junk"}, got
    assert "Old" in listing(c) and "Old" not in got          # the parent has no use
    for use in ("\\All", "\\Flagged", "\\Bogus"):
        r = c.cmd(f"CREATE Virtual (USE ({use}))")
        assert r.status == "NO" and r.code() == "USEATTR", r
    assert "Virtual" not in listing(c)
    for bad in ("CREATE X (FOO (\\Sent))", "CREATE X (USE \\Sent)", "CREATE X (USE (Sent))"):
        assert c.cmd(bad).status == "BAD", bad
    assert "X" not in listing(c)
    c.ok('RENAME "My Drafts" Work.Drafts')
    assert special(c)["Work.Drafts"] == {"\\drafts", "\\junk"}
    c.logout()


# -- COPY and \Recent (RFC 3501 §6.4.7) -----------------------------------------------------------

def test_copies_are_recent_in_the_destination(imap, ctx):
    for i in range(3):
        put_message(imap, BOB, f"Subject: m{i}\n\nbody {i}\n")
    a = login_select(imap, ctx)
    a.ok("STORE 1 +FLAGS (\\Seen)")
    a.ok("COPY 1:2 Trash")
    b = login(imap, ctx)
    r = b.select("Trash")
    assert "* 2 EXISTS" in r.lines() and "* 2 RECENT" in r.lines(), r
    r = b.ok("FETCH 1:2 FLAGS")
    flags = [line for line in r.lines() if "FETCH" in line]
    assert len(flags) == 2 and all("\\Recent" in f for f in flags), flags
    assert "\\Seen" in flags[0], flags                  # the flags came along
    b.logout()
    a.logout()


# -- LSUB (RFC 3501 §6.3.9) -----------------------------------------------------------------------

def test_lsub_gives_the_noselect_parent_of_a_subscribed_child(imap, ctx):
    c = login(imap, ctx)
    c.ok("CREATE x.y.z")
    c.ok("CREATE x.w")
    c.ok("SUBSCRIBE x.y.z")
    c.ok("SUBSCRIBE x.w")
    r = c.ok('LSUB "" x.%')
    assert r.find(r'^\* LSUB \(\\Noselect\) "\." x\.y$'), r
    assert listing(c, '"" x.%', "LSUB") == {"x.y": {"\\noselect"}, "x.w": {"\\hasnochildren"}}
    # "*" reaches the child itself: no parent then
    assert set(listing(c, '"" x*', "LSUB")) == {"x.y.z", "x.w"}
    assert listing(c, '"" %', "LSUB").get("x") == {"\\noselect"}
    c.ok("SUBSCRIBE x.y")                               # subscribed itself: as it is
    assert listing(c, '"" x.%', "LSUB")["x.y"] == {"\\haschildren"}
    c.logout()


# -- SEARCH on addresses ---------------------------------------------------------------------------

def test_search_from_matches_the_address_not_just_the_text(imap, ctx):
    put_message(imap, BOB, "From: <user-from (comment)@ (comment) domain.org>\n"
                           "To: Real To <user-to (c) @domain.org>\n"
                           "Cc: group: <user-cc@ domain.org>;\nSubject: a\n\nbody\n")
    put_message(imap, BOB, "From: other@domain.org\nSubject: b\n\nuser-from@domain.org\n")
    c = login_select(imap, ctx)
    for key, value in (("FROM", "user-from@domain.org"), ("TO", "user-to@domain.org"),
                       ("CC", "user-cc@domain.org"), ("TO", "Real To <user-to@domain.org>")):
        r = c.ok(f"SEARCH {key} {quote(value)}")
        assert r.find(r"^\* SEARCH 1$"), (key, value, r)
    r = c.ok('SEARCH FROM "comment"')                       # the header text still counts
    assert r.find(r"^\* SEARCH 1$"), r
    c.logout()


# -- ENVELOPE source route (RFC 3501 §7.4.2) ------------------------------------------------------

def test_envelope_keeps_a_source_route(imap, ctx):
    put_message(imap, BOB, "From: <@route:user@domain>\n"
                           "To: Name <@a.example,@b.example:u@d.example>, plain@d.example\n"
                           "Subject: r\n\nbody\n")
    c = login_select(imap, ctx)
    r = c.ok("FETCH 1 ENVELOPE")
    [line] = [u for u in r.untagged if b"ENVELOPE" in u]
    env = parse_data(line[line.index(b"(ENVELOPE ") + len(b"(ENVELOPE "):-1])[0]
    assert env[2] == [[None, b"@route", b"user", b"domain"]], env
    assert env[5] == [[b"Name", b"@a.example,@b.example", b"u", b"d.example"],
                      [None, None, b"plain", b"d.example"]], env
    c.logout()


# -- the command-line limit ------------------------------------------------------------------------

def test_maximum_size_id_and_long_lines_after_login(imap, ctx):
    c = connect(imap, tls="imaps", ctx=ctx)
    pairs = " ".join(f'"{chr(97 + i % 26)}{i:02d}{"k" * 27}" "{"v" * 1024}"' for i in range(30))
    r = c.cmd(f"ID ({pairs})")                           # RFC 2971 §3.3: the largest
    assert r.ok, r.tagged
    assert c.login(BOB, BOB_PW).ok
    c.select()
    long_needle = "n" * (60 * 1024)
    r = c.cmd(f"SEARCH BODY {quote(long_needle)}")
    assert r.ok and r.find(r"^\* SEARCH$"), r.tagged
    r = c.cmd("SEARCH BODY " + quote("n" * (64 * 1024)))
    assert r.status == "BAD" and "too long" in r.tagged, r.tagged
    c.ok("NOOP")                                          # still in step
    c.logout()
