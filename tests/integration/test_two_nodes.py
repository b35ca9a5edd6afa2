"""Two posthorn nodes, one mailbox store: two daemons on 127.0.0.2 and
127.0.0.3, each with its own spool, serving the same `mailboxes` folder and
users file.  Both take SMTP deliveries for the same users while IMAP
sessions on both nodes APPEND, STORE flags, COPY and EXPUNGE in the same
folders; then the store is checked as a user would: each folder's UID list
has unique increasing UIDs under an unchanged UIDVALIDITY and lists every
message file, the flags the clients set are on the files, and every
accepted message (a 250 to DATA or an OK to APPEND, each with its own
Message-ID) is in exactly one place unless the test expunged it on purpose.

Every load loop is bounded in count and in time.
"""

import fcntl
import os
import re
import threading
import time
import zlib

from helpers import SMTPConn, wait_until
from imaputil import BOB, BOB_PW, CAROL, CAROL_PW
from nodeutil import (NODE_ADDRS, folder_messages, imap_append, imap_login, message,
                      read_uidlist, shared_store, smtp_to, start_node, uid_msgids, unique_part)

USERS = {BOB: BOB_PW, CAROL: CAROL_PW}
ARCHIVE = "Archive"
RUN_SECONDS = 12            # the load phase
SMTP_PER_CLIENT = 60        # messages per SMTP client at most
SMTP_CLIENTS_PER_NODE = 2
IMAP_ROUNDS = 200           # rounds per IMAP session at most
PICKS_PER_ROUND = 3         # messages flagged, moved or deleted per round
# What the IMAP session of node i does with a message, by its Message-ID's
# hash modulo 6: 2*i moves it to Archive (COPY, \Deleted, EXPUNGE), 2*i+1
# deletes it; 4 and 5 are left in place.  Every session flags every message
# it sees with its node's flag (nobody clears one).
NODE_FLAG = ("\\Flagged", "\\Answered")
NODE_LETTER = ("F", "R")


def role(msgid, node):
    k = zlib.crc32(msgid.encode()) % 6
    if k == 2 * node:
        return "move"
    if k == 2 * node + 1:
        return "delete"
    return "keep" if k >= 4 else None


class Ledger:
    """What the clients were told, shared by the load threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.accepted = {}          # Message-ID -> user
        self.unsure = {}            # Message-ID -> user: no answer (may be in)
        self.deleted = set()        # \Deleted set by a session, expected gone
        self.moved = set()          # copied to Archive, source \Deleted
        self.flagged = {}           # Message-ID -> letters a STORE set
        self.validities = {}        # (user, folder) -> set of UIDVALIDITY seen
        self.errors = []
        self.smtp_250 = 0
        self.appended = 0

    def error(self, what):
        with self.lock:
            self.errors.append(what)

    def validity(self, user, folder, v):
        with self.lock:
            self.validities.setdefault((user, folder), set()).add(int(v))


def smtp_client(node, tag, ledger, deadline):
    rcpts = list(USERS)
    try:
        s = smtp_to(node)
    except OSError as e:
        ledger.error(f"smtp {tag}: {e}")
        return
    try:
        for i in range(SMTP_PER_CLIENT):
            if time.monotonic() > deadline:
                break
            rcpt = rcpts[i % len(rcpts)]
            msgid = f"smtp-{tag}-{i}@nodes.test"
            try:
                refused = s.sendmail("sender@example.org", [rcpt], message(msgid, rcpt))
            except Exception as e:  # no answer: it may or may not be in
                with ledger.lock:
                    ledger.unsure[msgid] = rcpt
                ledger.error(f"smtp {tag} {msgid}: {e!r}")
                return
            assert not refused
            with ledger.lock:
                ledger.accepted[msgid] = rcpt
                ledger.smtp_250 += 1
    finally:
        try:
            s.quit()
        except Exception:
            pass


def check_ok(ledger, what, r):
    if not r.ok:
        ledger.error(f"{what}: {r.tagged}")
    return r.ok


def imap_round(c, node, user, ledger, n):
    """One round of a session: APPEND one message (INBOX or Archive), flag,
    move and delete some of the INBOX's messages, EXPUNGE."""
    folder = ARCHIVE if n % 2 else "INBOX"
    msgid = f"append-{node}-{user}-{n}@nodes.test"
    r = imap_append(c, folder, message(msgid, user, "appended"), flags="\\Seen")
    if check_ok(ledger, f"APPEND {msgid}", r):
        m = re.search(r"APPENDUID (\d+) (\d+)", r.code())
        if m:
            ledger.validity(user, folder, m.group(1))
        with ledger.lock:
            ledger.accepted[msgid] = user
            ledger.appended += 1
    r = c.cmd("UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    # RFC 5530: messages the other node expunged meanwhile, the rest is there
    if not r.ok and "[EXPUNGEISSUED]" not in r.tagged:
        ledger.error(f"FETCH: {r.tagged}")
        return
    uids = uid_msgids(r)
    picks = sorted(uids)[-(PICKS_PER_ROUND * 4):]
    flagged = 0
    for uid in picks:
        msgid = uids[uid]
        what = role(msgid, node)
        if what == "keep" and flagged < PICKS_PER_ROUND:
            flagged += 1
            r = c.cmd(f"UID STORE {uid} +FLAGS ({NODE_FLAG[node]} \\Seen)")
            if check_ok(ledger, f"STORE {msgid}", r):
                with ledger.lock:
                    ledger.flagged.setdefault(msgid, set()).update({NODE_LETTER[node], "S"})
        elif what == "move":
            r = c.cmd(f"UID COPY {uid} {ARCHIVE}")
            if not check_ok(ledger, f"COPY {msgid}", r):
                continue
            m = re.search(r"COPYUID (\d+)", r.code())
            if m:
                ledger.validity(user, ARCHIVE, m.group(1))
            r = c.cmd(f"UID STORE {uid} +FLAGS.SILENT (\\Deleted)")
            if check_ok(ledger, f"STORE \\Deleted {msgid}", r):
                with ledger.lock:
                    ledger.moved.add(msgid)
        elif what == "delete":
            r = c.cmd(f"UID STORE {uid} +FLAGS.SILENT (\\Deleted)")
            if check_ok(ledger, f"STORE \\Deleted {msgid}", r):
                with ledger.lock:
                    ledger.deleted.add(msgid)
    check_ok(ledger, "EXPUNGE", c.cmd("EXPUNGE"))


def imap_session(node_p, node, user, ledger, deadline):
    try:
        c = imap_login(node_p, user, USERS[user])
        r = c.select("INBOX")
        m = re.search(r"UIDVALIDITY (\d+)", " ".join(r.lines()))
        ledger.validity(user, "INBOX", m.group(1))
        for n in range(IMAP_ROUNDS):
            if time.monotonic() > deadline:
                break
            imap_round(c, node, user, ledger, n)
        c.logout()
    except Exception as e:
        ledger.error(f"imap node {node} {user}: {e!r}")


def final_expunge(node_p, user):
    """Both folders expunged and indexed once more, the load over."""
    c = imap_login(node_p, user, USERS[user])
    for folder in ("INBOX", ARCHIVE):
        c.select(folder)
        c.ok("EXPUNGE")
        c.ok("NOOP")
    c.logout()


def check_folder(path, validities):
    """Problems of one folder: its UID list against its files; returns
    (problems, {Message-ID: count}, {Message-ID: flag letters})."""
    problems = []
    v, entries, p = read_uidlist(path)
    problems += p
    if validities and validities != {v}:
        problems.append(f"{path}: UIDVALIDITY {v} in the file, clients saw {sorted(validities)}")
    listed = {u for _, u in entries}
    counts, flags = {}, {}
    for name, msgid, info in folder_messages(path):
        if unique_part(name) not in listed:
            problems.append(f"{path}: {name} has no UID")
        counts[msgid] = counts.get(msgid, 0) + 1
        flags[msgid] = set(info)
    return problems, counts, flags


def test_two_nodes_share_one_store(posthorn, tmp_path, users_template):
    shared = shared_store(tmp_path, users_template)
    nodes = [start_node(posthorn, shared, addr, f"node{i}") for i, addr in enumerate(NODE_ADDRS)]
    for user in USERS:
        c = imap_login(nodes[0], user, USERS[user])
        c.ok(f"CREATE {ARCHIVE}")
        c.logout()

    ledger = Ledger()
    deadline = time.monotonic() + RUN_SECONDS
    threads = []
    for i, node in enumerate(nodes):
        for k in range(SMTP_CLIENTS_PER_NODE):
            threads.append(threading.Thread(target=smtp_client,
                                            args=(node, f"n{i}c{k}", ledger, deadline)))
        for user in USERS:
            threads.append(threading.Thread(target=imap_session,
                                            args=(node, i, user, ledger, deadline)))
    for t in threads:
        t.start()
    for t in threads:
        t.join(RUN_SECONDS + 60)
    assert not any(t.is_alive() for t in threads), "a client did not finish"
    assert ledger.errors == [], "\n".join(ledger.errors[:20])
    assert ledger.smtp_250 >= 20 and ledger.appended >= 10, "too little load to mean anything"
    assert ledger.moved and ledger.deleted and ledger.flagged

    # every accepted delivery lands (the spools drain), then a last EXPUNGE
    def delivered():
        present = set()
        for user in USERS:
            for folder in ("", "." + ARCHIVE):
                d = os.path.join(nodes[0].maildir(user), folder) if folder else nodes[0].maildir(user)
                present |= {m for _, m, _ in folder_messages(d)}
        missing = [m for m, u in ledger.accepted.items()
                   if m not in present and m not in ledger.deleted and m not in ledger.moved]
        return not missing
    wait_until(delivered, 60, what="every accepted message delivered")
    for user in USERS:
        final_expunge(nodes[1], user)

    problems, folders, total = [], 0, 0
    for user in USERS:
        counts, where, inbox_flags = {}, {}, {}
        for folder in ("INBOX", ARCHIVE):
            d = nodes[0].maildir(user)
            if folder != "INBOX":
                d = os.path.join(d, "." + folder)
            p, c, f = check_folder(d, ledger.validities.get((user, folder)))
            folders += 1
            problems += p
            for msgid, n in c.items():
                counts[msgid] = counts.get(msgid, 0) + n
                where.setdefault(msgid, []).append(folder)
            if folder == "INBOX":
                inbox_flags = f
        mine = {m for m, u in ledger.accepted.items() if u == user}
        unsure = {m for m, u in ledger.unsure.items() if u == user}
        for msgid in counts:
            if msgid not in mine and msgid not in unsure:
                problems.append(f"{user}: a message nobody sent: {msgid}")
        for msgid in mine:
            n = counts.get(msgid, 0)
            if msgid in ledger.deleted:
                if n:
                    problems.append(f"{user}: {msgid} deleted and expunged, still in {where[msgid]}")
            elif msgid in ledger.moved:
                if where.get(msgid) != [ARCHIVE]:
                    problems.append(f"{user}: {msgid} moved to Archive, found in {where.get(msgid)}")
            elif n != 1:
                problems.append(f"{user}: {msgid} accepted once, found {n} times")
            total += n
        for msgid, letters in ledger.flagged.items():
            if msgid in mine and msgid in inbox_flags and not letters <= inbox_flags[msgid]:
                problems.append(f"{user}: {msgid} flagged {sorted(letters)}, "
                                f"the file has {sorted(inbox_flags[msgid])}")
    for node in nodes:
        for ev in node.events("mailbox-error"):
            problems.append(f"{node.addr}: {ev['_line']}")
    print(f"two nodes: {ledger.smtp_250} SMTP 250s, {ledger.appended} APPENDs, "
          f"{len(ledger.flagged)} flagged, {len(ledger.moved)} moved, {len(ledger.deleted)} "
          f"expunged; {total} messages in {folders} folders; {len(problems)} errors")
    assert problems == [], "\n".join(problems[:40])


def held_lock(path):
    """An fcntl(2) lock on path, taken the way another host's process takes
    it on a shared file system (NFS passes only these on); close to free."""
    f = open(path, "a+b")
    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return f


def test_folder_index_lock_is_honoured_between_nodes(posthorn, tmp_path, users_template):
    """While another node holds a folder's index lock, an APPEND here waits
    for it, and completes once it is released."""
    shared = shared_store(tmp_path, users_template)
    node = start_node(posthorn, shared, NODE_ADDRS[0], "node0")
    c = imap_login(node, BOB, BOB_PW)
    c.ok(f"CREATE {ARCHIVE}")
    folder = os.path.join(node.maildir(BOB), "." + ARCHIVE)
    lock = held_lock(os.path.join(folder, "posthorn-uidlist.lock"))
    data = message("locked@nodes.test", BOB)
    tag = c.next_tag()
    c.send(f"{tag} APPEND {ARCHIVE} {{{len(data)}}}\r\n".encode())
    assert c.response().startswith(b"+")
    c.send(data + b"\r\n")
    early = c.quiet(1.5)
    assert tag.encode() not in early, f"APPEND went on under another node's lock: {early!r}"
    lock.close()
    c.buf = early
    r = c.collect(tag)
    assert r.ok and "APPENDUID" in r.code(), r
    assert [m for _, m, _ in folder_messages(folder)] == ["locked@nodes.test"]


def test_pop3_lock_is_honoured_between_nodes(posthorn, tmp_path, users_template):
    """A maildrop another node's POP3 session holds is in use here."""
    shared = shared_store(tmp_path, users_template)
    node = start_node(posthorn, shared, NODE_ADDRS[0], "node0", imap=False, pop3=True)
    os.makedirs(node.maildir(BOB), exist_ok=True)
    lock = held_lock(os.path.join(node.maildir(BOB), "posthorn.lock"))
    for expect in ("-ERR [IN-USE]", "+OK"):
        c = SMTPConn(node.port("pop"), host=node.addr)
        node.conns.append(c)
        assert c.readline().startswith(b"+OK")
        c.send(f"USER {BOB}\r\n".encode())
        assert c.readline().startswith(b"+OK")
        c.send(f"PASS {BOB_PW}\r\n".encode())
        line = c.readline().decode()
        assert line.startswith(expect), line
        c.send(b"QUIT\r\n")
        c.close()
        lock.close()


def test_store_sees_flags_the_other_node_changed(posthorn, tmp_path, users_template):
    """A session's STORE +FLAGS lands on the file even when another node
    cleared that flag since this session last looked."""
    shared = shared_store(tmp_path, users_template)
    nodes = [start_node(posthorn, shared, addr, f"node{i}") for i, addr in enumerate(NODE_ADDRS)]
    a = imap_login(nodes[0], BOB, BOB_PW)
    assert imap_append(a, "INBOX", message("flags@nodes.test", BOB), flags="\\Flagged").ok
    a.select("INBOX")
    r = a.ok("FETCH 1 (FLAGS)")
    assert r.find(r"\\Flagged"), r
    b = imap_login(nodes[1], BOB, BOB_PW)
    b.select("INBOX")
    b.ok("STORE 1 -FLAGS (\\Flagged)")
    time.sleep(0.05)  # the other node's rename, a clock tick before this one
    a.ok("STORE 1 +FLAGS (\\Flagged)")
    [(name, _, info)] = folder_messages(nodes[0].maildir(BOB))
    assert "F" in info, f"+FLAGS (\\Flagged) was lost: {name}"
    b.ok("NOOP")
    r = b.ok("FETCH 1 (FLAGS)")
    assert r.find(r"\\Flagged"), r


def test_subscriptions_change_under_a_lock_between_nodes(posthorn, tmp_path, users_template):
    """SUBSCRIBE waits while another node holds the user's subscriptions
    lock, then adds to what that node wrote; SUBSCRIBEs from both nodes
    at once all stay."""
    shared = shared_store(tmp_path, users_template)
    nodes = [start_node(posthorn, shared, addr, f"node{i}") for i, addr in enumerate(NODE_ADDRS)]
    a = imap_login(nodes[0], BOB, BOB_PW)
    b = imap_login(nodes[1], BOB, BOB_PW)
    names = [f"Folder{i}" for i in range(20)]
    for name in names:
        a.ok(f"CREATE {name}")
    lock = held_lock(os.path.join(nodes[0].maildir(BOB), "subscriptions.lock"))
    tag = a.send_cmd("SUBSCRIBE Folder0")
    early = a.quiet(1.0)
    assert tag.encode() not in early, f"SUBSCRIBE went on under another node's lock: {early!r}"
    lock.close()
    a.buf = early
    assert a.collect(tag).ok
    for i, name in enumerate(names[1:], 1):   # both nodes, pipelined, at once
        (a if i % 2 else b).send_cmd(f"SUBSCRIBE {name}", tag=f"s{i}")
    for i in range(1, len(names)):
        c = a if i % 2 else b
        assert c.collect(f"s{i}").ok
    r = b.ok('LSUB "" "Folder*"')
    listed = {line.rsplit(" ", 1)[-1].strip('"') for line in r.lines()}
    assert listed == set(names), sorted(set(names) - listed)
