"""Losing a node: of two nodes sharing one mailbox store, one is killed
with SIGKILL while both take mail.  The other keeps accepting and
delivering meanwhile; the dead one, started again on its own spool,
replays it and delivers what it had acknowledged, but not again what it
had put in a Maildir before it was killed without recording it.  In the
end every message that got a 250 is in its recipient's Maildir exactly
once, and nothing else is there.

Every load loop is bounded in count and in time.
"""

import threading
import time

from helpers import wait_until
from imaputil import BOB, CAROL
from nodeutil import (NODE_ADDRS, folder_messages, message, shared_store, smtp_to,
                      start_node)

RCPTS = (BOB, CAROL)
PER_CLIENT = 150            # messages per client at most
LOAD_SECONDS = 20           # bound of the whole load


def sender(node, tag, ledger, stop):
    """Send until stop is set (or the bounds): a 250 is an acknowledged
    message; one without an answer (the node died) is unsure."""
    s = None
    for i in range(PER_CLIENT):
        if stop.is_set():
            break
        rcpt = RCPTS[i % len(RCPTS)]
        msgid = f"loss-{tag}-{i}@nodes.test"
        try:
            if s is None:
                s = smtp_to(node, timeout=5.0)
            refused = s.sendmail("sender@example.org", [rcpt], message(msgid, rcpt))
            assert not refused
            with ledger["lock"]:
                ledger["acked"][msgid] = (rcpt, tag, time.monotonic())
        except Exception:
            with ledger["lock"]:
                ledger["unsure"][msgid] = rcpt
            s = None
            time.sleep(0.05)
    if s is not None:
        try:
            s.quit()
        except Exception:
            pass


def test_killed_node_loses_no_acknowledged_message(posthorn, tmp_path, users_template):
    shared = shared_store(tmp_path, users_template)
    a, b = (start_node(posthorn, shared, addr, f"node{i}", imap=False)
            for i, addr in enumerate(NODE_ADDRS))
    ledger = {"lock": threading.Lock(), "acked": {}, "unsure": {}}
    stop = threading.Event()
    threads = [threading.Thread(target=sender, args=(n, f"{name}{k}", ledger, stop))
               for n, name, clients in ((a, "a", 6), (b, "b", 2)) for k in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()

    def acked_by(prefix):
        with ledger["lock"]:
            return sum(1 for _, tag, _ in ledger["acked"].values() if tag.startswith(prefix))
    wait_until(lambda: acked_by("a") >= 100, LOAD_SECONDS, what="node a under load")
    a.kill9()
    killed_at = time.monotonic()
    b_before = acked_by("b")
    time.sleep(3.0)
    b_during = acked_by("b") - b_before
    a.start()
    time.sleep(2.0)
    stop.set()
    for t in threads:
        t.join(LOAD_SECONDS + 30)
    assert not any(t.is_alive() for t in threads)
    assert b_during > 0, "the other node stopped taking mail while one was down"
    acked = dict(ledger["acked"])
    acked_a_before_kill = [m for m, (_, tag, at) in acked.items()
                           if tag.startswith("a") and at < killed_at]
    assert acked_a_before_kill

    def found():
        counts = {}
        for rcpt in RCPTS:
            for _, msgid, _ in folder_messages(a.maildir(rcpt)):
                counts[msgid] = counts.get(msgid, 0) + 1
        return counts
    wait_until(lambda: all(m in found() for m in acked), 60,
               what="every acknowledged message delivered")
    time.sleep(0.5)
    counts = found()
    twice = sorted(m for m, n in counts.items() if n > 1)
    lost = sorted(m for m in acked if m not in counts)
    strangers = sorted(m for m in counts if m not in acked and m not in ledger["unsure"])
    print(f"node loss: {len(acked)} acknowledged ({len(acked_a_before_kill)} by the killed node "
          f"before SIGKILL, {b_during} by the other node while it was down), "
          f"{len(ledger['unsure'])} unanswered, {len(lost)} lost, {len(twice)} twice; "
          f"{time.monotonic() - started:.1f}s")
    assert lost == [] and twice == [] and strangers == [], (lost[:10], twice[:10], strangers[:10])
