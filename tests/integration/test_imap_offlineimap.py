"""offlineimap (Debian's offlineimap3) synchronising an account with
posthorn over IMAPS, keywords included (RFC 3501 §2.3.2 flag-keyword):
the server's keywords, set with imaplib's STORE, arrive in the local
Maildir as the letters of offlineimap's customflag_[a-z] mapping (the
Dovecot convention posthorn also uses on its side), a local flag change
is pushed back with +FLAGS/-FLAGS so the server's keywords stay, a
second run changes nothing, and flags and keywords survive a restart of
the daemon.

offlineimap maps keywords one way only: from the server to the Maildir
(its flagsmaildir2imap knows the five system flags alone), so a letter
added to a local file name is not sent to the server; the test checks
that the server's message keeps its keywords and flags then.
"""

import imaplib
import os
import re
import subprocess

import pytest

from helpers import HOST
from imaputil import (BOB, BOB_PW, client_ctx, deliver, folder_path, imaplib_fetch, make_cert,
                      start_imap, text)

OFFLINEIMAP = "/usr/bin/offlineimap"
# offlineimap's customflag_<letter> = keyword, in the local repository
MAPPING = {"a": "$Forwarded", "b": "$Junk", "c": "$label1"}
SYSTEM = {"S": "\\Seen", "R": "\\Answered", "F": "\\Flagged", "T": "\\Deleted", "D": "\\Draft"}

@pytest.fixture(scope="module")
def cert(posthorn_bin, tmp_path_factory):
    return make_cert(posthorn_bin, tmp_path_factory.mktemp("imap-offlineimap-cert"))


@pytest.fixture
def imap(posthorn, cert):
    return start_imap(posthorn, cert)


def offlineimap_config(tmp_path, cert, port):
    """One account: the server's INBOX over IMAPS (the test certificate,
    PLAIN inside TLS) and a local Maildir with the keyword mapping."""
    local = tmp_path / "local"
    custom = "\n".join(f"customflag_{ch} = {kw}" for ch, kw in MAPPING.items())
    conf = tmp_path / "offlineimaprc"
    conf.write_text(f"""\
[general]
accounts = test
metadata = {tmp_path}/metadata

[Account test]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {local}
{custom}

[Repository remote]
type = IMAP
remotehost = {HOST}
remoteport = {port}
remoteuser = {BOB}
remotepass = {BOB_PW}
ssl = yes
sslcacertfile = {cert['crt']}
auth_mechanisms = PLAIN
maxconnections = 1
folderfilter = lambda name: name == 'INBOX'
""")
    os.chmod(conf, 0o600)
    return str(conf), str(local / "INBOX")


def run_offlineimap(conf, tmp_path):
    env = dict(os.environ, HOME=str(tmp_path))
    res = subprocess.run([OFFLINEIMAP, "-c", conf, "-o", "-u", "basic"], capture_output=True,
                         text=True, timeout=120, env=env)
    out = res.stdout + res.stderr
    assert res.returncode == 0, f"offlineimap failed ({res.returncode}):\n{out}"
    assert "ERROR" not in out, out
    return out


def local_files(inbox):
    """{Subject: (sub, file name)} of the local Maildir."""
    out = {}
    for sub in ("new", "cur"):
        for n in os.listdir(os.path.join(inbox, sub)):
            with open(os.path.join(inbox, sub, n), "rb") as f:
                subj = re.search(rb"(?m)^Subject: (.*?)\r?$", f.read()).group(1).decode()
            out[subj] = (sub, n)
    return out


def local_flags(inbox):
    """{Subject: set of flags} of the local Maildir, letters mapped back."""
    out = {}
    for subj, (_, n) in local_files(inbox).items():
        info = n.rpartition(":2,")[2] if ":2," in n else ""
        out[subj] = {SYSTEM.get(ch) or MAPPING[ch] for ch in info}
    return out


def server_flags(p, cert):
    """{Subject: set of flags} of the server's INBOX, from FETCH."""
    m = imaplib.IMAP4_SSL(HOST, p.imaps_port, ssl_context=client_ctx(cert), timeout=30)
    m.login(BOB, BOB_PW)
    m.select("INBOX", readonly=True)
    typ, data = m.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK", data
    m.logout()
    out = {}
    for d in imaplib_fetch(data).values():
        hdr = next(v for k, v in d.items() if k.startswith("BODY"))
        subj = re.search(rb"Subject: (.*?)\r\n", hdr).group(1).decode()
        out[subj] = {text(f) for f in d["FLAGS"]} - {"\\Recent"}
    return out


def server_names(p):
    d = folder_path(p, BOB)
    return sorted(os.listdir(os.path.join(d, "cur")) + os.listdir(os.path.join(d, "new")))


def test_offlineimap_synchronises_keywords(imap, cert, tmp_path):
    for i in range(3):
        deliver(imap, BOB, f"From: a@example.org\r\nSubject: oi {i}\r\n\r\nbody {i}\r\n")
    m = imaplib.IMAP4_SSL(HOST, imap.imaps_port, ssl_context=client_ctx(cert), timeout=30)
    m.login(BOB, BOB_PW)
    m.select("INBOX")
    for seq, flags in (("1", "($Forwarded \\Seen)"), ("2", "($Junk $label1)")):
        typ, data = m.store(seq, "+FLAGS", flags)
        assert typ == "OK", data
    m.logout()
    conf, inbox = offlineimap_config(tmp_path, cert, imap.imaps_port)

    # 1. pull: the keywords arrive as the mapped letters
    out = run_offlineimap(conf, tmp_path)
    want = {"oi 0": {"$Forwarded", "\\Seen"}, "oi 1": {"$Junk", "$label1"}, "oi 2": set()}
    assert local_flags(inbox) == want, out
    assert server_flags(imap, cert) == want

    # 2. push: a message marked seen and answered locally (its keyword
    # letters kept); the server keeps its keywords beside the new flags
    files = local_files(inbox)
    sub, n = files["oi 1"]
    base = n.partition(":2,")[0]
    os.rename(os.path.join(inbox, sub, n), os.path.join(inbox, "cur", f"{base}:2,RSbc"))
    out = run_offlineimap(conf, tmp_path)
    want = {"oi 0": {"$Forwarded", "\\Seen"},
            "oi 1": {"$Junk", "$label1", "\\Seen", "\\Answered"}, "oi 2": set()}
    assert server_flags(imap, cert) == want, out
    assert local_flags(inbox) == want, out

    # 3. keywords changed on the server (one removed, one added) reach
    # the local file names
    m = imaplib.IMAP4_SSL(HOST, imap.imaps_port, ssl_context=client_ctx(cert), timeout=30)
    m.login(BOB, BOB_PW)
    m.select("INBOX")
    for seq, op, flags in (("2", "-FLAGS", "($Junk)"), ("3", "+FLAGS", "($label1 $Forwarded)")):
        typ, data = m.store(seq, op, flags)
        assert typ == "OK", data
    m.logout()
    out = run_offlineimap(conf, tmp_path)
    want = {"oi 0": {"$Forwarded", "\\Seen"}, "oi 1": {"$label1", "\\Seen", "\\Answered"},
            "oi 2": {"$label1", "$Forwarded"}}
    assert local_flags(inbox) == want, out
    assert server_flags(imap, cert) == want

    # 4. a second run changes nothing, on either side
    before = (sorted(local_files(inbox).values()), server_names(imap))
    out = run_offlineimap(conf, tmp_path)
    assert (sorted(local_files(inbox).values()), server_names(imap)) == before, out

    # 5. a restart of the daemon: flags and keywords kept; nothing to do
    imap.restart()
    assert server_flags(imap, cert) == want
    out = run_offlineimap(conf, tmp_path)
    assert (sorted(local_files(inbox).values()), server_names(imap)) == before, out
