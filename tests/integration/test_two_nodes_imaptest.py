"""Dovecot's imaptest against two nodes sharing one mailbox store, through
a real HAProxy: imaptest's random-command stress profile (SELECT, FETCH,
STORE of flags and keywords, APPEND, COPY, EXPUNGE, ... with its own
model of every folder) with a fixed number of clients for a fixed time,
its connections taken round-robin by HAProxy to the nodes' `proxy`
listeners (PROXY protocol v2), so that sessions on both nodes change the
same users' folders at once.  imaptest reports every reply that breaks
its model of the folder (a flag or a message that changed or vanished
unannounced, a UID that went backwards) and every protocol violation as
an `Error:` line: there must be none.  Then each folder is checked as a
user would: its UID list (unique, increasing, every file listed), and
FETCH UID FLAGS through either node against the files' names.

imaptest is built from third_party/imaptest (imaptestutil.py).
"""

import os
import re
import subprocess

from haproxyutil import BALANCER, haproxy  # noqa: F401 (the fixture)
from helpers import HOST, free_port
from imaptestutil import imaptest  # noqa: F401 (the fixture)
from imaputil import quote
from nodeutil import (NODE_ADDRS, file_flags, imap_login, read_uidlist, shared_store, start_node,
                      uid_flags)

USERS = 10                  # imaptest's users=: it1..it10@example.test
CLIENTS = 8                 # connections at once
SECONDS = 20
PASSWORD = "imaptest-Pass-1"
# A command on a message that a session on the other node (or this one)
# expunged meanwhile: NO [EXPUNGEISSUED] (RFC 5530 §3) is a right answer.
# imaptest accepts it for COPY, and for FETCH and STORE when the text says
# so in words it knows ("no longer exist", "have been deleted"), which
# posthorn's do; any other such line it prints as an error ("DELETE" is its
# name for STORE +FLAGS \Deleted, "FETCH2" for its second kind of FETCH)
# is counted apart.  Nothing else is excused.
EXPUNGED_MEANWHILE = re.compile(r"^Error: it\d+@example\.test\[\d+\]: "
                                r"(FETCH2?|STORE|DELETE|COPY) failed: \S+ NO \[EXPUNGEISSUED\] ")


def proxied_node(posthorn, shared, addr, name):
    """A node whose IMAP server has, beside its direct listener, a `proxy`
    one that believes PROXY headers from HAProxy's address only."""
    p = start_node(posthorn, shared, addr, name, start=False)
    p.proxy_port = free_port(addr)
    direct = f"    listen {addr}:{p.port('imap')}\n"
    with open(p.conf) as f:
        text = f.read()
    assert direct in text, text
    p.write_config(text.replace(direct, direct + f"    listen {addr}:{p.proxy_port} proxy\n"
                                f"    proxy-from {BALANCER}\n"))
    return p


def run_imaptest(imaptest, port, workdir):
    """imaptest's stress run through HAProxy; its output."""
    argv = [imaptest["bin"], f"host={HOST}", f"port={port}", "user=it%d@example.test",
            f"pass={PASSWORD}", f"users={USERS}", f"clients={CLIENTS}", f"secs={SECONDS}",
            f"mbox={imaptest['mbox']}"]
    res = subprocess.run(argv, cwd=workdir, capture_output=True, text=True,
                         timeout=SECONDS + 60, stdin=subprocess.DEVNULL)
    return res.returncode, res.stdout + res.stderr


def totals(output):
    """{command: count} of imaptest's Totals block: a line of names, lines
    of the profile's percentages, then the line of counts."""
    lines = output[output.index("Totals:"):].splitlines()
    names = lines[1].split()
    counts = next(line.split() for line in lines[2:] if re.fullmatch(r"[\d ]+", line.strip()))
    return dict(zip(names, (int(x) for x in counts)))


def check_folder(name, folder, sessions):
    """Problems of one folder: its UID list against its files, and FETCH
    UID FLAGS through each node against the files' names."""
    problems = []
    _, entries, p = read_uidlist(folder)
    problems += p
    uid_of = {unique: uid for uid, unique in entries}
    files = {}
    for unique, flags in file_flags(folder, problems, key="unique").items():
        if unique not in uid_of:
            problems.append(f"{folder}: {unique} has no UID")
        else:
            files[uid_of[unique]] = flags
    for i, c in enumerate(sessions):
        c.ok(f"EXAMINE {quote(name)}")
        seen = uid_flags(c)
        if seen != files:
            diff = sorted(u for u in set(seen) | set(files) if seen.get(u) != files.get(u))[:5]
            problems.append(f"{folder}: node {i} shows other UIDs or flags than the files: " +
                            "; ".join(f"UID {u}: {sorted(seen.get(u, ['-']))} / "
                                      f"{sorted(files.get(u, ['-']))}" for u in diff))
    return problems, len(files)


def user_folders(maildir):
    """[(IMAP name, path)] of INBOX (the Maildir itself) and its Maildir++
    folders (.NAME), those that have a UID list."""
    out = [("INBOX", maildir)]
    out += [(name[1:], os.path.join(maildir, name)) for name in sorted(os.listdir(maildir))
            if name.startswith(".")]
    return [(n, d) for n, d in out if os.path.exists(os.path.join(d, "posthorn-uidlist"))]


def test_imaptest_stress_through_haproxy_on_two_nodes(posthorn, haproxy, imaptest, tmp_path,
                                                      users_template):
    shared = shared_store(tmp_path, users_template)
    nodes = [proxied_node(posthorn, shared, addr, f"node{i}") for i, addr in enumerate(NODE_ADDRS)]
    users = [f"it{i}@example.test" for i in range(1, USERS + 1)]
    for user in users:
        nodes[0].add_user(user, PASSWORD)
    for node in nodes:
        node.start()
    h = haproxy([("imap", [(n.addr, n.proxy_port) for n in nodes], "send-proxy-v2")])
    work = tmp_path / "imaptest"
    work.mkdir()

    rc, output = run_imaptest(imaptest, h.port("imap"), work)
    (tmp_path / "imaptest.log").write_text(output)
    assert "Totals:" in output, f"imaptest did not finish (rc={rc}):\n{output[-3000:]}"
    lines = [line for line in output.splitlines() if line.startswith(("Error:", "Panic:", "Fatal:"))]
    expunged = [line for line in lines if EXPUNGED_MEANWHILE.match(line)]
    errors = [line for line in lines if not EXPUNGED_MEANWHILE.match(line)]
    counts = totals(output)
    served = [len(n.events("login")) for n in nodes]
    assert all(served), f"HAProxy sent every login to one node: {served}"
    assert counts.get("Logi", 0) >= 20 and counts.get("Stor", 0) >= 20, counts

    problems, folders, messages = [], 0, 0
    for user in users:
        maildir = nodes[0].maildir(user)
        if not os.path.isdir(maildir):
            continue
        sessions = [imap_login(n, user, PASSWORD) for n in nodes]
        for name, folder in user_folders(maildir):
            p, n = check_folder(name, folder, sessions)
            problems += p
            folders += 1
            messages += n
        for c in sessions:
            c.logout()
    for node in nodes:
        problems += [f"{node.addr}: {ev['_line']}" for ev in node.events("mailbox-error")]
    print(f"imaptest through HAProxy, two nodes: {counts}; logins per node {served}; "
          f"{len(errors)} Error: lines ({len(expunged)} more NO [EXPUNGEISSUED]); store: {folders} folders, {messages} messages, "
          f"{len(problems)} problems")
    assert errors == [], "\n".join(errors[:30])
    assert folders >= USERS // 2 and problems == [], "\n".join(problems[:30])
