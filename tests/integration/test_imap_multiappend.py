"""MULTIAPPEND is all or nothing (RFC 3502 §6.3.11: if any message
cannot be appended, none is): the second message of one APPEND refused
for its flags, its size, the quota, or a disk error while it is stored,
and the first is not in the folder afterwards, nor counted in the quota;
then a good MULTIAPPEND still works.

The disk error is injected while the server waits for the second
message's synchronizing literal: its file, already open in the folder's
tmp/, is replaced by a symbolic link, which the store refuses to open
when it moves the message in, after the first message went in.
"""

import os
import re

from helpers import free_port
from imaputil import (BOB, client_ctx, crlf, folder_path, imap_spec, login_select, make_cert)

import pytest


@pytest.fixture(scope="module")
def cert(posthorn_bin, tmp_path_factory):
    return make_cert(posthorn_bin, tmp_path_factory.mktemp("imap-multiappend-cert"))


def lit(data):
    return b"{%d+}\r\n" % len(data) + data


ONE = crlf("Subject: one\n\nfirst message\n")
TWO = crlf("Subject: two\n\nsecond message\n")


def messages(c):
    r = c.ok("STATUS INBOX (MESSAGES)")
    return int(re.search(r"MESSAGES (\d+)", " ".join(r.lines())).group(1))


def tmp_files(p):
    d = os.path.join(folder_path(p, BOB), "tmp")
    return sorted(os.path.join(d, n) for n in os.listdir(d))


def test_multiappend_all_or_nothing(posthorn, cert, tmp_path):
    tls_port = free_port()
    servers = {"mx": {"anonymous": True},
               "imap": imap_spec(cert, tls_port, limits={"message-size": "4K"})}
    # 2 KiB of quota, messages of at most 4 KiB
    p = posthorn(servers=servers, global_extra="quota 2K 100")
    p.imaps_port = tls_port
    c = login_select(p, client_ctx(cert))

    # bad flags in the second message: BAD
    r = c.cmd(b"APPEND INBOX " + lit(ONE) + b" (\\Bogus) " + lit(TWO))
    assert r.status == "BAD", r
    # the second message over the size limit: refused before its octets
    r = c.cmd(b"APPEND INBOX " + lit(ONE) + b" {5000}")
    assert r.status == "BAD" and r.code() == "TOOBIG", r
    # both together over the quota, each alone within it
    big = crlf("Subject: big\n\n" + "x" * 1100 + "\n")
    r = c.cmd(b"APPEND INBOX " + lit(big) + b" " + lit(big))
    assert r.status == "NO" and r.code() == "OVERQUOTA", r
    assert messages(c) == 0

    # a disk error while the second is stored
    tag = c.send_cmd(b"APPEND INBOX {%d}" % len(ONE))
    assert c.readline().startswith(b"+"), "no continuation for the first literal"
    c.send(ONE + b" {%d}\r\n" % len(TWO))
    assert c.readline().startswith(b"+"), "no continuation for the second literal"
    files = tmp_files(p)
    assert len(files) == 2, files
    second = min(files, key=os.path.getsize)   # open, still empty
    assert os.path.getsize(second) == 0 and os.path.getsize(max(files, key=os.path.getsize))
    # a symlink in its place: received and measured as usual, but opened
    # with O_NOFOLLOW when it is stored, which fails (ELOOP)
    os.unlink(second)
    decoy = tmp_path / "decoy"
    decoy.write_bytes(TWO)
    os.symlink(decoy, second)
    c.send(TWO + b"\r\n")
    r = c.collect(tag)
    assert r.status == "NO", r
    assert messages(c) == 0, "the first message of a failed MULTIAPPEND was appended"
    assert tmp_files(p) == []
    r = c.ok("GETQUOTAROOT INBOX")
    assert re.search(r"STORAGE 0 2\b", " ".join(r.lines())), r

    # a good MULTIAPPEND after all this: both, one APPENDUID
    r = c.cmd(b"APPEND INBOX " + lit(ONE) + b" (\\Seen) " + lit(TWO))
    assert r.ok and re.match(r"APPENDUID \d+ \d+:\d+$", r.code()), r
    assert messages(c) == 2
    c.logout()
