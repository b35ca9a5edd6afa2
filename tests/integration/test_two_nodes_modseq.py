"""MODSEQ on two nodes sharing one mailbox store (RFC 7162): IMAP sessions
on 127.0.0.2 and 127.0.0.3 STORE flags into the same folder at the same
time, each session toggling its own flag on messages picked at random, and
note the MODSEQ each STORE answered.  Afterwards, as a client would check:
every change got its own MODSEQ (none given twice, by either node), each
message's MODSEQ is that of its last change, HIGHESTMODSEQ is the highest
of them, and every message has exactly the flags its sessions left on it
(no change lost).  A CHANGEDSINCE from before the load returns every
changed message.

Every load loop is bounded in count and in time.
"""

import random
import re
import threading
import time

from imaputil import BOB, BOB_PW
from nodeutil import NODE_ADDRS, imap_append, imap_login, message, shared_store, start_node

MESSAGES = 20
RUN_SECONDS = 8
STORES_PER_SESSION = 150
# two sessions per node, each toggling its own flag
SESSION_FLAGS = (("\\Seen", "\\Flagged"), ("\\Answered", "\\Draft"))
FETCH_RE = re.compile(r"^\* \d+ FETCH \((.*)\)$")


def fetch_items(line):
    m = FETCH_RE.match(line)
    assert m, line
    items = m.group(1)
    uid = int(re.search(r"UID (\d+)", items).group(1))
    ms = re.search(r"MODSEQ \((\d+)\)", items)
    fl = re.search(r"FLAGS \(([^)]*)\)", items)
    return uid, int(ms.group(1)) if ms else None, set(fl.group(1).split()) if fl else None


def session(node, flag, uids, seed, out, errors, deadline):
    """Toggle flag on random messages; out: [(uid, modseq)], and the
    flag's final state per UID."""
    rnd = random.Random(seed)
    state = {u: False for u in uids}
    changes = []
    try:
        c = imap_login(node, BOB, BOB_PW)
        c.ok("ENABLE CONDSTORE")
        c.select("INBOX")
        for _ in range(STORES_PER_SESSION):
            if time.monotonic() > deadline:
                break
            uid = rnd.choice(uids)
            op = "-" if state[uid] else "+"
            r = c.ok(f"UID STORE {uid} {op}FLAGS ({flag})")
            # the STORE's own FETCH is the last of that UID (an unsolicited
            # one for another session's change may come before it)
            line = [t for t in r.lines() if re.search(rf"UID {uid}\b", t)][-1]
            got_uid, ms, flags = fetch_items(line)
            assert got_uid == uid and ms and (flag in flags) == (op == "+"), line
            state[uid] = op == "+"
            changes.append((uid, ms))
        c.ok("LOGOUT")
    except Exception as e:  # noqa: BLE001 - reported with the others below
        errors.append(f"{node.addr} {flag}: {e!r}")
    out[flag] = (changes, state)


def test_two_nodes_give_unique_modseqs(posthorn, tmp_path, users_template):
    shared = shared_store(tmp_path, users_template)
    nodes = [start_node(posthorn, shared, addr, f"node{i}") for i, addr in enumerate(NODE_ADDRS)]
    c = imap_login(nodes[0], BOB, BOB_PW)
    for i in range(MESSAGES):
        assert imap_append(c, "INBOX", message(f"m{i}@modseq.test", BOB)).ok
    c.ok("ENABLE CONDSTORE")
    r = c.select("INBOX")
    [before] = [int(x) for x in re.findall(r"HIGHESTMODSEQ (\d+)", " ".join(r.lines()))]
    uids = sorted(fetch_items(t)[0] for t in c.ok("UID FETCH 1:* (UID)").lines())
    assert len(uids) == MESSAGES

    out, errors, threads = {}, [], []
    deadline = time.monotonic() + RUN_SECONDS
    for n, node in enumerate(nodes):
        for k, flag in enumerate(SESSION_FLAGS[n]):
            t = threading.Thread(target=session,
                                 args=(node, flag, uids, 100 * n + k, out, errors, deadline))
            threads.append(t)
            t.start()
    for t in threads:
        t.join(RUN_SECONDS + 60)
        assert not t.is_alive(), "a session did not finish"
    assert not errors, errors

    changes = [ch for flag in out for ch in out[flag][0]]
    print(f"two nodes: {len(changes)} changes, MODSEQ {before + 1}..{max(ms for _, ms in changes)}")
    assert len(changes) >= 40, f"too little load to mean anything: {len(changes)} changes"
    modseqs = [ms for _, ms in changes]
    assert len(set(modseqs)) == len(modseqs), "a MODSEQ was given to two changes"
    assert min(modseqs) > before

    # the folder as a client on either node sees it now
    last = {}
    for uid, ms in changes:
        last[uid] = max(last.get(uid, 0), ms)
    for node in nodes:
        v = imap_login(node, BOB, BOB_PW)
        r = v.ok("SELECT INBOX (CONDSTORE)")
        [highest] = [int(x) for x in re.findall(r"HIGHESTMODSEQ (\d+)", " ".join(r.lines()))]
        seen = {}
        for line in v.ok("UID FETCH 1:* (FLAGS MODSEQ)").lines():
            uid, ms, flags = fetch_items(line)
            seen[uid] = (ms, flags - {"\\Recent"})
        assert highest == max(ms for ms, _ in seen.values()), "HIGHESTMODSEQ is the highest"
        assert len({ms for ms, _ in seen.values()}) == len(seen), "two messages, one MODSEQ"
        for uid in uids:
            ms, flags = seen[uid]
            want = {f for f in out for u, on in out[f][1].items() if u == uid and on}
            assert flags == want, f"UID {uid}: flags {flags}, the sessions left {want}"
            if uid in last:
                assert ms == last[uid], f"UID {uid}: MODSEQ {ms}, its last change got {last[uid]}"
        changed = {fetch_items(t)[0] for t in
                   v.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {before})").lines()}
        assert changed == set(last)
        v.ok("LOGOUT")
