"""Keywords on two nodes sharing one mailbox store: while SMTP delivers
into the same INBOX through both nodes, an IMAP session on each node
APPENDs messages carrying a keyword, sets and clears keywords ($Junk,
$Forwarded and custom ones) on the same messages, and deletes and
expunges others.  Afterwards each message's flags are read as a user
would check them: FETCH FLAGS through both nodes (the sessions that did
the work, after a NOOP, and fresh ones), the letters in the Maildir file
names named by the folder's dovecot-keywords, and what the clients were
told; all must agree, and no accepted message may be lost or doubled.

Each keyword of a message is changed by one node only (its owner), so the
final state is the last change that node's session was told succeeded,
whatever the other node did meanwhile.  Every load loop is bounded in
count and in time.
"""

import os
import re
import threading
import time
import zlib

from helpers import wait_until
from imaputil import BOB, BOB_PW
from nodeutil import (FETCH_UID_FLAGS_RE, MSGID_RE, NODE_ADDRS, file_flags, folder_messages,
                      imap_append, imap_login, message, read_uidlist, shared_store, smtp_to,
                      start_node, unique_part)

RUN_SECONDS = 10
SMTP_PER_NODE = 80          # messages per node's SMTP client at most
IMAP_ROUNDS = 250           # rounds per IMAP session at most
RECENT = 10                 # the newest messages a round works on
# What node i's session may change: (its own system keyword, its own
# custom keyword); APPENDs from node i carry APPENDED[i], which nobody
# changes afterwards.
OWNED = (("$Junk", "Node0Tag"), ("$Forwarded", "Node1Tag"))
APPENDED = ("FromNode0", "FromNode1")


def hashed(msgid):
    return zlib.crc32(msgid.encode())


def deleter(msgid):
    """The node whose session deletes this message, or None: one in four."""
    k = hashed(msgid) % 8
    return k if k < 2 else None


def keyword_change(node, msgid, n):
    """(STORE verb, keywords) node's session applies to msgid in round n."""
    junk, tag = OWNED[node]
    return [("+FLAGS", (junk, tag)), ("-FLAGS", (tag,)), ("-FLAGS", (junk,)),
            ("+FLAGS", (tag,))][(hashed(msgid) + n) % 4]


class Ledger:
    def __init__(self):
        self.lock = threading.Lock()
        self.accepted = set()       # Message-IDs the clients were told are in
        self.deleted = set()        # \Deleted set (EXPUNGE follows)
        self.keywords = {}          # Message-ID -> {keyword: present?}
        self.stores = 0
        self.appended = 0
        self.errors = []

    def error(self, what):
        with self.lock:
            self.errors.append(what)


def smtp_load(node, i, ledger, deadline):
    try:
        s = smtp_to(node)
        for n in range(SMTP_PER_NODE):
            if time.monotonic() > deadline:
                break
            msgid = f"kw-smtp-{i}-{n}@nodes.test"
            assert not s.sendmail("sender@example.org", [BOB], message(msgid, BOB))
            with ledger.lock:
                ledger.accepted.add(msgid)
        s.quit()
    except Exception as e:
        ledger.error(f"smtp node {i}: {e!r}")


def view(c):
    """{Message-ID: set of flags} of the selected folder, \\Recent left out."""
    r = c.cmd("UID FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    assert r.ok, r
    out = {}
    for u in r.untagged:
        m = FETCH_UID_FLAGS_RE.match(u)
        i = MSGID_RE.search(u)
        if m and i:
            out[i.group(1).decode()] = set(m.group(2).decode().split()) - {"\\Recent"}
    return out


def uid_view(c, ledger):
    """{UID: Message-ID} of the selected folder; None when the FETCH
    failed other than for messages expunged meanwhile (RFC 5530)."""
    r = c.cmd("UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    if not r.ok and "[EXPUNGEISSUED]" not in r.tagged:
        ledger.error(f"FETCH: {r.tagged}")
        return None
    out = {}
    for u in r.untagged:
        m = re.match(rb"\* \d+ FETCH .*?UID (\d+)", u, re.S)
        i = MSGID_RE.search(u)
        if m and i:
            out[int(m.group(1))] = i.group(1).decode()
    return out


def store(c, ledger, msgid, uid, verb, words):
    r = c.cmd(f"UID STORE {uid} {verb}.SILENT ({' '.join(words)})")
    if not r.ok:
        ledger.error(f"STORE {verb} {words} {msgid}: {r.tagged}")
        return False
    return True


def imap_round(c, node, ledger, n):
    msgid = f"kw-append-{node}-{n}@nodes.test"
    r = imap_append(c, "INBOX", message(msgid, BOB, "appended"), flags=f"\\Seen {APPENDED[node]}")
    if r.ok:
        with ledger.lock:
            ledger.accepted.add(msgid)
            ledger.appended += 1
            ledger.keywords.setdefault(msgid, {})[APPENDED[node]] = True
    else:
        ledger.error(f"APPEND {msgid}: {r.tagged}")
    uids = uid_view(c, ledger)
    if uids is None:
        return
    for uid in sorted(uids)[-RECENT:]:
        msgid = uids[uid]
        who = deleter(msgid)
        if who is None:
            verb, words = keyword_change(node, msgid, n)
            if store(c, ledger, msgid, uid, verb, words):
                with ledger.lock:
                    ledger.stores += 1
                    for w in words:
                        ledger.keywords.setdefault(msgid, {})[w] = verb == "+FLAGS"
        elif who == node:
            # a keyword first, so that expunged messages had some
            if store(c, ledger, msgid, uid, "+FLAGS", (OWNED[node][0], "\\Deleted")):
                with ledger.lock:
                    ledger.deleted.add(msgid)
    r = c.cmd("EXPUNGE")
    if not r.ok:
        ledger.error(f"EXPUNGE: {r.tagged}")


def imap_load(c, node, ledger, deadline):
    try:
        for n in range(IMAP_ROUNDS):
            if time.monotonic() > deadline:
                break
            imap_round(c, node, ledger, n)
    except Exception as e:
        ledger.error(f"imap node {node}: {e!r}")


def compare_views(views, files, problems):
    """Every node's view against the files, message by message."""
    for label, v in views.items():
        for msgid in sorted(set(v) | set(files)):
            if v.get(msgid) != files.get(msgid):
                problems.append(f"{msgid}: {label} shows {sorted(v.get(msgid, ['(absent)']))}, "
                                f"the file has {sorted(files.get(msgid, ['(absent)']))}")


def compare_ledger(ledger, files, problems):
    """What the clients were told against the files."""
    for msgid in ledger.accepted:
        if msgid in ledger.deleted:
            if msgid in files:
                problems.append(f"{msgid} deleted and expunged, still there")
        elif msgid not in files:
            problems.append(f"{msgid} accepted, not there")
    for msgid in files:
        if msgid not in ledger.accepted:
            problems.append(f"{msgid}: a message nobody sent")
    for msgid, want in ledger.keywords.items():
        if msgid not in files:
            continue
        for kw, present in want.items():
            if (kw in files[msgid]) != present:
                problems.append(f"{msgid}: {kw} should be {'set' if present else 'clear'}, "
                                f"the file has {sorted(files[msgid])}")


def test_keywords_stay_consistent_between_nodes(posthorn, tmp_path, users_template):
    shared = shared_store(tmp_path, users_template)
    nodes = [start_node(posthorn, shared, addr, f"node{i}") for i, addr in enumerate(NODE_ADDRS)]
    sessions = [imap_login(node, BOB, BOB_PW) for node in nodes]
    for c in sessions:
        c.select("INBOX")
    ledger = Ledger()
    deadline = time.monotonic() + RUN_SECONDS
    threads = [threading.Thread(target=smtp_load, args=(node, i, ledger, deadline))
               for i, node in enumerate(nodes)]
    threads += [threading.Thread(target=imap_load, args=(c, i, ledger, deadline))
                for i, c in enumerate(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(RUN_SECONDS + 60)
    assert not any(t.is_alive() for t in threads), "a client did not finish"
    assert ledger.errors == [], "\n".join(ledger.errors[:20])
    assert ledger.stores >= 50 and ledger.deleted and ledger.appended >= 10, \
        f"too little load to mean anything: {ledger.stores} STOREs, {ledger.appended} APPENDs"

    inbox = nodes[0].maildir(BOB)

    def all_delivered():
        present = {m for _, m, _ in folder_messages(inbox)}
        return all(m in present for m in ledger.accepted - ledger.deleted)
    wait_until(all_delivered, 60, what="every accepted message delivered")
    sessions[1].ok("EXPUNGE")

    problems = []
    files = file_flags(inbox, problems)
    views = {}
    for i, c in enumerate(sessions):
        c.ok("NOOP")
        views[f"node {i}'s working session"] = view(c)
    for i, node in enumerate(nodes):
        c = imap_login(node, BOB, BOB_PW)
        c.select("INBOX")
        views[f"a new session on node {i}"] = view(c)
        c.logout()
    compare_views(views, files, problems)
    compare_ledger(ledger, files, problems)
    _, entries, p = read_uidlist(inbox)
    problems += p
    listed = {u for _, u in entries}
    problems += [f"{name} has no UID" for name, _, _ in folder_messages(inbox)
                 if unique_part(name) not in listed]
    for node in nodes:
        problems += [f"{node.addr}: {ev['_line']}" for ev in node.events("mailbox-error")]
    with_keywords = sum(1 for f in files.values() if any(not x.startswith("\\") for x in f))
    print(f"two nodes, keywords: {len(ledger.accepted)} accepted, {ledger.appended} APPENDs, "
          f"{ledger.stores} keyword STOREs, {len(ledger.deleted)} expunged; {len(files)} "
          f"messages, {with_keywords} with keywords; {len(problems)} errors")
    assert problems == [], "\n".join(problems[:40])


RACE_FOLDERS = ("INBOX", "Race1", "Race2", "Race3", "Race4")


def race_new_keywords(sessions, maildir, folder):
    """Both nodes' sessions add new keywords to folder at once, 27 in all,
    each to a message of its own; the problems found."""
    for i, c in enumerate(sessions):
        assert imap_append(c, folder, message(f"kw-new-{folder}-{i}@nodes.test", BOB)).ok
    for c in sessions:
        c.select(folder)
    names = ([f"Node0New{k}" for k in range(13)], [f"Node1New{k}" for k in range(14)])
    uids = [{m: u for u, m in uid_view(c, Ledger()).items()} for c in sessions]
    # every STORE sent, on both nodes, before any answer is read
    sent = []
    for i, c in enumerate(sessions):
        uid = uids[i][f"kw-new-{folder}-{i}@nodes.test"]
        sent.append([(kw, c.send_cmd(f"UID STORE {uid} +FLAGS.SILENT ({kw})")) for kw in names[i]])
    told, limited, problems = {}, [], []
    for i, c in enumerate(sessions):
        for kw, tag in sent[i]:
            r = c.collect(tag)
            if r.ok:
                told.setdefault(f"kw-new-{folder}-{i}@nodes.test", set()).add(kw)
            elif r.tagged.startswith("NO [LIMIT]"):
                limited.append(kw)
            else:
                problems.append(f"{folder}: STORE {kw}: {r.tagged}")
    if len(limited) != 1:
        problems.append(f"{folder}: NO [LIMIT] for {limited}, not for exactly one keyword")
    path = maildir if folder == "INBOX" else os.path.join(maildir, "." + folder)
    files = file_flags(path, problems)
    views = {}
    for i, c in enumerate(sessions):
        c.ok("NOOP")
        views[f"node {i} in {folder}"] = view(c)
    compare_views(views, files, problems)
    for msgid, kws in told.items():
        if not kws <= files.get(msgid, set()):
            problems.append(f"{msgid}: told {sorted(kws - files.get(msgid, set()))} were set, "
                            "not in the file")
    if set(limited) & set().union(*files.values()):
        problems.append(f"{folder}: {limited} refused, yet in a file")
    with open(os.path.join(path, "dovecot-keywords")) as f:
        if len(f.read().splitlines()) != 26:
            problems.append(f"{folder}: dovecot-keywords does not name 26 keywords")
    return problems


def test_new_keywords_from_both_nodes_at_once(posthorn, tmp_path, users_template):
    """Both nodes add new keywords to one folder at the same moment, 27 in
    all, each node to a message of its own (so only dovecot-keywords is
    shared): 26 get a letter of their own, exactly one gets NO [LIMIT]
    (RFC 5530), and every keyword a node was told is set shows on that
    message through both nodes (FETCH FLAGS after NOOP) and in the files.
    Five folders, one after the other, for five chances at the race."""
    shared = shared_store(tmp_path, users_template)
    nodes = [start_node(posthorn, shared, addr, f"node{i}") for i, addr in enumerate(NODE_ADDRS)]
    sessions = [imap_login(node, BOB, BOB_PW) for node in nodes]
    for folder in RACE_FOLDERS[1:]:
        sessions[0].ok(f"CREATE {folder}")
    problems = []
    for folder in RACE_FOLDERS:
        problems += race_new_keywords(sessions, nodes[0].maildir(BOB), folder)
    assert problems == [], "\n".join(problems[:20])
