"""The spool and the queue under a full or small disk (docs/storage.md):
the journal stays within its bound and gives its space back, the daemon
starts on a full spool and delivers what it holds, Maildir tmp/ keeps no
leftovers of a killed daemon nor files older than 36 hours (maildir(5)),
and `posthorn queue list` shows local deliveries that wait.

The small file systems are tmpfs mounts made and removed here (the tests
run as root); only processes started here are signalled, by PID."""

import os
import socket
import subprocess
import threading
import time

from helpers import queue_id, send_message, wait_until
from test_chaos import tmpfs  # noqa: F401  (the fixture: small file systems)
from test_outbound import queued, wait_spool_empty

BOB = "bob@example.test"
SENDER = "alice@example.org"
MIB = 1024 * 1024


def spool_on(posthorn, fs):
    """A running daemon whose spool (only) lives on the file system fs;
    configuration, log and Maildirs stay outside it."""
    p = posthorn(start=False)
    p.spool = os.path.join(fs.path, "spool")
    p.write_config()
    return p.start()


def journal_size(p):
    try:
        return os.stat(os.path.join(p.spool, "journal")).st_size
    except FileNotFoundError:
        return 0


def journal_bound(fs):
    """What docs/storage.md promises: an eighth of the spool's file system,
    in whole MiB, at least 1 MiB and at most 32 MiB."""
    st = os.statvfs(fs.path)
    share = st.f_blocks * st.f_frsize // 8 // MIB * MIB
    return min(max(share, MIB), 32 * MIB)


def block_maildir(p, addr):
    """A regular file where addr's Maildir would be: delivery fails, the
    message stays in the spool."""
    path = p.maildir(addr)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("not a Maildir\n")
    return path


def body_of(tag, size):
    line = (tag + " ").ljust(78, "x") + "\r\n"
    return f"Subject: {tag}\r\n\r\n" + line * (size // len(line))


# -- 15. the journal's size is bounded and given back -------------------------------------

def test_journal_bounded_and_given_back_on_a_small_spool(posthorn, tmpfs):
    """60 messages of 200 KiB (about 12 MB, journaled: under 256 KiB)
    through a 16 MiB spool, four clients at a time, with no pause for an
    idle checkpoint: the journal never passes its bound (2 MiB here), is
    cut back to 1 MiB once idle and after a restart, and a new message is
    accepted with the queue empty."""
    fs = tmpfs("spool", size="16m")
    p = spool_on(posthorn, fs)
    bound = journal_bound(fs)
    sizes = []
    done = threading.Event()

    def sample():
        while not done.is_set():
            sizes.append(journal_size(p))
            time.sleep(0.005)

    errors = []

    def client(k):
        try:
            with p.connect(timeout=30) as c:
                c.start()
                for i in range(15):
                    send_message(c, SENDER, [BOB], body_of(f"load {k}.{i}", 200 * 1024))
        except Exception as e:  # reported below, with the others
            errors.append(f"client {k}: {e!r}")

    sampler = threading.Thread(target=sample)
    sampler.start()
    clients = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in clients:
        t.start()
    for t in clients:
        t.join(120)
    done.set()
    sampler.join(10)
    assert not errors, errors
    p.wait_messages(BOB, 60, timeout=60, settle=0)
    wait_spool_empty(p, timeout=30)
    peak = max(sizes)
    print(f"\njournal: peak {peak} bytes, bound {bound}, {len(sizes)} samples")
    assert peak <= bound, f"the journal reached {peak} bytes, over its bound of {bound}"
    # idle for a second: a checkpoint, and the file is cut back
    wait_until(lambda: journal_size(p) <= MIB, 10, what="the journal cut back to 1 MiB")
    p.restart()
    assert journal_size(p) <= MIB
    with p.connect() as c:
        c.start()
        qid = queue_id(send_message(c, SENDER, [BOB], body_of("after", 200 * 1024)))
    p.wait_event("delivered", id=qid, timeout=20)


# -- 16. a full spool at start -------------------------------------------------------------

def test_full_spool_at_start_replays_delivers_then_452_until_room(posthorn, tmpfs):
    """Three messages wait (their Maildir blocked), the daemon is killed
    right after the last 250 (their journal records still live), and the
    spool's disk is filled to the last byte.  The daemon starts anyway,
    replays and delivers the three, answers 452 to a message there is no
    room for, and takes it once room is back."""
    fs = tmpfs("spool", size="8m")
    p = spool_on(posthorn, fs)
    blocker = block_maildir(p, BOB)
    qids = []
    with p.connect() as c:
        c.start()
        for i in range(3):
            qids.append(queue_id(send_message(c, SENDER, [BOB], body_of(f"waits {i}", 2000))))
        p.kill9()
    os.unlink(blocker)
    fs.fill()
    p.start()
    assert "event=startup-error" not in p.log
    msgs = p.wait_messages(BOB, 3, timeout=30)
    for qid in qids:
        assert any(f"id {qid}".encode() in m for m in msgs), qid
    wait_spool_empty(p, timeout=20)
    big = body_of("no room", 300 * 1024)
    with p.connect() as c:
        c.start()
        r = send_message(c, SENDER, [BOB], big, expect=None)
        assert r.first.startswith("452 4.3.1"), r.raw
        c.expect("RSET", 250)
    fs.free()
    with p.connect() as c:
        c.start()
        qid = queue_id(send_message(c, SENDER, [BOB], big))
    msgs = p.wait_messages(BOB, 4, timeout=20)
    assert any(f"id {qid}".encode() in m for m in msgs)


# -- 17. Maildir tmp/ leftovers -------------------------------------------------------------

def maildir_host():
    """The host part of posthorn's Maildir names (maildir(5) escaping)."""
    return socket.gethostname().replace("/", "\\057").replace(":", "\\072")


def test_maildir_tmp_leftovers_removed_after_start(posthorn):
    """A killed daemon's half-written copy (its own name, its PID) and a
    foreign file untouched for 37 hours are gone once the restarted daemon
    delivers into that Maildir; a foreign file written just now stays."""
    p = posthorn()
    killed = p.pid
    p.kill9()
    box = p.maildir(BOB)
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(box, sub), exist_ok=True)
    tmp = os.path.join(box, "tmp")
    now = time.time()
    leftover = f"{int(now) - 600}.M123456P{killed}Q7R0badf00d.{maildir_host()}"
    stale = "1500000000.M1P1.another-tool.example"
    fresh = f"{int(now)}.M2P2.another-tool.example"
    for name, age in ((leftover, 600), (stale, 37 * 3600), (fresh, 0)):
        path = os.path.join(tmp, name)
        with open(path, "w") as f:
            f.write("Subject: half written\n\nand then the power went")
        os.utime(path, (now - age, now - age))
    p.start()
    with p.connect() as c:
        c.start()
        qid = queue_id(send_message(c, SENDER, [BOB], body_of("after the kill", 2000)))
    p.wait_event("delivered", id=qid, timeout=20)
    assert sorted(os.listdir(tmp)) == [fresh]
    assert len(p.messages(BOB)) == 1


# -- 18. `posthorn queue list` shows local deliveries that wait -----------------------------

def test_queue_list_shows_waiting_local_delivery(posthorn, tmpfs):
    """The Maildirs' disk is full: the message is deferred, and `queue
    list` names it with its recipient, the reason and the next attempt
    (as `queue show` does); `queue flush` retries it at once when room is
    back."""
    mailfs = tmpfs("mail", size="1m")
    p = posthorn(start=False)
    p.mailboxes = os.path.join(mailfs.path, "mail")
    os.makedirs(p.mailboxes)
    p.write_config()
    p.start()
    mailfs.fill()
    with p.connect() as c:
        c.start()
        qid = queue_id(send_message(c, SENDER, [BOB], body_of("waits for room", 4000)))
    p.wait_event("delivery-failed", id=qid, timeout=20)
    res = p.cli("queue", "list")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert qid in out and f"from <{SENDER}>" in out and f"to <{BOB}>" in out, out
    assert "local delivery: attempts 1, next attempt in " in out, out
    assert "last error: " in out and "No space left on device" in out, out
    assert "1 message waiting for local delivery" in out, out
    assert "the outbound queue is empty" in out, out
    show = p.cli("queue", "show", qid).stdout
    assert "local delivery: attempts 1, next attempt in " in show, show
    assert queued(p) == [qid]
    mailfs.free()
    res = p.cli("queue", "flush")
    assert res.returncode == 0 and "1 message scheduled" in res.stdout, res.stdout + res.stderr
    [data] = p.wait_messages(BOB, 1, timeout=10)
    assert f"id {qid}".encode() in data
    wait_spool_empty(p, timeout=10)
    out = p.cli("queue", "list").stdout
    assert qid not in out and "no local delivery is waiting" in out, out
