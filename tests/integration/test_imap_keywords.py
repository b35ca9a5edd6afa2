"""Keywords (RFC 3501 §2.3.2 flag-keyword), driven by Python's imaplib:
stored per message as Dovecot stores them in a Maildir (letters a-z in
the file name's info, named by the folder's dovecot-keywords file), shown
in FETCH FLAGS, FLAGS and PERMANENTFLAGS, searched with KEYWORD and
UNKEYWORD, kept by COPY, MOVE and APPEND, at most 26 per folder.
"""

import imaplib
import os

import pytest

from helpers import HOST
from imaputil import (BOB, BOB_PW, client_ctx, folder_files, folder_path, imaplib_fetch,
                      info_flags, make_cert, put_message, start_imap, text)

MSG = "From: a@example.org\nSubject: {}\n\nbody {}\n"


@pytest.fixture(scope="module")
def cert(posthorn_bin, tmp_path_factory):
    return make_cert(posthorn_bin, tmp_path_factory.mktemp("imap-keywords-cert"))


@pytest.fixture
def imap(posthorn, cert):
    return start_imap(posthorn, cert)


def client(p, cert):
    m = imaplib.IMAP4_SSL(HOST, p.imaps_port, ssl_context=client_ctx(cert), timeout=30)
    m.login(BOB, BOB_PW)
    return m


def flags_of(m, seq="1:*"):
    """{seq: set of flags} from FETCH FLAGS."""
    typ, data = m.fetch(seq, "(FLAGS)")
    assert typ == "OK", data
    return {n: {text(f) for f in d["FLAGS"]} for n, d in imaplib_fetch(data).items()}


def search(m, *criteria):
    typ, data = m.search(None, *criteria)
    assert typ == "OK", data
    return [int(x) for x in data[0].split()]


def keywords_file(p, folder=None):
    """{index: name} of a folder's dovecot-keywords."""
    with open(os.path.join(folder_path(p, BOB, folder), "dovecot-keywords")) as f:
        return {int(n): name for n, name in (line.split(" ", 1) for line in f.read().splitlines())}


def select_flags(m, mailbox="INBOX"):
    """(FLAGS, PERMANENTFLAGS) of a SELECT, as sets."""
    typ, data = m.select(mailbox)
    assert typ == "OK", data
    flags = m.response("FLAGS")[1][-1].decode()
    perm = m.response("PERMANENTFLAGS")[1][-1].decode()
    return set(flags.strip("()").split()), set(perm.strip("()").split())


def test_store_fetch_search_and_a_new_session(imap, cert):
    put_message(imap, BOB, MSG.format("one", 1))
    put_message(imap, BOB, MSG.format("two", 2))
    m = client(imap, cert)
    _, perm = select_flags(m)
    assert "\\*" in perm, perm
    typ, data = m.store("1", "+FLAGS", "($Junk $Forwarded)")
    assert typ == "OK", data
    assert flags_of(m)[1] >= {"$Junk", "$Forwarded"}
    assert search(m, "KEYWORD", "$Junk") == [1]
    assert search(m, "UNKEYWORD", "$Junk") == [2]
    assert search(m, "KEYWORD", "$NeverUsed") == []
    m.logout()

    # on disk as Dovecot keeps them
    assert set(keywords_file(imap).values()) == {"$Junk", "$Forwarded"}
    letters = [info_flags(n) for n in folder_files(imap, BOB, subs=("cur",))]
    assert sorted(letters) == ["", "ab"], letters

    m = client(imap, cert)
    flags, _ = select_flags(m)
    assert {"$Junk", "$Forwarded"} <= flags, flags
    assert flags_of(m)[1] >= {"$Junk", "$Forwarded"}
    typ, data = m.store("1", "-FLAGS", "($Junk)")
    assert typ == "OK", data
    got = flags_of(m)
    assert "$Junk" not in got[1] and "$Forwarded" in got[1], got
    assert search(m, "KEYWORD", "$Junk") == []
    assert search(m, "KEYWORD", "$Forwarded") == [1]
    m.logout()


def test_copy_and_move_keep_keywords_through_the_destination_file(imap, cert):
    put_message(imap, BOB, MSG.format("copy me", 1))
    put_message(imap, BOB, MSG.format("move me", 2))
    m = client(imap, cert)
    assert m.create("Archive")[0] == "OK"
    # the destination has a keyword of its own already: letters differ
    with open(os.path.join(folder_path(imap, BOB, "Archive"), "dovecot-keywords"), "w") as f:
        f.write("0 Other\n")
    m.select("INBOX")
    assert m.store("1", "+FLAGS", "($Junk \\Flagged)")[0] == "OK"
    assert m.store("2", "+FLAGS", "($Forwarded)")[0] == "OK"
    assert m.copy("1", "Archive")[0] == "OK"
    typ, data = m._simple_command("MOVE", "2", "Archive")
    assert typ == "OK", data
    m.select("Archive")
    got = flags_of(m)
    assert {"$Junk", "\\Flagged"} <= got[1] and "Other" not in got[1], got
    assert "$Forwarded" in got[2] and "$Junk" not in got[2], got
    assert search(m, "KEYWORD", "$Forwarded") == [2]
    m.logout()
    names = keywords_file(imap, "Archive")
    assert names[0] == "Other" and {"$Junk", "$Forwarded"} <= set(names.values()), names
    junk = "abcdefghijklmnopqrstuvwxyz"[[k for k, v in names.items() if v == "$Junk"][0]]
    files = folder_files(imap, BOB, "Archive")
    assert any(junk in info_flags(n) and "F" in info_flags(n) for n in files), files


def test_append_with_a_keyword(imap, cert):
    m = client(imap, cert)
    msg = b"From: a@example.org\r\nSubject: appended\r\n\r\nhi\r\n"
    typ, data = m.append("INBOX", "(Important \\Seen)", None, msg)
    assert typ == "OK", data
    m.select("INBOX")
    assert flags_of(m)[1] >= {"Important", "\\Seen"}
    assert search(m, "KEYWORD", "important") == [1]
    m.logout()


def test_a_dovecot_maildir_is_read_with_its_keywords(imap, cert):
    root = folder_path(imap, BOB)
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "dovecot-keywords"), "w") as f:
        f.write("0 $Label1\n1 NonJunk\nnot a line\n7\n40 TooFar\n")
    put_message(imap, BOB, MSG.format("from dovecot", 1), sub="cur", info="Sa")
    put_message(imap, BOB, MSG.format("from dovecot too", 2), sub="cur", info="Sb")
    m = client(imap, cert)
    flags, _ = select_flags(m)
    assert {"$Label1", "NonJunk"} <= flags and "TooFar" not in flags, flags
    got = flags_of(m)
    assert got[1] == {"\\Seen", "$Label1"}, got
    assert got[2] == {"\\Seen", "NonJunk"}, got
    m.logout()


def test_26_keywords_then_limit(imap, cert):
    put_message(imap, BOB, MSG.format("many", 1))
    put_message(imap, BOB, MSG.format("more", 2))
    m = client(imap, cert)
    m.select("INBOX")
    names = [f"kw{i}" for i in range(26)]
    typ, data = m.store("1", "+FLAGS", "(" + " ".join(names) + ")")
    assert typ == "OK", data
    assert flags_of(m)[1] >= set(names)
    _, perm = select_flags(m)
    assert "\\*" not in perm and set(names) <= perm, perm
    typ, data = m.store("1", "+FLAGS", "(kw26)")
    assert typ == "NO" and b"[LIMIT]" in data[0], (typ, data)
    assert "kw26" not in flags_of(m)[1]
    typ, data = m.store("2", "+FLAGS", "(kw3)")   # an existing one still works
    assert typ == "OK", data
    assert "kw3" in flags_of(m)[2]
    m.logout()


def test_bad_keywords_are_refused(imap, cert):
    put_message(imap, BOB, MSG.format("bad", 1))
    m = client(imap, cert)
    m.select("INBOX")
    with pytest.raises(imaplib.IMAP4.error):
        m.store("1", "+FLAGS", "(" + "k" * 65 + ")")
    typ, data = m.store("1", "+FLAGS", "(" + "k" * 64 + ")")
    assert typ == "OK", data
    assert "k" * 64 in flags_of(m)[1]
    m.logout()
