"""Helpers for the tests of several posthorn nodes sharing one mailbox
store (test_two_nodes.py, test_node_loss.py): nodes on their own loopback
addresses with their own spools and the same `mailboxes` folder and users
file, SMTP and IMAP clients bound to one node, and a reading of the shared
store as a user would check it (the UID list, the message files, their
Message-IDs and flags).

Every socket goes to a numeric 127.0.0.x address; every read is bounded
in time.
"""

import os
import re
import shutil
import smtplib

from helpers import CLIENT_HELO, HOST, free_port
from imaputil import IMAPConn, Result, quote

NODE_ADDRS = ("127.0.0.2", "127.0.0.3")
PLAIN_LOGIN = "auth {\n    plaintext-requires-tls no\n}"


def shared_store(tmp_path, users_template):
    """The folder both nodes share: mail/ and the users file."""
    shared = tmp_path / "shared"
    os.makedirs(shared / "mail", exist_ok=True)
    shutil.copy2(users_template, shared / "users")
    os.chmod(shared / "users", 0o600)
    return shared


def start_node(posthorn, shared, addr, name, imap=True, pop3=False, start=True):
    """A node listening on addr only: SMTP `mx` (anonymous), IMAP `imap`
    and POP3 `pop` with plaintext LOGIN; its own spool under its folder,
    the shared mailboxes and users file."""
    servers = {"mx": {"anonymous": True, "port": free_port(addr)}}
    if imap:
        servers["imap"] = {"anonymous": None, "port": free_port(addr),
                           "extra": "protocol imap\n" + PLAIN_LOGIN}
    if pop3:
        servers["pop"] = {"anonymous": None, "port": free_port(addr),
                          "extra": "protocol pop3\n" + PLAIN_LOGIN}
    p = posthorn(servers=servers, start=False, root=shared.parent / name)
    p.mailboxes = str(shared / "mail")
    p.users_file = str(shared / "users")
    p.write_config(p.config_text().replace(f"listen {HOST}:", f"listen {addr}:"))
    p.addr = addr
    if start:
        p.start()
    return p


def smtp_to(node, timeout=20.0):
    return smtplib.SMTP(node.addr, node.port("mx"), local_hostname=CLIENT_HELO, timeout=timeout)


def message(msgid, rcpt, note=""):
    return (f"From: sender@example.org\r\nTo: {rcpt}\r\nSubject: {msgid} {note}\r\n"
            f"Message-ID: <{msgid}>\r\n\r\nbody of {msgid}\r\n").encode()


def imap_login(node, user, password, timeout=20.0):
    c = IMAPConn(node.port("imap"), host=node.addr, timeout=timeout)
    node.conns.append(c)
    c.greeting()
    r = c.login(user, password)
    assert r.ok, r
    return c


def imap_append(c, folder, data, flags=""):
    """APPEND with a synchronizing literal; the Result."""
    tag = c.next_tag()
    fl = f"({flags}) " if flags else ""
    c.send(f"{tag} APPEND {quote(folder)} {fl}{{{len(data)}}}\r\n".encode())
    first = c.response()
    if not first.startswith(b"+"):
        return Result(tag, [], first[len(tag) + 1:].decode("utf-8", "replace"))
    c.send(data + b"\r\n")
    return c.collect(tag)


MSGID_RE = re.compile(rb"(?im)^Message-ID:\s*<([^>]+)>")


def uid_msgids(result):
    """UID -> Message-ID from the FETCH responses of a
    UID FETCH ... (UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])."""
    out = {}
    for u in result.untagged:
        m = re.match(rb"\* \d+ FETCH .*?UID (\d+)", u, re.S)
        i = MSGID_RE.search(u)
        if m and i:
            out[int(m.group(1))] = i.group(1).decode()
    return out


def read_uidlist(folder):
    """(UIDVALIDITY, [(uid, unique)], problems) of a folder's posthorn-uidlist."""
    problems = []
    with open(os.path.join(folder, "posthorn-uidlist"), "rb") as f:
        lines = f.read().split(b"\n")
    head = re.match(rb"^V(\d+) N(\d+)$", lines[0])
    if not head:
        return None, [], [f"{folder}: bad header {lines[0]!r}"]
    entries = []
    for line in lines[1:]:
        if not line or line.startswith(b"N"):
            continue
        uid, _, unique = line.partition(b" ")
        if not uid.isdigit() or not unique:
            problems.append(f"{folder}: bad line {line!r}")
            continue
        entries.append((int(uid), unique.decode()))
    uids = [u for u, _ in entries]
    if any(b <= a for a, b in zip(uids, uids[1:])):
        problems.append(f"{folder}: UIDs not strictly increasing")
    uniques = [n for _, n in entries]
    if len(set(uniques)) != len(uniques):
        problems.append(f"{folder}: a message listed twice")
    return int(head.group(1)), entries, problems


def unique_part(name):
    return re.split(r"[,:]", name, 1)[0]


def folder_messages(folder):
    """[(file name, Message-ID, flag letters)] of a folder's new/ and cur/."""
    out = []
    for sub in ("new", "cur"):
        d = os.path.join(folder, sub)
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            with open(os.path.join(d, name), "rb") as f:
                m = MSGID_RE.search(f.read(4096))
            _, sep, info = name.rpartition(":2,")
            out.append((name, m.group(1).decode() if m else None, info if sep else ""))
    return out


SYSTEM_FLAGS = {"D": "\\Draft", "F": "\\Flagged", "R": "\\Answered", "S": "\\Seen",
                "T": "\\Deleted"}


def dovecot_keywords(folder, problems):
    """{letter: keyword} of a folder's dovecot-keywords ("N name" lines, N
    0 to 25; none when there is no file); bad or repeated lines are
    problems."""
    names = {}
    path = os.path.join(folder, "dovecot-keywords")
    if not os.path.exists(path):
        return names
    with open(path) as f:
        for line in f.read().splitlines():
            m = re.fullmatch(r"(\d+) (\S+)", line)
            if not m or int(m.group(1)) > 25:
                problems.append(f"{path}: bad line {line!r}")
                continue
            letter = chr(ord("a") + int(m.group(1)))
            if letter in names or m.group(2) in names.values():
                problems.append(f"{path}: {line!r} repeats a number or a name")
            names[letter] = m.group(2)
    return names


def file_flags(folder, problems, key="msgid"):
    """{Message-ID (or, with key="unique", the file name's unique part):
    set of flags} as the file names say, keyword letters named by the
    folder's dovecot-keywords; a key found twice or a letter without a
    name is a problem."""
    names = dovecot_keywords(folder, problems)
    out = {}
    for name, msgid, info in folder_messages(folder):
        k = msgid if key == "msgid" else unique_part(name)
        if k in out:
            problems.append(f"{folder}: {k} in two files (one is {name})")
        flags = set()
        for ch in info:
            if ch in SYSTEM_FLAGS:
                flags.add(SYSTEM_FLAGS[ch])
            elif ch in names:
                flags.add(names[ch])
            else:
                problems.append(f"{folder}: {name}: letter {ch!r} has no name in dovecot-keywords")
        out[k] = flags
    return out


FETCH_UID_FLAGS_RE = re.compile(rb"^\* \d+ FETCH \((?=.*?UID (\d+))(?=.*?FLAGS \(([^)]*)\))", re.S)


def uid_flags(c):
    """{UID: set of flags, \\Recent left out} of the selected folder."""
    r = c.cmd("UID FETCH 1:* (UID FLAGS)")
    assert r.ok, r
    out = {}
    for u in r.untagged:
        m = FETCH_UID_FLAGS_RE.match(u)
        if m:
            out[int(m.group(1))] = set(m.group(2).decode().split()) - {"\\Recent"}
    return out
