"""A selected folder that changes identity under a session (
RFC 3501 §2.3.1.1): when another session deletes the folder, or its UID
index is lost and rebuilt with a new UIDVALIDITY, the UIDs this session's
client holds mean nothing any more; the session says `* BYE` and closes,
so that the client reconnects and resynchronises instead of acting on
the wrong messages.  And a large folder's listing kept on disk
(posthorn-listing) answers the first SELECT after a restart only while
it is the folder: a delivery or another program's rename while the
server was down is seen."""

import os
import time

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


def folder_view(p, ctx):
    """What a client sees of INBOX: every message's UID, flags, size, date
    and MODSEQ, and the folder's UIDNEXT, UIDVALIDITY and HIGHESTMODSEQ."""
    c = login_select(p, ctx, mailbox="INBOX")
    r = c.ok("FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE MODSEQ)")
    st = c.ok('STATUS "INBOX" (UIDNEXT UIDVALIDITY HIGHESTMODSEQ)')
    c.logout()
    return r.find(r"^\* \d+ FETCH"), st.find(r"^\* STATUS")


def test_large_folder_listing_kept_across_a_restart(posthorn, cert, ctx):
    p = start_imap(posthorn, cert)
    when = int(time.time()) - 3600
    for i in range(300):
        put_message(p, BOB, f"Subject: m{i}\r\n\r\nbody {i}\r\n", when=when + i, sub="cur",
                    info="S" if i % 3 else "")
    snap = os.path.join(folder_path(p, BOB), "posthorn-listing")
    a = login_select(p, ctx, mailbox="INBOX")        # gives the UIDs: not yet settled
    a.ok("STORE 5 +FLAGS (\\Flagged)")
    a.logout()

    def snapshot():
        return os.stat(snap).st_ino if os.path.exists(snap) else None

    # a settled listing is kept (a worker writes it): until a SELECT
    # answers from what was kept and writes nothing
    deadline = time.monotonic() + 10
    kept = None
    while time.monotonic() < deadline:
        time.sleep(0.05)
        before = snapshot()
        want = folder_view(p, ctx)
        time.sleep(0.05)
        kept = snapshot()
        if kept is not None and kept == before:
            break
    assert kept is not None and kept == before, "no listing kept for a folder of 300 messages"
    p.restart()
    assert folder_view(p, ctx) == want
    assert os.stat(snap).st_ino == kept, "the folder was listed again instead of read from its snapshot"
    # while the server is down: a delivery, and a flag set by another program
    p.stop()
    put_message(p, BOB, "Subject: while down\r\n\r\nbody\r\n", when=when + 400)
    cur = os.path.join(folder_path(p, BOB), "cur")
    first = sorted(os.listdir(cur))[0]
    os.rename(os.path.join(cur, first), os.path.join(cur, first + "D"))
    p.start()
    fetched, status = folder_view(p, ctx)
    assert len(fetched) == 301, fetched[-3:]
    assert "\\Draft" in fetched[0] and "\\Draft" not in want[0][0], (fetched[0], want[0][0])
    assert fetched[:300] != want[0] and status != want[1]
    assert "event=mailbox-snapshot-ignored" not in p.log
