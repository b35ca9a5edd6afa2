"""Real IMAP clients against posthorn (RFC 3501): curl over IMAPS and over
STARTTLS (listing folders, fetching by UID and by index, searching, a
custom command), and mbsync (Debian's isync) synchronising an account
both ways: the server's messages pulled into a local Maildir with their
flags, a flag change and a new message pushed back, a restart of the
daemon in between (UIDVALIDITY must not change or mbsync refuses), and a
last run that finds nothing to do; and mbsync's flag changes keeping the
keywords a message has on the server.

Every connection goes to 127.0.0.1 under a certificate made for that
address, which curl and mbsync check.
"""

import os
import re
import subprocess

import pytest

from helpers import HOST
from imaputil import (BOB, BOB_PW, CURL, DAVE, DAVE_PW, MBSYNC, client_ctx, crlf, deliver,
                      folder_files, folder_path, info_flags, login_select, make_cert,
                      mbsync_config, start_imap, unique_part)
from nodeutil import file_flags


@pytest.fixture(scope="module")
def cert(posthorn_bin, tmp_path_factory):
    return make_cert(posthorn_bin, tmp_path_factory.mktemp("imap-clients-cert"))


@pytest.fixture(scope="module")
def ctx(cert):
    return client_ctx(cert)


@pytest.fixture
def imap(posthorn, cert):
    return start_imap(posthorn, cert)


def curl(cert, user, password, url, *args):
    argv = [CURL, "-sS", "--max-time", "30", "--noproxy", "*", "--cacert", cert["crt"],
            "-u", f"{user}:{password}"] + list(args) + [url]
    return subprocess.run(argv, capture_output=True, timeout=60)


# -- curl ------------------------------------------------------------------------------------

def test_curl_imaps_lists_fetches_and_searches(imap, cert, ctx):
    msgs = [crlf(f"From: a@example.org\nSubject: curl {i}\n\nbody of message {i}\n.dot line\n")
            for i in range(3)]
    for m in msgs:
        deliver(imap, BOB, m)
    stored = imap.messages(BOB)
    c = login_select(imap, ctx)
    uids = [int(x) for x in re.findall(r"UID (\d+)", " ".join(c.ok("FETCH 1:* (UID)").lines()))]
    c.logout()
    assert len(uids) == 3
    base = f"imaps://{HOST}:{imap.imaps_port}"

    # the folder list
    res = curl(cert, BOB, BOB_PW, base + "/")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.decode().splitlines()
    names = sorted(re.search(r'"\." "?([^"]+)"?$', line).group(1) for line in lines)
    assert names == sorted(["INBOX", "Sent", "Drafts", "Trash", "Junk"]), lines
    assert any("\\Trash" in line and line.rstrip('"').endswith("Trash") for line in lines), lines

    # a message by UID and by index: the stored message, byte for byte
    res = curl(cert, BOB, BOB_PW, f"{base}/INBOX;UID={uids[1]}")
    assert res.returncode == 0, res.stderr
    assert res.stdout == stored[1]
    res = curl(cert, BOB, BOB_PW, f"{base}/INBOX;MAILINDEX=3")
    assert res.returncode == 0, res.stderr
    assert res.stdout == stored[2]
    # a section
    res = curl(cert, BOB, BOB_PW, f"{base}/INBOX;UID={uids[0]};SECTION=TEXT")
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"body of message 0\r\n.dot line\r\n"
    # a search
    res = curl(cert, BOB, BOB_PW, f"{base}/INBOX?SUBJECT%20%22curl%202%22")
    assert res.returncode == 0, res.stderr
    assert res.stdout.decode().split() == ["*", "SEARCH", "3"], res.stdout
    # a custom command
    res = curl(cert, BOB, BOB_PW, base + "/", "-X", "STATUS INBOX (MESSAGES UNSEEN)")
    assert res.returncode == 0, res.stderr
    # curl fetches with BODY[] (not BODY.PEEK[]): all three are \Seen by now
    assert re.search(rb"MESSAGES 3", res.stdout) and re.search(rb"UNSEEN 0", res.stdout), \
        res.stdout
    # a wrong password: curl fails, with the server's NO
    res = curl(cert, BOB, "wrong-Guess-91", base + "/")
    assert res.returncode != 0
    assert "wrong-Guess-91" not in imap.log and BOB_PW not in imap.log


def test_curl_imap_starttls(imap, cert):
    deliver(imap, DAVE, "Subject: via starttls\r\n\r\nstarttls body\r\n")
    [stored] = imap.messages(DAVE)
    url = f"imap://{HOST}:{imap.port('imap')}/INBOX;MAILINDEX=1"
    res = curl(cert, DAVE, DAVE_PW, url, "--ssl-reqd")
    assert res.returncode == 0, res.stderr
    assert res.stdout == stored
    logins = [e for e in imap.events("login") if e.get("user") == DAVE]
    assert logins and all(e.get("tls") == "yes" for e in logins), logins
    # without TLS curl's login is refused (LOGINDISABLED before STARTTLS)
    res = curl(cert, DAVE, DAVE_PW, url)
    assert res.returncode != 0, res.stdout


# -- mbsync ------------------------------------------------------------------------------------

def local_state(local):
    """{folder: {unique part of the file name: flags}} of mbsync's Maildirs."""
    out = {}
    for folder in sorted(os.listdir(local)):
        fd = os.path.join(local, folder)
        if not os.path.isdir(os.path.join(fd, "cur")):
            continue
        msgs = {}
        for sub in ("new", "cur"):
            for n in os.listdir(os.path.join(fd, sub)):
                msgs[n.split(",")[0].split(":")[0]] = info_flags(n)
        out[folder] = msgs
    return out


def server_state(p, addr):
    """{folder: {unique part: flags}} of the server's Maildir (all folders)."""
    out = {"INBOX": {unique_part(n): info_flags(n) for n in folder_files(p, addr)}}
    root = p.maildir(addr)
    for d in sorted(os.listdir(root)):
        if d.startswith(".") and os.path.isdir(os.path.join(root, d, "cur")):
            out[d[1:]] = {unique_part(n): info_flags(n) for n in folder_files(p, addr, d[1:])}
    return out


def without_tuid(data):
    """mbsync marks the copies it propagates with an X-TUID header field."""
    return re.sub(rb"(?m)^X-TUID: [^\r\n]*\r\n", b"", crlf(data), count=1)


def sync_states(local):
    """{folder: text of mbsync's .mbsyncstate} (UIDVALIDITYs, UID pairs, flags)."""
    out = {}
    for folder in sorted(os.listdir(local)):
        path = os.path.join(local, folder, ".mbsyncstate")
        if os.path.isfile(path):
            with open(path) as f:
                out[folder] = f.read()
    return out


def local_bodies(local, folder):
    out = []
    for sub in ("new", "cur"):
        d = os.path.join(local, folder, sub)
        for n in sorted(os.listdir(d)):
            with open(os.path.join(d, n), "rb") as f:
                out.append(without_tuid(f.read()))
    return sorted(out)


def run_mbsync(conf, tmp_path):
    env = dict(os.environ, HOME=str(tmp_path))
    res = subprocess.run([MBSYNC, "-V", "-c", conf, "-a"], capture_output=True, text=True,
                         timeout=120, env=env)
    assert res.returncode == 0, f"mbsync failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    return res.stdout + res.stderr


@pytest.mark.parametrize("ssltype,authmechs", [("IMAPS", "*"), ("STARTTLS", "LOGIN")])
def test_mbsync_synchronises_both_ways(imap, cert, ctx, tmp_path, ssltype, authmechs):
    for i in range(3):
        deliver(imap, BOB, f"From: a@example.org\r\nSubject: sync {i}\r\n\r\nbody {i}\r\n")
    # one message flagged on the server before the first sync
    c = login_select(imap, ctx)
    c.ok("STORE 2 +FLAGS (\\Flagged)")
    c.logout()
    mark = imap.log_mark()
    local = str(tmp_path / "local")
    port = imap.imaps_port if ssltype == "IMAPS" else imap.port("imap")
    conf = mbsync_config(str(tmp_path / "mbsyncrc"), cert, port, BOB, BOB_PW, local, ssltype,
                         authmechs)

    # 1. pull: every folder, every message, the flag
    out = run_mbsync(conf, tmp_path)
    print(out)
    state = local_state(local)
    assert set(state) == {"INBOX", "Sent", "Drafts", "Trash", "Junk"}, (state, out)
    assert len(state["INBOX"]) == 3, state
    assert local_bodies(local, "INBOX") == sorted(imap.messages(BOB))
    assert sorted(state["INBOX"].values()) == ["", "", "F"], state
    # run again at once: nothing changes on either side
    before = (local_state(local), server_state(imap, BOB), sync_states(local))
    out = run_mbsync(conf, tmp_path)
    assert (local_state(local), server_state(imap, BOB), sync_states(local)) == before, out

    # 2. push: a flag set locally, a message written locally into Drafts
    target = None
    for sub in ("cur", "new"):
        for n in sorted(os.listdir(os.path.join(local, "INBOX", sub))):
            with open(os.path.join(local, "INBOX", sub, n), "rb") as f:
                if b"Subject: sync 0" in f.read():
                    target = (sub, n)
    assert target, state
    sub, n = target
    base = n.split(":2,")[0]
    os.rename(os.path.join(local, "INBOX", sub, n),
              os.path.join(local, "INBOX", "cur", base + ":2,RS"))
    draft = crlf("From: Bob <bob@example.test>\nSubject: written offline\n\ndraft body\n")
    dd = os.path.join(local, "Drafts")
    with open(os.path.join(dd, "tmp", "1700000000.offline.draft"), "wb") as f:
        f.write(draft.replace(b"\r\n", b"\n"))
    os.rename(os.path.join(dd, "tmp", "1700000000.offline.draft"),
              os.path.join(dd, "cur", "1700000000.offline.draft:2,DS"))
    out = run_mbsync(conf, tmp_path)
    print(out)
    # on the server: the flags in the file name, the draft in .Drafts
    flags = {}
    for name in folder_files(imap, BOB):
        with open(os.path.join(folder_path(imap, BOB), "cur", name), "rb") as f:
            subj = re.search(rb"Subject: (sync \d)", f.read()).group(1).decode()
        flags[subj] = info_flags(name)
    assert flags == {"sync 0": "RS", "sync 1": "F", "sync 2": ""}, flags
    [dname] = folder_files(imap, BOB, "Drafts")
    assert info_flags(dname) == "DS", dname
    with open(os.path.join(folder_path(imap, BOB, "Drafts"), "cur", dname), "rb") as f:
        assert without_tuid(f.read()) == draft

    # the mechanism mbsync used, inside TLS
    logins = imap.events("login", since=mark)
    assert {e.get("mechanism") for e in logins} == \
        ({"LOGIN"} if authmechs == "LOGIN" else {"SCRAM-SHA-256"}), logins
    assert all(e.get("tls") == "yes" and e.get("user") == BOB for e in logins), logins

    # 3. a restart of the daemon, then nothing to do: no file changes anywhere
    imap.restart()
    before_local, before_server = local_state(local), server_state(imap, BOB)
    before_sync = sync_states(local)
    assert set(before_sync) == {"INBOX", "Sent", "Drafts", "Trash", "Junk"}, before_sync
    out = run_mbsync(conf, tmp_path)
    print(out)
    assert "UIDVALIDITY" not in out.upper() or "changed" not in out.lower(), out
    assert local_state(local) == before_local, out
    assert server_state(imap, BOB) == before_server, out
    # mbsync's own record of the pairs of UIDs and flags did not change either
    assert sync_states(local) == before_sync, out


def test_mbsync_flag_changes_keep_server_keywords(imap, cert, ctx, tmp_path):
    """mbsync (isync 1.4) synchronises system flags only: a message marked
    seen locally and pushed keeps the keywords it has on the server, and
    the folder's dovecot-keywords still names every letter in use."""
    for i in range(2):
        deliver(imap, BOB, f"From: a@example.org\r\nSubject: kw {i}\r\n\r\nbody {i}\r\n")
    c = login_select(imap, ctx)
    c.ok("STORE 1 +FLAGS ($Forwarded $Junk \\Flagged)")
    c.ok("STORE 2 +FLAGS ($label1)")
    c.logout()
    local = str(tmp_path / "local")
    conf = mbsync_config(str(tmp_path / "mbsyncrc"), cert, imap.imaps_port, BOB, BOB_PW, local)
    run_mbsync(conf, tmp_path)
    # mark both seen locally (mbsync's own letters), then push
    inbox = os.path.join(local, "INBOX")
    for sub in ("new", "cur"):
        for n in os.listdir(os.path.join(inbox, sub)):
            base, _, info = n.partition(":2,")
            os.rename(os.path.join(inbox, sub, n),
                      os.path.join(inbox, "cur", f"{base}:2,{''.join(sorted(info + 'S'))}"))
    out = run_mbsync(conf, tmp_path)
    c = login_select(imap, ctx)
    flags = {}
    for line in c.ok("FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])").lines():
        m = re.search(r"FLAGS \(([^)]*)\).*Subject: (kw \d)", line, re.S)
        if m:
            flags[m.group(2)] = set(m.group(1).split()) - {"\\Recent"}
    c.logout()
    assert flags == {"kw 0": {"$Forwarded", "$Junk", "\\Flagged", "\\Seen"},
                     "kw 1": {"$label1", "\\Seen"}}, out
    # the Maildir: every letter named by dovecot-keywords, the same flags
    problems = []
    on_disk = file_flags(folder_path(imap, BOB), problems, key="unique")
    assert not problems, problems
    assert sorted(map(sorted, on_disk.values())) == \
        sorted(map(sorted, flags.values())), on_disk
    # a second run finds nothing to do
    before = (local_state(local), server_state(imap, BOB))
    out = run_mbsync(conf, tmp_path)
    assert (local_state(local), server_state(imap, BOB)) == before, out
