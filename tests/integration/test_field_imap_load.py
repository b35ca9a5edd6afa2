"""IMAP under load as field clients make it: one client's storm of
pipelined COPY or APPEND commands must not hold up anybody else's
greeting.

The figures asserted are behaviour with a wide margin, not speed: a
server that does a client's disk work on its event loop, and all of its
pipelined commands in one go, keeps every other client waiting for
seconds; one that hands the disk work to its workers and takes a few
commands per turn answers the greeting at once.  Every loop is bounded in
count and time.
"""

import socket
import threading
import time

import pytest

from imaputil import BOB, BOB_PW, connect, folder_files, make_cert, put_message, start_imap

STORM_COPIES = 300        # pipelined COPY commands in one write
FOLDER_FILL = 3000        # messages already in the folder the storm writes to
GREETING_MAX = 0.3        # seconds; seconds on a server that syncs on its loop
STORM_DEADLINE = 120.0    # the storm must be answered within this (bounded test)
PROBES_MAX = 2000         # greeting probes at most


@pytest.fixture(scope="module")
def cert(posthorn_bin, tmp_path_factory):
    return make_cert(posthorn_bin, tmp_path_factory.mktemp("imap-load-cert"))


@pytest.fixture
def imap(posthorn, cert):
    # LOGIN over the plain port: the test is about TCP, not TLS
    return start_imap(posthorn, cert, auth=["plaintext-requires-tls no"])


MESSAGE = (b"From: load@example.org\r\nTo: bob@example.test\r\n"
           b"Subject: load\r\n\r\n" + b"x" * 200 + b"\r\n")


def read_tagged(c, tags, results, deadline):
    """Read c's responses until every tag in tags has its tagged line;
    results[tag] = the line (str) without the tag."""
    pending = set(tags)
    while pending and time.monotonic() < deadline:
        line = c.line(timeout=max(0.1, deadline - time.monotonic()))
        tag, _, rest = line.partition(" ")
        if tag in pending:
            results[tag] = rest
            pending.discard(tag)


def probe_greetings(port, done, deadline):
    """Connect again and again until done is set: the seconds from
    connect() to the whole greeting line, each."""
    worst = []
    for _ in range(PROBES_MAX):
        if done.is_set() or time.monotonic() > deadline:
            break
        t0 = time.monotonic()
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        try:
            buf = b""
            while not buf.endswith(b"\r\n"):
                chunk = s.recv(4096)
                assert chunk, "connection closed before the greeting"
                buf += chunk
            worst.append(time.monotonic() - t0)
            assert buf.startswith(b"* OK"), buf
        finally:
            s.close()
        time.sleep(0.01)
    return worst


def storm(imap, commands, storm_tag, expect_ok):
    """Send every command of commands (tag, bytes) in one write on a
    logged-in session with INBOX selected, and probe other clients'
    greetings while the session works through them.  Returns the worst
    greeting time and the tagged answers."""
    c = connect(imap, timeout=STORM_DEADLINE)
    assert c.login(BOB, BOB_PW).ok
    c.select("INBOX")
    deadline = time.monotonic() + STORM_DEADLINE
    results = {}
    done = threading.Event()
    reader_error = []

    def reader():
        try:
            read_tagged(c, [t for t, _ in commands], results, deadline)
        except Exception as e:      # reported by the test below
            reader_error.append(e)
        finally:
            done.set()

    th = threading.Thread(target=reader, daemon=True)
    c.send(b"".join(data for _, data in commands))
    th.start()
    times = probe_greetings(imap.port("imap"), done, deadline)
    th.join(timeout=max(1.0, deadline - time.monotonic()))
    assert not th.is_alive(), f"{storm_tag}: the storm was not answered in time"
    assert not reader_error, reader_error
    assert len(results) == len(commands), (
        f"{storm_tag}: {len(results)} of {len(commands)} answered in time")
    bad = {t: r for t, r in results.items() if not r.startswith("OK")}
    assert not bad and expect_ok, f"{storm_tag}: not OK: {list(bad.items())[:5]}"
    assert times, "no greeting was probed during the storm"
    return max(times), len(times), c


def fill(imap, folder):
    """FOLDER_FILL messages in folder (None: INBOX), known to the index."""
    for i in range(FOLDER_FILL):
        put_message(imap, BOB, f"Subject: old {i}\n\nold\n", folder=folder, sub="cur",
                    info="S")
    c = connect(imap)
    assert c.login(BOB, BOB_PW).ok
    r = c.ok(f"STATUS {folder or 'INBOX'} (MESSAGES)")
    assert r.find(rf"MESSAGES {FOLDER_FILL}\)"), r
    c.logout()


def test_copy_storm_does_not_hold_up_other_greetings(imap):
    put_message(imap, BOB, "Subject: one\n\nfirst\n")
    put_message(imap, BOB, "Subject: two\n\nsecond\n")
    fill(imap, "Trash")
    commands = [(f"c{i:04d}", f"c{i:04d} COPY 1:2 Trash\r\n".encode())
                for i in range(STORM_COPIES)]
    worst, probes, c = storm(imap, commands, "COPY", True)
    assert worst < GREETING_MAX, (
        f"a greeting took {worst:.3f} s (worst of {probes}) while one client's "
        f"{STORM_COPIES} pipelined COPYs ran")
    # every copy is there, under its own UID
    total = FOLDER_FILL + 2 * STORM_COPIES
    assert len(folder_files(imap, BOB, "Trash")) == total
    r = c.ok("STATUS Trash (MESSAGES UIDNEXT)")
    [line] = r.find(r"^\* STATUS ")
    assert f"MESSAGES {total}" in line, line
    assert f"UIDNEXT {total + 1}" in line, line


def test_append_storm_does_not_hold_up_other_greetings(imap):
    """APPENDs with non-synchronizing literals (LITERAL-), all in one
    write, into the selected folder."""
    n = STORM_COPIES
    fill(imap, None)
    commands = []
    for i in range(n):
        tag = f"p{i:04d}"
        head = f"{tag} APPEND INBOX (\\Seen) {{{len(MESSAGE)}+}}\r\n".encode()
        commands.append((tag, head + MESSAGE + b"\r\n"))
    worst, probes, c = storm(imap, commands, "APPEND", True)
    assert worst < GREETING_MAX, (
        f"a greeting took {worst:.3f} s (worst of {probes}) while one client's "
        f"{n} pipelined APPENDs ran")
    assert len(folder_files(imap, BOB)) == FOLDER_FILL + n
    r = c.ok(f"UID SEARCH UID {FOLDER_FILL + 1}:*")
    [line] = r.find(r"^\* SEARCH")
    assert sorted(int(u) for u in line.split()[2:]) == list(range(FOLDER_FILL + 1,
                                                                   FOLDER_FILL + n + 1))
