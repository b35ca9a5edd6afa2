"""SORT and THREAD (RFC 5256) as webmail asks for them, driven by Python's
imaplib on a small threaded folder: SORT (REVERSE DATE), SORT with search
keys, UID SORT (SUBJECT) with RFC 2047 subjects and Re: prefixes, THREAD
REFERENCES and ORDEREDSUBJECT, an unknown charset, and the answers after
a new message arrives, after one is expunged and in the next connection
(the keys kept for the folder follow it).
"""

import imaplib

import pytest

from helpers import HOST
from imaputil import BOB, BOB_PW, client_ctx, make_cert, put_message, start_imap

DATE = "Mon, 1 Dec 2025 {}:00:00 +0000"

# (Message-ID, threading header, Subject, hour, From)
FOLDER = [
    ("<t1@x>", "", "Plans", 10, "Carol <carol@example.org>"),
    ("<t2@x>", "In-Reply-To: <t1@x>\n", "Re: Plans", 11, "alice@example.org"),
    ("<o1@x>", "", "Lunch?", 9, "Bob <bob@example.org>"),
    ("<t3@x>", "References: <t1@x> <t2@x>\n", "RE: Re: Plans", 12, "dave@example.org"),
    ("<o2@x>", "", "=?utf-8?q?R=C3=A9sum=C3=A9?=", 8, "Eve <eve@example.org>"),
]


def message(mid, thread, subject, hour, sender):
    return (f"From: {sender}\nTo: bob@example.org\nSubject: {subject}\nMessage-ID: {mid}\n"
            f"{thread}Date: {DATE.format(hour)}\n\nbody\n")


@pytest.fixture(scope="module")
def cert(posthorn_bin, tmp_path_factory):
    return make_cert(posthorn_bin, tmp_path_factory.mktemp("imap-sort-cert"))


def numbers(typ, data):
    assert typ == "OK", data
    return [int(x) for x in data[0].split()]


def test_sort_and_thread_as_webmail_asks(posthorn, cert):
    p = start_imap(posthorn, cert)
    for i, spec in enumerate(FOLDER):
        put_message(p, BOB, message(*spec), when=1700000000 + i)
    m = imaplib.IMAP4_SSL(HOST, p.imaps_port, ssl_context=client_ctx(cert), timeout=30)
    m.login(BOB, BOB_PW)
    caps = m.capabilities
    for cap in ("SORT", "SORT=DISPLAY", "THREAD=REFERENCES", "THREAD=ORDEREDSUBJECT"):
        assert cap in caps, caps
    assert m.select("INBOX")[0] == "OK"

    assert numbers(*m.sort("(REVERSE DATE)", "UTF-8", "ALL")) == [4, 2, 1, 3, 5]
    assert numbers(*m.sort("(DATE)", "UTF-8", "SUBJECT", "plans")) == [1, 2, 4]
    # base subjects: LUNCH?, PLANS (x3, ties by sequence), RÉSUMÉ
    typ, data = m.fetch("1:*", "(UID)")
    uid = {int(d.split()[0]): int(d.split()[2].rstrip(b")")) for d in data}
    assert numbers(*m.uid("SORT", "(SUBJECT)", "UTF-8", "ALL")) == [uid[n] for n in (3, 1, 2, 4, 5)]
    assert numbers(*m.sort("(DISPLAYFROM)", "UTF-8", "ALL")) == [2, 3, 1, 4, 5]
    typ, data = m.thread("REFERENCES", "UTF-8", "ALL")
    assert (typ, data) == ("OK", [b"(5)(3)(1 2 4)"])
    typ, data = m.thread("ORDEREDSUBJECT", "UTF-8", "ALL")
    assert (typ, data) == ("OK", [b"(5)(3)(1 (2)(4))"])
    typ, data = m._simple_command("SORT", "(DATE)", "KOI8-R", "ALL")
    assert typ == "NO" and data[-1].startswith(b"[BADCHARSET (UTF-8 US-ASCII)]"), data

    # a reply to "Lunch?" arrives, then the first message is expunged
    put_message(p, BOB, message("<o3@x>", "In-Reply-To: <o1@x>\n", "Re: Lunch?", 13,
                                "carol@example.org"), when=1700000100)
    assert m.noop()[0] == "OK"
    typ, data = m.thread("REFERENCES", "UTF-8", "ALL")
    assert (typ, data) == ("OK", [b"(5)(3 6)(1 2 4)"])
    assert numbers(*m.sort("(REVERSE DATE)", "UTF-8", "ALL")) == [6, 4, 2, 1, 3, 5]
    assert m.store("1", "+FLAGS", "\\Deleted")[0] == "OK"
    assert m.expunge()[0] == "OK"
    # <t1@x> is gone: its reply heads the thread (a dummy with one child
    # is no thread of its own)
    typ, data = m.thread("REFERENCES", "UTF-8", "ALL")
    assert (typ, data) == ("OK", [b"(4)(2 5)(1 3)"])
    assert numbers(*m.sort("(REVERSE DATE)", "UTF-8", "ALL")) == [5, 3, 1, 2, 4]
    m.logout()

    # webmail's next page is a new connection: the same answers
    m = imaplib.IMAP4_SSL(HOST, p.imaps_port, ssl_context=client_ctx(cert), timeout=30)
    m.login(BOB, BOB_PW)
    assert m.select("INBOX")[0] == "OK"
    assert numbers(*m.sort("(REVERSE DATE)", "UTF-8", "ALL")) == [5, 3, 1, 2, 4]
    assert m.thread("REFERENCES", "UTF-8", "ALL") == ("OK", [b"(4)(2 5)(1 3)"])
    m.logout()
