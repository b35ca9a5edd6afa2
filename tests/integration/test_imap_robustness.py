"""IMAP sessions under the events of real life (RFC 3501):
Maildir files written by other tools (CRLF line ends, no size fields in
the name, no final line end: served with one, as docs/protocols.md documents), a configuration reload and a long IDLE with
a short `limits.timeout`, clients that vanish in the middle of a large
FETCH or of an IDLE (no leak, others still served), and a message expunged
by another session while a FETCH streams it: the announced literal size is
always what is sent; five sessions changing one folder at random (STORE,
APPEND, UID EXPUNGE, COPY) keep views that agree with each other and with
the disk, each session's count following from its EXISTS/EXPUNGE alone;
IDLE hearing of files other tools drop or rename; and 4,500 commands made
at random from the grammar's pieces (seeded), each answered OK/NO/BAD,
sessions ended only by the server's BYE after many errors; and IMAP under
run-as: everything it makes in the Maildir belongs to that user.
"""

import os
import pwd
import random
import re
import socket
import ssl
import time

import pytest

from helpers import ConnectionClosed, wait_until
from imaputil import (BOB, BOB_PW, client_ctx, connect, crlf, deliver, fetch_responses,
                      folder_files, folder_path, imap_spec, info_flags, login_select, make_cert,
                      put_message, start_imap)


@pytest.fixture(scope="module")
def cert(posthorn_bin, tmp_path_factory):
    return make_cert(posthorn_bin, tmp_path_factory.mktemp("imap-robust-cert"))


@pytest.fixture(scope="module")
def ctx(cert):
    return client_ctx(cert)


@pytest.fixture
def imap(posthorn, cert):
    return start_imap(posthorn, cert)


def write_raw(p, addr, name, data, sub="cur"):
    d = folder_path(p, addr)
    for s in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(d, s), exist_ok=True)
    with open(os.path.join(d, "tmp", name), "wb") as f:
        f.write(data)
    os.rename(os.path.join(d, "tmp", name), os.path.join(d, sub, name))


def test_files_written_by_other_maildir_tools(imap, ctx):
    crlf_msg = b"Subject: crlf on disk\r\nFrom: a@example.org\r\n\r\nline one\r\nline two\r\n"
    no_eol = b"Subject: no final newline\n\nlast line without end"
    write_raw(imap, BOB, "1700000001.M1P1.othertool:2,S", crlf_msg)
    write_raw(imap, BOB, "1700000002.M2P2.othertool", no_eol, sub="new")
    c = login_select(imap, ctx)
    f = fetch_responses(c.ok("FETCH 1:2 (RFC822.SIZE FLAGS BODY.PEEK[] BODY.PEEK[TEXT])"))
    assert f[1]["BODY[]"] == crlf_msg and f[1]["RFC822.SIZE"] == str(len(crlf_msg)), f[1]
    assert f[1]["BODY[TEXT]"] == b"line one\r\nline two\r\n"
    assert "\\Seen" in f[1]["FLAGS"]
    # posthorn's documented policy (docs/protocols.md): the CRLF
    # form of a message always ends in CRLF, so a last line without a line
    # end gets one, and RFC822.SIZE counts it: size and octets agree
    want = crlf(no_eol) + b"\r\n"
    assert f[2]["BODY[]"] == want and f[2]["RFC822.SIZE"] == str(len(want)), f[2]
    assert f[2]["BODY[TEXT]"] == b"last line without end\r\n"
    c.logout()


def test_reload_keeps_imap_sessions(imap, ctx):
    put_message(imap, BOB, "Subject: before reload\n\nbody\n")
    c = login_select(imap, ctx)
    tag = c.send_cmd("IDLE")
    assert c.line().startswith("+")
    imap.reload()
    deliver(imap, BOB, "Subject: after reload\r\n\r\nbody\r\n")
    got = []
    while "* 2 EXISTS" not in got:
        got.append(c.line(timeout=10))
    c.send(b"DONE\r\n")
    assert c.collect(tag).ok
    assert len(fetch_responses(c.ok("FETCH 1:* (FLAGS)"))) == 2
    c.logout()
    c = login_select(imap, ctx, tls="starttls")          # and new sessions
    c.logout()


def test_idle_outlives_a_short_timeout(posthorn, cert, ctx):
    """limits.timeout 2s: an authenticated client in IDLE is not logged out
    after 2s (RFC 3501 §5.4, RFC 2177), and still hears of new mail."""
    p = start_imap(posthorn, cert, limits={"timeout": "2s"})
    c = login_select(p, ctx)
    tag = c.send_cmd("IDLE")
    assert c.line().startswith("+")
    time.sleep(5)
    deliver(p, BOB, "Subject: late\r\n\r\nbody\r\n")
    got = []
    while "* 1 EXISTS" not in got:
        got.append(c.line(timeout=10))
    c.send(b"DONE\r\n")
    assert c.collect(tag).ok
    c.logout()


BIG_LINE = b"z" * 99 + b"\n"


def big_message(mb):
    return b"Subject: big\nFrom: a@example.org\n\n" + BIG_LINE * (mb * 1024 * 1024 // 100)


@pytest.mark.parametrize("mode", ["starttls", "imaps"])
def test_clients_vanishing_mid_fetch_and_mid_idle(imap, ctx, mode):
    put_message(imap, BOB, big_message(8))
    for _ in range(3):
        c = login_select(imap, ctx, tls=mode)
        c.send_cmd("FETCH 1 BODY.PEEK[]")
        assert c.readline().startswith(b"* 1 FETCH (BODY[] {")
        c.sock.recv(10000)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.close()                                         # reset, mid-literal
        i = login_select(imap, ctx, tls=mode)
        i.send_cmd("IDLE")
        assert i.line().startswith("+")
        i.close()                                         # gone during IDLE
    imap.wait_event("disconnect", server="imap")
    # others are served; the daemon stops cleanly (LeakSanitizer at exit)
    c = login_select(imap, ctx, tls=mode)
    f = fetch_responses(c.ok("FETCH 1 (RFC822.SIZE)"))
    assert int(f[1]["RFC822.SIZE"]) == len(crlf(big_message(8)))
    c.logout()
    # every session ended (nothing left hanging after a reset or a vanished IDLE)
    wait_until(lambda: len(imap.events("disconnect")) >= len(imap.events("connect")),
               timeout=20, what="a disconnect for every connect")


def test_expunge_while_another_session_streams_the_message(imap, ctx):
    msg = big_message(6)
    want = crlf(msg)
    put_message(imap, BOB, msg)
    put_message(imap, BOB, "Subject: small\n\nbody\n")
    a = login_select(imap, ctx, timeout=60)
    b = login_select(imap, ctx)
    tag = a.send_cmd("FETCH 1 BODY.PEEK[]")
    first = a.readline()
    m = re.match(rb"^\* 1 FETCH \(BODY\[\] \{(\d+)\}\r\n$", first)
    assert m and int(m.group(1)) == len(want), first
    n = len(want)
    buf = bytearray(a.buf)
    a.buf = b""
    buf += a.sock.recv(100000)                         # a slow reader has started
    b.ok("STORE 1 +FLAGS (\\Deleted)")
    b.ok("EXPUNGE")
    b.logout()
    # the literal is the whole message as announced, then the response ends
    end = re.compile(rb"\r\n" + tag.encode() + rb" [A-Z]+[^\r\n]*\r\n$")
    deadline = time.monotonic() + 120
    while not (len(buf) > n and end.search(bytes(buf[n:]))):
        a.sock.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = a.sock.recv(1 << 20)
        assert chunk, f"connection closed after {len(buf)} of {n} octets"
        buf += chunk
    assert bytes(buf[:n]) == want, "the streamed message changed when it was expunged"
    rest = bytes(buf[n:])
    # no EXPUNGE during FETCH (RFC 3501 §7.4.1)
    assert re.match(rb"^\)\r\n" + tag.encode() + rb" OK", rest), rest[:300]
    r = a.ok("NOOP")
    assert r.find(r"^\* 1 EXPUNGE$"), r
    a.logout()


# -- several sessions changing one folder: every view stays consistent ---------------------------

class View:
    """One session and what the server told it: the message count, kept up
    to date from the untagged EXISTS and EXPUNGE responses alone."""

    def __init__(self, c):
        self.c = c
        self.count = None

    def run(self, cmd):
        r = self.c.cmd(cmd)
        for line in r.lines():
            m = re.match(r"^\* (\d+) (EXISTS|EXPUNGE)$", line)
            if m and m.group(2) == "EXISTS":
                assert int(m.group(1)) >= (self.count or 0) or self.count is None, \
                    f"EXISTS went down without EXPUNGE: {line} after {self.count}"
                self.count = int(m.group(1))
            elif m:
                assert 1 <= int(m.group(1)) <= self.count, f"EXPUNGE of {line} with {self.count}"
                self.count -= 1
        return r


@pytest.mark.parametrize("seed", [1, 2])
def test_five_sessions_changing_one_folder_stay_consistent(imap, ctx, seed):
    rnd = random.Random(seed)
    for i in range(10):
        put_message(imap, BOB, f"Subject: start {i}\n\nbody {i}\n", when=1700000000 + i)
    views = [View(login_select(imap, ctx, tls="imaps" if i % 2 else "starttls"))
             for i in range(5)]
    for v in views:
        v.run("NOOP")
        v.count = len(fetch_responses(v.c.ok("FETCH 1:* (UID)")))
    flags = ["\\Seen", "\\Flagged", "\\Answered", "\\Draft"]
    for step in range(200):
        v = rnd.choice(views)
        uids = [int(x) for x in v.run("UID SEARCH ALL").find(r"^\* SEARCH")[0].split()[2:]]
        action = rnd.choice(["store", "store", "append", "expunge", "copy", "noop", "fetch"])
        if action == "append" or not uids:
            msg = f"Subject: step {step}\r\n\r\nbody\r\n"
            assert v.run("APPEND INBOX {%d+}\r\n%s" % (len(msg), msg)).ok
        elif action == "store":
            op = rnd.choice(["+FLAGS", "-FLAGS", "FLAGS"])
            chosen = " ".join(rnd.sample(flags, rnd.randint(1, 2)))
            assert v.run(f"UID STORE {rnd.choice(uids)} {op} ({chosen})").ok
        elif action == "expunge":
            u = rnd.choice(uids)
            assert v.run(f"UID STORE {u} +FLAGS.SILENT (\\Deleted)").ok
            assert v.run(f"UID EXPUNGE {u}").ok
        elif action == "copy":
            assert v.run(f"UID COPY {rnd.choice(uids)} Trash").ok
        elif action == "fetch":
            assert v.run(f"UID FETCH {rnd.choice(uids)} (FLAGS BODY.PEEK[HEADER])").ok
        else:
            assert v.run("NOOP").ok
    # every session, brought up to date, sees the same messages and flags;
    # its count, kept from EXISTS/EXPUNGE alone, matches
    states = []
    for v in views:
        v.run("NOOP")
        f = fetch_responses(v.run("FETCH 1:* (UID FLAGS)"))
        assert sorted(f) == list(range(1, v.count + 1)), (v.count, sorted(f)[-3:])
        states.append({int(x["UID"]): sorted(set(x["FLAGS"]) - {"\\Recent"}) for x in f.values()})
    assert all(s == states[0] for s in states[1:])
    # and so does the disk
    on_disk = sorted(sorted(info_flags(n)) for n in folder_files(imap, BOB))
    letters = {"\\Seen": "S", "\\Flagged": "F", "\\Answered": "R", "\\Draft": "D", "\\Deleted": "T"}
    assert on_disk == sorted(sorted(letters[x] for x in fl) for fl in states[0].values())
    for v in views:
        v.c.logout()


def test_idle_announces_maildir_changes_made_by_other_tools(imap, ctx):
    """inotify on new/ and cur/: a file another program drops into new/, and
    a flag another program sets by renaming in cur/, are announced during
    IDLE within about a second (RFC 2177)."""
    first = put_message(imap, BOB, "Subject: one\n\nbody\n", sub="cur", info="")
    c = login_select(imap, ctx)
    tag = c.send_cmd("IDLE")
    assert c.line().startswith("+")
    latencies = []
    t0 = time.monotonic()
    put_message(imap, BOB, "Subject: dropped in\n\nbody\n")
    got = []
    while "* 2 EXISTS" not in got:
        got.append(c.line(timeout=10))
    latencies.append(time.monotonic() - t0)
    d, name = os.path.split(first)
    t0 = time.monotonic()
    os.rename(first, os.path.join(d, name + "F"))            # ":2," -> ":2,F"
    line = c.line(timeout=10)
    while not line.startswith("* 1 FETCH"):
        line = c.line(timeout=10)
    latencies.append(time.monotonic() - t0)
    assert "\\Flagged" in line, line
    c.send(b"DONE\r\n")
    assert c.collect(tag).ok
    c.logout()
    print("IDLE latencies: " + ", ".join(f"{x:.2f}s" for x in latencies))
    assert max(latencies) < 2.5, latencies


# -- random commands from the grammar's pieces: always an answer, never a crash -------------------

TOKENS = ["1", "*", "1:*", "2,4:5", "0", "4294967296", "1:4294967295", "$", "FLAGS", "UID",
          "BODY[]", "BODY.PEEK[HEADER.FIELDS (SUBJECT From)]", "BODY[1.2.3]<0.5>", "BODY[TEXT]<5.0>",
          "BODY[HEADER.FIELDS.NOT ()]", "BINARY[1]", "ENVELOPE", "BODYSTRUCTURE", "RFC822",
          "RFC822.SIZE", "INTERNALDATE", "FAST", "ALL", "FULL", "OR", "NOT", "HEADER", "TEXT",
          "SINCE", "01-Jan-2026", "32-Foo-99", "LARGER", "\\Seen", "\\Deleted", "\\Recent", "\\*",
          "$Forwarded", "INBOX", "Trash", "Junk", "CHARSET", "UTF-8", "+FLAGS", "-FLAGS.SILENT",
          "%", "*%*", "NIL", "(", ")", "[", "]", "<", ">", "{", "}", "\\", "\"", "~", "#news."]
NAMES = ["FETCH", "UID FETCH", "STORE", "UID STORE", "SEARCH", "UID SEARCH", "COPY", "UID COPY",
         "MOVE", "LIST", "LSUB", "STATUS", "SELECT", "EXAMINE", "CREATE", "SUBSCRIBE", "NOOP",
         "CHECK", "EXPUNGE", "UID EXPUNGE", "APPEND", "NAMESPACE", "ID", "ENABLE", "UNSELECT",
         "CLOSE", "XATOM", "UID", "UID XYZ", "", "fetch", "Uid Fetch"]


def random_arg(rnd, depth=0):
    k = rnd.random()
    if k < 0.45:
        return rnd.choice(TOKENS).encode()
    if k < 0.6:
        s = bytes(rnd.choice(b"ab \\\"\x7f\xc3\xa4%*") for _ in range(rnd.randint(0, 12)))
        return b'"' + s.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    if k < 0.7 and depth < 45:
        inner = [random_arg(rnd, depth + 1) for _ in range(rnd.randint(0, 3))]
        return b"(" * rnd.randint(1, 3) + b" ".join(inner) + b")" * rnd.randint(0, 3)
    if k < 0.8:
        n = rnd.randint(0, 60)
        data = bytes(rnd.randrange(1, 256) for _ in range(n))
        return b"{%d+}\r\n" % n + data
    if k < 0.9:
        return bytes(rnd.randrange(33, 127) for _ in range(rnd.randint(1, 20)))
    return bytes(rnd.choice(b"\x00\x01\x1b\t\x80\xff") for _ in range(rnd.randint(1, 4)))


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_random_commands_always_answered(posthorn, cert, ctx, seed):
    p = start_imap(posthorn, cert, asan_options={"quarantine_size_mb": "1"})
    for i in range(5):
        put_message(p, BOB, f"Subject: r{i}\nFrom: a@example.org\n\nbody {i}\n")
    rnd = random.Random(seed)
    c = None
    answered = closed = 0
    reasons = []
    t_end = time.monotonic() + 240
    for n in range(1500):
        assert time.monotonic() < t_end, f"only {n} commands in 240s"
        if c is None:
            c = login_select(p, ctx, timeout=30)
        name = rnd.choice(NAMES).encode()
        args = b" ".join(random_arg(rnd) for _ in range(rnd.randint(0, 5)))
        line = b"r%d " % n + name + (b" " + args if args else b"")
        try:
            c.send(line + b"\r\n")
            while True:
                resp = c.response(timeout=30)
                if resp.startswith(b"r%d " % n):
                    status = resp.split(b" ")[1]
                    assert status in (b"OK", b"NO", b"BAD"), resp
                    answered += 1
                    break
                if resp.startswith(b"+"):
                    # a synchronizing literal was announced by the random bytes: give up
                    # on this command by closing the session
                    raise ConnectionResetError("continuation")
                if resp.startswith(b"* BYE"):
                    raise ConnectionResetError("bye")
        except (ConnectionResetError, ConnectionClosed, ssl.SSLError, BrokenPipeError) as e:
            reasons.append(f"{n}: {e}")
            closed += 1
            c.close()
            p.conns.remove(c)
            c = None
    print(f"seed {seed}: {answered} answered, {closed} sessions ended by BYE")
    # sessions end only by the server's BYE after many errors (bounded)
    assert answered > 1300 and all(r.endswith("bye") for r in reasons), reasons
    # still serving, still correct
    c2 = login_select(p, ctx)
    assert len(fetch_responses(c2.ok("FETCH 1:* (UID)"))) >= 1
    c2.logout()
    assert p.running()


def test_imap_as_an_unprivileged_user(posthorn):
    """With run-as, the folders, index, flags and appended messages are made
    by the unprivileged user the daemon runs as."""
    nobody = pwd.getpwnam("nobody")
    root = posthorn.world_dir()
    p = posthorn(root=root, run_as="nobody", asan_options={"detect_leaks": "0"},
                 servers={"mx": {"anonymous": True},
                          "imap": imap_spec(None, auth=["plaintext-requires-tls no"])})
    deliver(p, BOB, "Subject: as nobody\r\n\r\nbody\r\n")
    c = connect(p)
    assert c.login(BOB, BOB_PW).ok
    c.select("INBOX")
    c.ok("STORE 1 +FLAGS (\\Flagged)")
    msg = b"Subject: appended\r\n\r\nx\r\n"
    tag = c.send_cmd("APPEND Drafts {%d}" % len(msg))
    assert c.line().startswith("+")
    c.send(msg + b"\r\n")
    assert c.collect(tag).ok
    c.ok("CREATE Made.By.Nobody")
    c.logout()
    md = p.maildir(BOB)
    made = [os.path.join(md, n) for n in os.listdir(md)]
    for sub in (os.path.join(".Drafts", "cur"), "cur"):
        made += [os.path.join(md, sub, n) for n in os.listdir(os.path.join(md, sub))]
    assert any(x.endswith(".Made.By.Nobody") for x in made), made
    for path in made:
        assert os.stat(path).st_uid == nobody.pw_uid, path


def test_acknowledged_changes_survive_kill_9(imap, ctx):
    """What was answered OK is on disk: after kill -9 the APPENDUID still
    names the appended message in the same UIDVALIDITY, with its flags."""
    deliver(imap, BOB, "Subject: before\r\n\r\nbody\r\n")
    c = login_select(imap, ctx)
    msg = b"Subject: appended before the crash\r\n\r\nkeep me\r\n"
    tag = c.send_cmd("APPEND INBOX (\\Seen) {%d}" % len(msg))
    assert c.line().startswith("+")
    c.send(msg + b"\r\n")
    r = c.collect(tag)
    assert r.ok, r
    _, validity, uid = r.code().split()
    c.ok(f"UID STORE {uid} +FLAGS (\\Flagged)")
    c.ok("STORE 1 +FLAGS (\\Answered)")
    imap.kill9()
    imap.start()
    c = login_select(imap, ctx)
    r = c.select("INBOX")
    assert f"[UIDVALIDITY {validity}]" in " ".join(r.lines()), r
    f = fetch_responses(c.ok(f"UID FETCH {uid} (FLAGS BODY.PEEK[])"))
    [v] = f.values()
    assert v["BODY[]"] == msg and {"\\Seen", "\\Flagged"} <= set(v["FLAGS"]), v
    f = fetch_responses(c.ok("FETCH 1 (FLAGS)"))
    assert "\\Answered" in f[1]["FLAGS"], f
    c.logout()
