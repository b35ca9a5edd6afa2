"""UTF8=ACCEPT (RFC 6855): after ENABLE UTF8=ACCEPT mailbox names are
UTF-8 on the wire (LIST, SELECT, STATUS, CREATE, APPEND), the store keeps
its modified UTF-7 (a Maildir++ folder ".Entw&APw-rfe"), and a client that
did not enable it still sees modified UTF-7; invalid UTF-8 in a name is
BAD. Driven by Python's imaplib (which speaks UTF8=ACCEPT) for the wire
form and by mutt, which files a sent copy into "Entwürfe" by its name.
"""

import imaplib
import os
import subprocess

import pytest

from helpers import HOST
from imaputil import BOB, BOB_PW, client_ctx, crlf, folder_files, make_cert, start_imap

FOLDER = "Entwürfe"
FOLDER_UTF7 = "Entw&APw-rfe"


@pytest.fixture(scope="module")
def cert(posthorn_bin, tmp_path_factory):
    return make_cert(posthorn_bin, tmp_path_factory.mktemp("imap-utf8-cert"))


def client(p, cert):
    m = imaplib.IMAP4_SSL(HOST, p.imaps_port, ssl_context=client_ctx(cert), timeout=30)
    m.login(BOB, BOB_PW)
    return m


def listed(m):
    typ, data = m.list('""', "*")
    assert typ == "OK", data
    return [line for line in data if line]


def test_utf8_accept_names(posthorn, cert, tmp_path):
    p = start_imap(posthorn, cert)
    m = client(p, cert)
    try:
        assert "UTF8=ACCEPT" in m.capabilities
        typ, data = m.enable("UTF8=ACCEPT")
        assert typ == "OK", data
        typ, data = m.response("ENABLED")
        assert data == [b"UTF8=ACCEPT"], data
        typ, data = m.create(f'"{FOLDER}"')
        assert typ == "OK", data
        assert os.path.isdir(os.path.join(p.maildir(BOB), "." + FOLDER_UTF7))
        lines = listed(m)
        assert any(line.endswith(f'"{FOLDER}"'.encode()) for line in lines), lines
        typ, data = m.append(f'"{FOLDER}"', None, None, crlf("Subject: hi\n\nbody\n"))
        assert typ == "OK", data
        typ, data = m.status(f'"{FOLDER}"', "(MESSAGES)")
        assert typ == "OK" and data[0] == f'"{FOLDER}" (MESSAGES 1)'.encode(), data
        typ, data = m.select(f'"{FOLDER}"')
        assert typ == "OK" and data == [b"1"], data
        # not UTF-8: BAD, nothing created
        tag = m._new_tag()
        m.send(tag + b' CREATE "bad\xff"\r\n')
        while True:
            line = m.readline()
            if line.startswith(tag):
                break
        assert line.split()[1] == b"BAD", line
    finally:
        m.logout()

    # a client that did not enable it sees modified UTF-7
    m = client(p, cert)
    try:
        lines = listed(m)
        assert any(line.endswith(FOLDER_UTF7.encode()) for line in lines), lines
        typ, data = m.select(FOLDER_UTF7)
        assert typ == "OK" and data == [b"1"], data
    finally:
        m.logout()

    # mutt files a copy of what it sends into the folder, by its UTF-8 name
    muttrc = tmp_path / "muttrc"
    muttrc.write_text(
        "set charset=utf-8\n"
        f"set folder=imaps://{BOB.replace('@', '%40')}@{HOST}:{p.imaps_port}/\n"
        f"set imap_pass={BOB_PW}\n"
        "set ssl_verify_host=no\n"
        f"set certificate_file={cert['crt']}\n"
        f"set record=\"=Entwürfe\"\n"
        "set copy=yes\n"
        "set sendmail=/bin/true\n"
        "set from=bob@example.test\n"
        "set use_from=yes\n")
    res = subprocess.run(["/usr/bin/mutt", "-n", "-F", str(muttrc), "-s", "via mutt",
                          "alice@example.org"], input=b"hello\n", capture_output=True,
                         timeout=60, env=dict(os.environ, HOME=str(tmp_path), LANG="C.UTF-8"))
    assert res.returncode == 0, res.stderr
    files = folder_files(p, BOB, FOLDER_UTF7)
    assert len(files) == 2, files


UTF8_MSG = crlf("From: Jürgen Müller <jürgen@example.org>\nTo: bob@example.test\n"
                "Subject: Grüße aus Köln\n\nKölsch und Bier.\n")


def raw_command(m, tag, parts):
    """Send parts (bytes) of one command through imaplib's connection,
    each after the server's continuation "+" but the first; returns the
    tagged line (None parts after a tagged line are not sent)."""
    m.send(parts[0])
    for part in parts[1:]:
        line = m.readline()
        if line.startswith(tag):
            return line
        assert line.startswith(b"+"), line
        m.send(part)
    while True:
        line = m.readline()
        if line.startswith(tag):
            return line


def test_utf8_append_data(posthorn, cert):
    """RFC 6855 §4: APPEND mailbox [flags] [date] UTF8 (literal8), BAD
    before ENABLE UTF8=ACCEPT; the message with raw UTF-8 header fields
    stored as it came.  (imaplib's own append() after ENABLE puts "UTF8
    (" inside an ordinary literal, so the command is sent by hand.)"""
    p = start_imap(posthorn, cert)
    m = client(p, cert)
    try:
        n = len(UTF8_MSG)
        tag = m._new_tag()
        line = raw_command(m, tag, [tag + b" APPEND INBOX UTF8 (~{%d}\r\n" % n,
                                    UTF8_MSG + b")\r\n"])
        assert line.split()[1] == b"BAD" and b"UTF8=ACCEPT" in line, line
        typ, data = m.noop()
        assert typ == "OK", data
        assert p.messages(BOB) == []

        typ, data = m.enable("UTF8=ACCEPT")
        assert typ == "OK", data
        # synchronizing, with flags and a date
        tag = m._new_tag()
        line = raw_command(m, tag, [tag + b' APPEND INBOX (\\Seen $Label1) "01-Feb-2024 10:00:00'
                                    b' +0100" UTF8 (~{%d}\r\n' % n, UTF8_MSG + b")\r\n"])
        assert line.split()[1] == b"OK" and b"APPENDUID" in line, line
        # MULTIAPPEND: a UTF8 message with LITERAL+, then a plain one
        tag = m._new_tag()
        line = raw_command(m, tag, [tag + b" APPEND INBOX UTF8 (~{%d+}\r\n" % n + UTF8_MSG +
                                    b") {5+}\r\nplain\r\n"])
        assert line.split()[1] == b"OK", line
        # the plain literal inside UTF8 data is refused
        tag = m._new_tag()
        line = raw_command(m, tag, [tag + b" APPEND INBOX UTF8 ({5+}\r\nplain)\r\n"])
        assert line.split()[1] == b"BAD", line

        assert sorted(p.messages(BOB)) == sorted([UTF8_MSG, UTF8_MSG, b"plain"])
        typ, data = m.select("INBOX")
        assert typ == "OK" and data == [b"3"], data
        typ, data = m.fetch("1", "(FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK", data
        assert b"\\Seen" in data[0][0] and b"$Label1" in data[0][0], data
        assert b'"01-Feb-2024 09:00:00 +0000"' in data[0][0], data  # the same instant
        assert data[0][1] == "Subject: Grüße aus Köln\r\n\r\n".encode(), data
    finally:
        m.logout()
