"""A selected folder that changes identity under a session (
RFC 3501 §2.3.1.1): when another session deletes the folder, or its UID
index is lost and rebuilt with a new UIDVALIDITY, the UIDs this session's
client holds mean nothing any more; the session says `* BYE` and closes,
so that the client reconnects and resynchronises instead of acting on
the wrong messages."""

import os

import pytest

from imaputil import (BOB, client_ctx, folder_path, login_select, make_cert, put_message,
                      start_imap)


@pytest.fixture(scope="module")
def cert(posthorn_bin, tmp_path_factory):
    return make_cert(posthorn_bin, tmp_path_factory.mktemp("imap-stale-cert"))


@pytest.fixture(scope="module")
def ctx(cert):
    return client_ctx(cert)


def expect_bye(c):
    tag = c.send_cmd("NOOP")
    line = c.line()
    assert line.startswith("* BYE [UNAVAILABLE]"), line
    assert c.wait_closed() == b"", f"session went on after BYE ({tag})"


def test_folder_deleted_by_another_session_ends_the_view(posthorn, cert, ctx):
    p = start_imap(posthorn, cert)
    a = login_select(p, ctx, mailbox="INBOX")      # creates the special folders
    a.ok('CREATE "Projects"')
    put_message(p, BOB, "Subject: in projects\r\n\r\nbody\r\n", folder="Projects")
    a.select("Projects")
    b = login_select(p, ctx, mailbox="INBOX")
    b.ok('DELETE "Projects"')
    expect_bye(a)
    # a new session works and no longer lists the folder
    c = login_select(p, ctx, mailbox="INBOX")
    r = c.ok('LIST "" "*"')
    assert not any(b'"Projects"' in line or line.endswith(b" Projects") for line in r.untagged), r


def test_lost_index_gives_a_new_uidvalidity_and_ends_old_views(posthorn, cert, ctx):
    p = start_imap(posthorn, cert)
    put_message(p, BOB, "Subject: one\r\n\r\nbody\r\n")
    a = login_select(p, ctx, mailbox="INBOX")
    before = a.ok('STATUS "INBOX" (UIDVALIDITY)').find(r"UIDVALIDITY (\d+)")
    os.unlink(os.path.join(folder_path(p, BOB), "posthorn-uidlist"))
    b = login_select(p, ctx, mailbox="INBOX")       # rebuilds the index
    after = b.ok('STATUS "INBOX" (UIDVALIDITY)').find(r"UIDVALIDITY (\d+)")
    assert before and after and before != after, (before, after)
    expect_bye(a)
