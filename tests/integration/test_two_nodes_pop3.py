"""POP3 on two nodes sharing one mailbox store, under load: SMTP delivers
to two users through both nodes while POP3 clients on both nodes log in
to the same maildrops again and again, retrieve and delete two in three
messages (leaving the others) and QUIT; some sessions drop the
connection after DELE instead (RFC 1939 §6: no UPDATE state, nothing is
removed).  A maildrop another node's session holds is
answered `-ERR [IN-USE]` (RFC 2449 §8.1.1) and the client tries again.

Then what a user would check: every accepted message was retrieved by a
session that ended with QUIT's +OK exactly once, or is still in the
maildrop, never both, never twice; and a message has the same UIDL in
every session on either node that listed it.

Every load loop is bounded in count and in time.
"""

import poplib
import threading
import time
import zlib

from helpers import wait_until
from imaputil import BOB, BOB_PW, CAROL, CAROL_PW
from nodeutil import MSGID_RE, NODE_ADDRS, folder_messages, message, shared_store, smtp_to, start_node

USERS = {BOB: BOB_PW, CAROL: CAROL_PW}
RUN_SECONDS = 10
SMTP_PER_CLIENT = 100       # messages per SMTP client at most
SMTP_CLIENTS_PER_NODE = 2
POP3_CLIENTS_PER_NODE = 2
POP3_SESSIONS = 400         # sessions per POP3 client at most
RETR_PER_SESSION = 8        # messages retrieved and deleted per session at most
LOOK_PER_SESSION = 12       # messages looked at (TOP n 0) per session at most
RECHECK_PER_SESSION = 2     # of those, messages seen before and left, looked at again
DROP_EVERY = 5              # every 5th session drops the connection after DELE


class Ledger:
    def __init__(self):
        self.lock = threading.Lock()
        self.accepted = {}          # Message-ID -> user
        self.retrieved = {}         # Message-ID -> sessions that RETRieved, DELEd, QUIT +OK
        self.uidls = {}             # Message-ID -> set of UIDLs any session listed
        self.by_uidl = {}           # UIDL -> Message-ID
        self.sessions = self.in_use = self.dropped = 0
        self.errors = []

    def error(self, what):
        with self.lock:
            self.errors.append(what)

    def saw(self, msgid, uidl):
        """A session listed msgid under uidl: a UIDL is one message's only."""
        with self.lock:
            self.uidls.setdefault(msgid, set()).add(uidl)
            if self.by_uidl.setdefault(uidl, msgid) != msgid:
                self.errors.append(f"UIDL {uidl} named {self.by_uidl[uidl]}, now {msgid}")


def smtp_client(node, tag, ledger, deadline):
    try:
        s = smtp_to(node)
        for i in range(SMTP_PER_CLIENT):
            if time.monotonic() > deadline:
                break
            rcpt = list(USERS)[i % len(USERS)]
            msgid = f"pop-{tag}-{i}@nodes.test"
            assert not s.sendmail("sender@example.org", [rcpt], message(msgid, rcpt))
            with ledger.lock:
                ledger.accepted[msgid] = rcpt
        s.quit()
    except Exception as e:
        ledger.error(f"smtp {tag}: {e!r}")


def pop3_login(node, user):
    """A POP3 session in TRANSACTION state, or None when the maildrop is
    in use by another session (on either node)."""
    p = poplib.POP3(node.addr, node.port("pop"), timeout=20)
    try:
        p.user(user)
        p.pass_(USERS[user])
    except poplib.error_proto as e:
        p.sock.close()
        if b"[IN-USE]" in e.args[0]:
            return None
        raise
    return p


def kept(msgid):
    """Messages the POP3 clients leave in the maildrop: one in three."""
    return zlib.crc32(msgid.encode()) % 3 == 0


def msgid_of(lines):
    m = MSGID_RE.search(b"\r\n".join(lines))
    return m.group(1).decode() if m else None


def uidl_listing(p):
    """[(number, UIDL)] of the maildrop."""
    _, lines, _ = p.uidl()
    out = []
    for line in lines:
        n, uidl = line.decode().split(" ", 1)
        out.append((int(n), uidl))
    return out


def pop3_session(node, user, ledger, drop):
    """One session: UIDL, TOP of the first few messages, RETR and DELE of
    those not kept, then QUIT (or drop the connection).  False when the maildrop was busy."""
    p = pop3_login(node, user)
    if p is None:
        return False
    listing = uidl_listing(p)
    if len({u for _, u in listing}) != len(listing):
        ledger.error(f"{node.addr} {user}: one UIDL for two messages: {listing}")
    taken, looked, checked = [], 0, 0
    for n, uidl in listing:
        if len(taken) >= RETR_PER_SESSION or looked >= LOOK_PER_SESSION:
            break
        known = ledger.by_uidl.get(uidl)
        if known and kept(known):
            # a client skips what it has seen by its UIDL; a few are checked
            if checked >= RECHECK_PER_SESSION:
                continue
            checked += 1
        looked += 1
        msgid = msgid_of(p.top(n, 0)[1])
        ledger.saw(msgid, uidl)
        if kept(msgid):
            continue
        if msgid_of(p.retr(n)[1]) != msgid:
            ledger.error(f"{node.addr} {user}: RETR {n} and TOP {n} differ")
        p.dele(n)
        taken.append(msgid)
    if drop:
        p.sock.close()      # RFC 1939 §6: no QUIT, no UPDATE
        with ledger.lock:
            ledger.dropped += 1
        return True
    reply = p.quit()
    if not reply.startswith(b"+OK"):
        ledger.error(f"{node.addr} {user}: QUIT {reply!r}")
        return True
    with ledger.lock:
        for msgid in taken:
            ledger.retrieved[msgid] = ledger.retrieved.get(msgid, 0) + 1
    return True


def pop3_client(node, k, ledger, deadline):
    users = list(USERS)
    try:
        for i in range(POP3_SESSIONS):
            if time.monotonic() > deadline:
                break
            user = users[(i + k) % len(users)]
            if pop3_session(node, user, ledger, drop=i % DROP_EVERY == DROP_EVERY - 1):
                with ledger.lock:
                    ledger.sessions += 1
            else:
                with ledger.lock:
                    ledger.in_use += 1
                time.sleep(0.01)
    except Exception as e:
        ledger.error(f"pop3 {node.addr}: {e!r}")


def present(nodes):
    """{Message-ID: user} of the messages in the maildrops' files."""
    out = {}
    for user in USERS:
        for _, msgid, _ in folder_messages(nodes[0].maildir(user)):
            if msgid in out:
                out[msgid] = None       # in two places: a problem below
            else:
                out[msgid] = user
    return out


def test_pop3_under_load_on_two_nodes(posthorn, tmp_path, users_template):
    shared = shared_store(tmp_path, users_template)
    nodes = [start_node(posthorn, shared, addr, f"node{i}", imap=False, pop3=True)
             for i, addr in enumerate(NODE_ADDRS)]
    ledger = Ledger()
    deadline = time.monotonic() + RUN_SECONDS
    threads = []
    for i, node in enumerate(nodes):
        threads += [threading.Thread(target=smtp_client, args=(node, f"n{i}c{k}", ledger, deadline))
                    for k in range(SMTP_CLIENTS_PER_NODE)]
        threads += [threading.Thread(target=pop3_client, args=(node, k, ledger, deadline))
                    for k in range(POP3_CLIENTS_PER_NODE)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(RUN_SECONDS + 60)
    assert not any(t.is_alive() for t in threads), "a client did not finish"
    assert ledger.errors == [], "\n".join(ledger.errors[:20])
    assert len(ledger.accepted) >= 40 and len(ledger.retrieved) >= 20 and ledger.dropped, \
        f"too little load: {len(ledger.accepted)} accepted, {len(ledger.retrieved)} retrieved"

    # the spools drain: every accepted message is retrieved or in a maildrop
    wait_until(lambda: all(m in ledger.retrieved or m in present(nodes) for m in ledger.accepted),
               60, what="every accepted message delivered")

    # a last look through each node: the same UIDLs for the same messages
    last = {}
    for i, node in enumerate(nodes):
        for user in USERS:
            p = pop3_login(node, user)
            assert p is not None, f"{user}'s maildrop still in use on {node.addr}"
            for n, uidl in uidl_listing(p):
                msgid = msgid_of(p.top(n, 0)[1])
                ledger.saw(msgid, uidl)
                last.setdefault(msgid, {})[i] = uidl
            assert p.quit().startswith(b"+OK")

    problems = []
    files = present(nodes)
    for msgid, user in ledger.accepted.items():
        n = ledger.retrieved.get(msgid, 0)
        if msgid in files and files[msgid] is None:
            problems.append(f"{msgid}: in two files")
        if n > 1:
            problems.append(f"{msgid}: retrieved and deleted {n} times")
        elif n == 1 and msgid in files:
            problems.append(f"{msgid}: retrieved and deleted, still in the maildrop")
        elif n == 0 and files.get(msgid) != user:
            problems.append(f"{msgid}: neither retrieved nor in {user}'s maildrop")
    problems += [f"{m}: a message nobody sent" for m in files if m not in ledger.accepted]
    problems += [f"{m}: UIDLs {sorted(u)}" for m, u in ledger.uidls.items() if len(u) != 1]
    problems += [f"{m}: not listed by both nodes: {u}" for m, u in last.items() if len(u) != 2]
    for node in nodes:
        problems += [f"{node.addr}: {ev['_line']}" for ev in node.events("mailbox-error")]
    print(f"two nodes, POP3: {len(ledger.accepted)} accepted; {ledger.sessions} sessions "
          f"({ledger.dropped} dropped without QUIT, {ledger.in_use} times in use); "
          f"{len(ledger.retrieved)} retrieved and deleted, {len(files)} left; "
          f"{len(ledger.uidls)} messages' UIDLs compared; {len(problems)} errors")
    assert problems == [], "\n".join(problems[:40])
