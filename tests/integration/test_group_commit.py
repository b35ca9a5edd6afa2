"""Group commit in the spool (docs/storage.md, docs/performance.md): messages
whose DATA ends close together share one durable write, and each still gets
its 250 only once it is on stable storage.  These tests check correctness
only — every client gets its own 250 and queue ID, every message arrives
exactly once, acknowledged messages survive kill -9 and SIGTERM — never how
the commits happened to be grouped."""

import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

from helpers import HOST, queue_id, send_message, wait_until

CLIENTS = 40


def _send_one(p, i, rcpts=("bob@example.test",)):
    with p.connect(timeout=30) as c:
        c.start()
        r = send_message(c, "alice@example.org", list(rcpts),
                         f"Subject: gc {i}\r\n\r\nbody of message {i}\r\n")
        qid = queue_id(r)
        c.expect("QUIT", 221)
        return i, qid


def _send_all(p, n, rcpts=("bob@example.test",)):
    """n clients at once, started together; {i: queue id}."""
    start = threading.Barrier(n)

    def one(i):
        start.wait(30)
        return _send_one(p, i, rcpts)

    with ThreadPoolExecutor(max_workers=n) as ex:
        return dict(ex.map(one, range(n)))


def _bodies(msgs):
    return sorted(m.split(b"\r\n")[-2] for m in msgs)


def _block_maildir(p, addr):
    path = p.maildir(addr)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("not a Maildir\n")
    return path


LIMITS = {"connections": 200, "connections-per-ip": 100}


def test_concurrent_clients_all_get_250_and_every_message_arrives_once(posthorn):
    p = posthorn(limits=LIMITS)
    ids = _send_all(p, CLIENTS)
    assert len(set(ids.values())) == CLIENTS, "queue IDs must be unique"
    msgs = p.wait_messages("bob@example.test", CLIENTS, timeout=60, settle=1.0)
    assert _bodies(msgs) == sorted(f"body of message {i}".encode() for i in range(CLIENTS))
    for i, qid in ids.items():
        owners = [m for m in msgs if f"id {qid}".encode() in m]
        assert len(owners) == 1 and f"body of message {i}".encode() in owners[0]
    accepted = {ev["id"] for ev in p.events("accepted")}
    assert accepted == set(ids.values())


def _stats(p):
    [st] = p.events("spool-stats")
    return int(st["messages"]), int(st["batches"]), int(st["accept_fsyncs"]), st["_line"]


def test_lone_client_commits_alone_one_journal_sync_each(posthorn):
    p = posthorn()
    with p.connect() as c:
        c.start()
        for i in range(3):  # each 250 comes after its own commit: batches of one
            queue_id(send_message(c, "alice@example.org", ["bob@example.test"],
                                  f"Subject: {i}\r\n\r\nalone {i}\r\n"))
        c.expect("QUIT", 221)
    p.wait_messages("bob@example.test", 3)
    assert p.stop() == 0
    messages, batches, fsyncs, line = _stats(p)
    # no waiting window, and each 250 after one fdatasync of the journal
    assert (messages, batches, fsyncs) == (3, 3, 3), line


def test_lone_message_delivered_at_once_in_a_batch_of_its_own(posthorn):
    p = posthorn()
    with p.connect() as c:
        c.start()
        queue_id(send_message(c, "alice@example.org", ["bob@example.test"],
                              "Subject: alone\r\n\r\nnothing else around\r\n"))
        c.expect("QUIT", 221)
    p.wait_messages("bob@example.test", 1)
    assert p.stop() == 0
    [st] = p.events("delivery-stats")
    # after a quiet spell the delivery worker does not wait for company
    assert (st["messages"], st["batches"], st["gathered"]) == ("1", "1", "0"), st["_line"]


def _nice_of_threads(pid):
    """{tid: nice value} of every thread of a process, from /proc."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        out[int(tid)] = int(fields[16])    # field 19 of stat(5): nice
    return out


def test_delivery_worker_runs_below_the_event_loop(posthorn):
    # when the CPU is short, greetings and 250s come before deliveries
    p = posthorn()
    nice = _nice_of_threads(p.pid)
    assert nice[p.pid] == 0, nice
    assert sorted(nice.values()).count(10) == 1, nice
    with p.connect() as c:
        c.start()
        send_message(c, "alice@example.org", ["bob@example.test"], "Subject: low\r\n\r\nx\r\n")
        c.expect("QUIT", 221)
    p.wait_messages("bob@example.test", 1)


def test_commit_accounting_one_journal_sync_per_batch(posthorn):
    p = posthorn(limits=LIMITS)
    _send_all(p, 20)
    p.wait_messages("bob@example.test", 20, timeout=60)
    assert p.stop() == 0
    messages, batches, fsyncs, line = _stats(p)
    assert messages == 20
    assert 1 <= batches <= messages
    # a batch, whatever its size, is one durable write: its journal records
    assert fsyncs == batches, line


def test_several_messages_per_session_from_concurrent_clients(posthorn):
    p = posthorn()
    per = 5
    clients = 10

    def session(k):
        got = []
        with p.connect(timeout=30) as c:
            c.start()
            for j in range(per):
                r = send_message(c, "alice@example.org", ["carol@example.test", "bob@example.test"],
                                 f"Subject: s{k}\r\n\r\nsession {k} message {j}\r\n")
                got.append(queue_id(r))
            c.expect("QUIT", 221)
        return got

    with ThreadPoolExecutor(max_workers=clients) as ex:
        all_ids = [qid for ids in ex.map(session, range(clients)) for qid in ids]
    assert len(set(all_ids)) == clients * per
    want = sorted(f"session {k} message {j}".encode() for k in range(clients) for j in range(per))
    for addr in ("bob@example.test", "carol@example.test"):
        assert _bodies(p.wait_messages(addr, clients * per, timeout=60, settle=1.0)) == want


def test_pipelined_transactions_get_their_replies_in_order(posthorn):
    p = posthorn()
    with p.connect(timeout=30) as c:
        c.start()
        batch = b""
        for j in range(8):
            batch += (b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
                      + f"Subject: p{j}\r\n\r\npipelined {j}\r\n.\r\n".encode())
        c.send(batch)
        ids = []
        for j in range(8):
            assert c.reply().code == 250      # MAIL
            assert c.reply().code == 250      # RCPT
            assert c.reply().code == 354      # DATA
            ids.append(queue_id(c.reply()))  # end of data
        c.expect("QUIT", 221)
    assert len(set(ids)) == 8
    msgs = p.wait_messages("bob@example.test", 8, timeout=30)
    for j, qid in enumerate(ids):
        [m] = [m for m in msgs if f"id {qid}".encode() in m]
        assert f"pipelined {j}".encode() in m


def test_client_gone_before_its_250_message_still_delivered(posthorn):
    p = posthorn()
    s = socket.create_connection((HOST, p.port()), timeout=10)
    f = s.makefile("rb")
    assert f.readline().startswith(b"220")
    s.sendall(b"EHLO client.example\r\n")
    while not f.readline().startswith(b"250 "):
        pass
    s.sendall(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
    for code in (b"250", b"250", b"354"):
        assert f.readline().startswith(code)
    # the end of data and the close arrive together: the commit is under way
    # when the connection goes
    s.sendall(b"Subject: gone\r\n\r\nleft before the reply\r\n.\r\n")
    f.close()
    s.close()
    [m] = p.wait_messages("bob@example.test", 1, timeout=20)
    assert m.endswith(b"left before the reply\r\n")
    p.wait_event("disconnect")


def test_kill9_after_concurrent_250s_keeps_every_acknowledged_message(posthorn):
    p = posthorn(limits=LIMITS)
    blocker = _block_maildir(p, "bob@example.test")
    ids = _send_all(p, 20)
    p.kill9()
    os.unlink(blocker)
    p.start()
    msgs = p.wait_messages("bob@example.test", 20, timeout=60, settle=1.5)
    for qid in ids.values():
        assert sum(f"id {qid}".encode() in m for m in msgs) == 1


def test_sigterm_during_concurrent_commits_loses_nothing_acknowledged(posthorn):
    p = posthorn()
    blocker = _block_maildir(p, "bob@example.test")
    acked = []
    lock = threading.Lock()
    started = threading.Event()

    def client(i):
        try:
            with p.connect(timeout=30) as c:
                c.start()
                started.set()
                for j in range(20):
                    r = send_message(c, "alice@example.org", ["bob@example.test"],
                                     f"Subject: t\r\n\r\nclient {i} message {j}\r\n", expect=None)
                    if r.code != 250:
                        return
                    with lock:
                        acked.append(queue_id(r))
        except (OSError, AssertionError, EOFError):
            return  # the daemon went away mid-transaction: not acknowledged

    with ThreadPoolExecutor(max_workers=8) as ex:
        futures = [ex.submit(client, i) for i in range(8)]
        started.wait(30)
        p.wait_event("accepted", timeout=30)
        rc = p.stop()
        for fu in futures:
            fu.result(60)
    assert rc == 0, f"exit status {rc} after SIGTERM:\n{p.log}"
    os.unlink(blocker)
    p.start()
    assert acked, "no message was acknowledged before the stop"
    # a message committed as the stop began may have lost its reply: it is
    # delivered too (RFC 5321 §6.1); an acknowledged one is never lost
    wait_until(lambda: len(p.messages("bob@example.test")) >= len(acked), 60,
               what=f"{len(acked)} acknowledged messages delivered")
    msgs = p.messages("bob@example.test")
    for qid in acked:
        assert sum(f"id {qid}".encode() in m for m in msgs) == 1
