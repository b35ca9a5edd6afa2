"""SEARCH, ESEARCH, SORT and THREAD with text keys (BODY, TEXT, HEADER),
whose message files are read on worker threads, driven by Python's
imaplib over a folder of 600 messages of every kind a text search must
decode (plain US-ASCII and UTF-8, quoted-printable with soft line
breaks, base64, latin-1, RFC 2047 subjects, multipart), against the
answers worked out here; then a SEARCH cut off by the client's going
away, after which the daemon serves the next session.
"""

import imaplib
import socket

import pytest

from helpers import HOST
from imaputil import BOB, BOB_PW, client_ctx, make_cert, put_message, start_imap

# (kind, text of a message with "needle" where it matches BODY needle)
KINDS = [
    ("plain", "Subject: plain {i}\n\nA NEEDLE in plain text\n"),
    ("utf8", "Subject: utf8 {i}\nContent-Type: text/plain; charset=utf-8\n"
             "Content-Transfer-Encoding: 8bit\n\nGr\u00fc\u00dfe and a needle\n"),
    ("qp", "Subject: qp {i}\nContent-Type: text/plain; charset=us-ascii\n"
           "Content-Transfer-Encoding: quoted-printable\n\nnee=\ndle split by a soft break\n"),
    ("base64", "Subject: b64 {i}\nContent-Transfer-Encoding: base64\n\nbmVlZGxlIGluIGJhc2U2NAo=\n"),
    ("latin1", "Subject: latin {i}\nContent-Type: text/plain; charset=iso-8859-1\n"
               "Content-Transfer-Encoding: quoted-printable\n\nGr=FC=DFe, no match here\n"),
    ("multipart", "Subject: multi {i}\nContent-Type: multipart/mixed; boundary=b\n\n--b\n"
                  "Content-Description: needle only in the part's header\n"
                  "Content-Type: text/plain\n\nnothing\n--b--\n"),
    ("subject", "Subject: =?utf-8?q?the_needle_{i}?=\n\nnothing in the body\n"),
    ("none", "Subject: none {i}\n\nhay and more hay\n"),
]
BODY_HAS = {"plain", "utf8", "qp", "base64"}
SUBJECT_HAS = {"subject"}
GRUSS = {"utf8", "latin1"}
N = 600


@pytest.fixture(scope="module")
def cert(posthorn_bin, tmp_path_factory):
    return make_cert(posthorn_bin, tmp_path_factory.mktemp("imap-search-text-cert"))


def numbers(typ, data):
    assert typ == "OK", data
    return [int(x) for x in data[0].split()]


def test_text_keys_on_workers(posthorn, cert):
    p = start_imap(posthorn, cert)
    kinds = []
    for i in range(N):
        kind, text = KINDS[i % len(KINDS)]
        info = "S" if i % 2 else ""
        day = i % 28 + 1
        date = f"Date: {day} Dec 2025 23:30:00 -0500\n" if i % 50 else ""
        put_message(p, BOB, f"From: a{i}@example.org\n{date}" + text.format(i=i),
                    when=1700000000 + i, sub="cur", info=info)
        kinds.append((kind, bool(info), day if date else None))
    m = imaplib.IMAP4_SSL(HOST, p.imaps_port, ssl_context=client_ctx(cert), timeout=60)
    m.login(BOB, BOB_PW)
    assert m.select("INBOX")[0] == "OK"

    def where(pred):
        return [i + 1 for i, (k, seen, _) in enumerate(kinds) if pred(k, seen)]

    body = where(lambda k, s: k in BODY_HAS)
    text = where(lambda k, s: k in BODY_HAS | SUBJECT_HAS)
    assert numbers(*m.search(None, "BODY", "needle")) == body
    assert numbers(*m.search(None, "TEXT", "NEEDLE")) == text
    assert numbers(*m.search(None, "SUBJECT", "needle")) == where(lambda k, s: k in SUBJECT_HAS)
    assert numbers(*m.search(None, "HEADER", "Content-Description", '""')) == []
    # decoded to UTF-8 and case-folded, whatever the charset
    m.literal = "GR\u00dc\u00dfE".encode()
    assert numbers(*m.search("UTF-8", "BODY")) == where(
        lambda k, s: k in GRUSS)
    # text keys beside keys the view answers
    assert numbers(*m.search(None, "UNSEEN", "BODY", "needle")) == where(
        lambda k, s: k in BODY_HAS and not s)
    assert numbers(*m.search(None, "OR", "SEEN", "NOT", "TEXT", "needle")) == where(
        lambda k, s: s or k not in BODY_HAS | SUBJECT_HAS)
    assert numbers(*m.search(None, "1:100", "BODY", "needle")) == [n for n in body if n <= 100]
    typ, data = m.uid("SEARCH", "BODY", "needle")
    typ2, uids = m.fetch("1:*", "(UID)")
    uid_of = {int(d.split()[0]): int(d.split()[2].rstrip(b")")) for d in uids}
    assert numbers(typ, data) == [uid_of[n] for n in body]
    typ, data = m._simple_command("SEARCH", "RETURN", "(COUNT MIN MAX)", "BODY", "needle")
    assert typ == "OK"
    assert m.untagged_responses.pop("ESEARCH")[-1].endswith(
        f"MIN {body[0]} MAX {body[-1]} COUNT {len(body)}".encode())
    # the Date:'s own day, whatever its zone (RFC 3501 §6.4.4); without
    # one, the internal date (14-Nov-2023 here)
    on5 = [i + 1 for i, (_, _, d) in enumerate(kinds) if d == 5]
    assert numbers(*m.search(None, "SENTON", "5-Dec-2025")) == on5
    assert numbers(*m.search(None, "SENTBEFORE", "1-Jan-2025")) == [
        i + 1 for i, (_, _, d) in enumerate(kinds) if d is None]
    assert numbers(*m.search(None, "SENTSINCE", "20-Dec-2025", "BODY", "needle")) == [
        i + 1 for i, (k, _, d) in enumerate(kinds) if d and d >= 20 and k in BODY_HAS]
    # SORT and THREAD take the same keys (RFC 5256 §3)
    assert numbers(*m.sort("(REVERSE ARRIVAL)", "UTF-8", "BODY", "needle")) == body[::-1]
    typ, data = m.thread("ORDEREDSUBJECT", "UTF-8", "SUBJECT", "needle")
    assert typ == "OK" and data[0].count(b"(") == len(where(lambda k, s: k in SUBJECT_HAS))
    m.logout()

    # a client gone in the middle of a search: the workers' answers are
    # dropped, and the next session is served
    s = socket.create_connection((HOST, p.port("imap")), timeout=30)
    s.recv(4096)
    s.sendall(b"a LOGIN " + BOB.encode() + b" " + BOB_PW.encode() + b"\r\n"
              b"b SELECT INBOX\r\nc SEARCH TEXT nothing-matches\r\n")
    s.close()
    m = imaplib.IMAP4_SSL(HOST, p.imaps_port, ssl_context=client_ctx(cert), timeout=60)
    m.login(BOB, BOB_PW)
    assert m.select("INBOX")[0] == "OK"
    assert numbers(*m.search(None, "BODY", "needle")) == body
    m.logout()
