"""Durability of the spool (docs/storage.md: "250 only after fsync"): a message
acknowledged with 250 survives `kill -9` and SIGTERM and is delivered
exactly once after a restart; a transaction cut off before its 250 leaves
nothing behind."""

import os
import signal
import time

from helpers import queue_id, send_message


def _block_maildir(p, addr):
    """Make addr's Maildir impossible to create (a regular file in its place),
    so the message has to stay in the spool."""
    path = p.maildir(addr)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("not a Maildir\n")
    return path


def _unblock(path):
    os.unlink(path)


def test_kill9_right_after_250_then_restart_delivers_once(posthorn):
    p = posthorn()
    blocker = _block_maildir(p, "bob@example.test")
    with p.connect() as c:
        c.start()
        r = send_message(c, "alice@example.org", ["bob@example.test"],
                         "Subject: durable\r\n\r\nmust survive kill -9\r\n")
        qid = queue_id(r)
        p.kill9()                                   # right after the 250
    _unblock(blocker)
    p.start()
    [data] = p.wait_messages("bob@example.test", 1, timeout=15, settle=1.5)
    assert f"id {qid}".encode() in data
    assert data.startswith(b"Return-Path: <alice@example.org>\r\nDelivered-To: bob@example.test\r\n")
    assert data.endswith(b"\r\nmust survive kill -9\r\n")
    p.wait_event("delivered", id=qid, to="bob@example.test")


def test_kill9_with_several_queued_messages_and_recipients(posthorn):
    p = posthorn()
    blocker = _block_maildir(p, "bob@example.test")
    ids = []
    with p.connect() as c:
        c.start()
        for i in range(5):
            ids.append(queue_id(send_message(c, "alice@example.org",
                                             ["carol@example.test", "bob@example.test"],
                                             f"Subject: n{i}\r\n\r\nqueued {i}\r\n")))
    # carol's copies go through; bob's are stuck
    p.wait_messages("carol@example.test", 5)
    p.kill9()
    _unblock(blocker)
    p.start()
    bob = p.wait_messages("bob@example.test", 5, timeout=20, settle=1.5)
    assert sorted(m.split(b"\r\n")[-2] for m in bob) == [f"queued {i}".encode() for i in range(5)]
    for qid in ids:
        assert sum(f"id {qid}".encode() in m for m in bob) == 1
    # carol got each exactly once: no redelivery of what was done before
    assert len(p.messages("carol@example.test")) == 5


def test_sigterm_keeps_queued_mail(posthorn):
    p = posthorn()
    blocker = _block_maildir(p, "bob@example.test")
    with p.connect() as c:
        c.start()
        qid = queue_id(send_message(c, "alice@example.org", ["bob@example.test"],
                                    "Subject: term\r\n\r\nsurvives SIGTERM\r\n"))
        c.expect("QUIT", 221)
    rc = p.stop()
    assert rc == 0, f"exit status {rc} after SIGTERM:\n{p.log}"
    _unblock(blocker)
    p.start()
    [data] = p.wait_messages("bob@example.test", 1, timeout=15, settle=1.0)
    assert f"id {qid}".encode() in data


def test_kill9_during_data_leaves_nothing(posthorn):
    p = posthorn()
    with p.connect() as c:
        c.start()
        c.expect("MAIL FROM:<alice@example.org>", 250)
        c.expect("RCPT TO:<bob@example.test>", 250)
        c.expect("DATA", 354)
        c.send(b"Subject: cut off\r\n\r\n" + b"half of it\r\n" * 1000)
        time.sleep(0.3)
        p.kill9()
    p.start()
    # a complete message after the restart shows delivery runs; it must be
    # the only one
    with p.connect() as c:
        c.start()
        qid = queue_id(send_message(c, "alice@example.org", ["bob@example.test"],
                                    "Subject: after\r\n\r\nafter restart\r\n"))
    [data] = p.wait_messages("bob@example.test", 1, settle=1.5)
    assert f"id {qid}".encode() in data


def test_client_disconnect_during_data_leaves_nothing(mx):
    with mx.connect() as c:
        c.start()
        c.expect("MAIL FROM:<alice@example.org>", 250)
        c.expect("RCPT TO:<bob@example.test>", 250)
        c.expect("DATA", 354)
        c.send(b"Subject: abandoned\r\n\r\nno end of data\r\n")
    mx.wait_event("disconnect")
    with mx.connect() as c:
        c.start()
        qid = queue_id(send_message(c, "alice@example.org", ["bob@example.test"],
                                    "Subject: real\r\n\r\nreal\r\n"))
    [data] = mx.wait_messages("bob@example.test", 1, settle=1.0)
    assert f"id {qid}".encode() in data


def test_sigint_stops_cleanly(mx):
    with mx.connect() as c:
        c.start()
        send_message(c, "alice@example.org", ["bob@example.test"], "Subject: i\r\n\r\nx\r\n")
    mx.wait_messages("bob@example.test", 1)
    mx.run.proc.send_signal(signal.SIGINT)
    mx.run.stopped_by = "term"
    rc = mx.run.proc.wait(15)
    assert rc == 0, f"exit status {rc} after SIGINT:\n{mx.log}"


def test_sigterm_with_open_sessions_stops_cleanly(mx):
    idle = mx.connect()
    idle.start()
    busy = mx.connect()
    busy.start()
    busy.expect("MAIL FROM:<alice@example.org>", 250)
    busy.expect("RCPT TO:<bob@example.test>", 250)
    busy.expect("DATA", 354)
    busy.send("Subject: unfinished\r\n\r\nnever ended")
    rc = mx.stop()
    assert rc == 0, f"exit status {rc} after SIGTERM:\n{mx.log}"
    assert mx.messages("bob@example.test") == []
