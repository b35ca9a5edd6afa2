"""IMAP under load as field clients make it: the latency of a command
whose literal and the CRLF after it come in two writes (Python's imaplib
and imaptest send APPEND so; SMTP's end of data likewise), and one
client's storm of pipelined COPY or APPEND commands, which must not hold
up anybody else's greeting.

The figures asserted are protocol behaviour with a wide margin, not
speed: a server whose delayed ACK meets the client's Nagle algorithm
answers such a command after the delayed-ACK timer (about 40 ms on
Linux), one that acknowledges at once in a few milliseconds; a server
that does a client's disk work on its event loop, all its pipelined
commands in one go, keeps every other client waiting for seconds, one
that hands the disk work to its workers and takes a few commands a turn
answers the greeting at once.  Every loop is bounded in count and time,
and the tests run alone (exclusive): their bounds are wall-clock ones.
"""

import imaplib
import socket
import statistics
import threading
import time

import pytest

from imaputil import (BOB, BOB_PW, client_ctx, connect, folder_files, make_cert, put_message,
                      start_imap)

pytestmark = pytest.mark.exclusive

APPENDS = 20              # commands timed (after two that warm the session up)
APPEND_EXTRA_MAX = 0.020  # seconds more than without Nagle; about 0.040 when the ACK waits
LITERAL_MEDIAN_MAX = 0.020  # seconds; about 0.044 when the ACK waits for its timer
STORM_COPIES = 300        # pipelined COPY commands in one write
FOLDER_FILL = 3000        # messages already in the folder the COPYs write to
APPEND_FILL = 8000        # and in the one the APPENDs write to
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


class RecordingIMAP4(imaplib.IMAP4):
    """imaplib as it is, with each write it makes to the socket recorded."""

    def __init__(self, *args, **kw):
        self.writes = []
        super().__init__(*args, **kw)

    def send(self, data):
        self.writes.append(bytes(data))
        super().send(data)


def imaplib_session(port, nodelay):
    c = RecordingIMAP4("127.0.0.1", port, timeout=15)
    if nodelay:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # imaplib leaves Nagle's algorithm on: the case that waits for the ACK
    assert c.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == int(nodelay)
    typ, _ = c.login(BOB, BOB_PW)
    assert typ == "OK"
    return c


def timed_append(c):
    t0 = time.monotonic()
    typ, data = c.append("INBOX", None, None, MESSAGE)
    took = time.monotonic() - t0
    assert typ == "OK", data
    # the literal and the CRLF that ends the command: two writes
    assert c.writes[-2:] == [MESSAGE, b"\r\n"], c.writes[-2:]
    return took


def ms(times):
    return ", ".join(f"{t * 1000:.1f}" for t in sorted(times))


def test_append_latency_with_literal_and_crlf_in_two_writes(imap):
    """imaplib's APPEND as it is (Nagle on) beside the same APPEND from a
    socket with TCP_NODELAY, whose second write leaves at once, taken in
    turns: what the first waits for beyond the second is the server's
    delayed ACK of the literal (about 40 ms).  The difference, not the
    time itself, is asserted: each APPEND syncs the disk, whose time this
    test does not judge (it varies from one APPEND to the next by more
    than the limit on a busy machine)."""
    port = imap.port("imap")
    nagle, nodelay = imaplib_session(port, False), imaplib_session(port, True)
    try:
        waits, direct = [], []
        for i in range(APPENDS + 2):
            a, b = timed_append(nagle), timed_append(nodelay)
            if i >= 2:               # the first two warm the sessions up
                waits.append(a)
                direct.append(b)
        nagle.logout()
        nodelay.logout()
    finally:
        for c in (nagle, nodelay):
            try:
                c.shutdown()
            except OSError:
                pass
    # each pair ran back to back, under the same load: the median of the
    # differences is what Nagle on costs
    extra = statistics.median(a - b for a, b in zip(waits, direct))
    assert extra < APPEND_EXTRA_MAX, (
        f"imaplib's APPEND took {extra * 1000:.1f} ms longer (median) than one whose CRLF "
        f"leaves at once: the server's ACK of the literal waited for the delayed-ACK timer "
        f"(Nagle on: {ms(waits)} ms; TCP_NODELAY: {ms(direct)} ms)")
    assert len(folder_files(imap, BOB)) == 2 * (APPENDS + 2)


@pytest.mark.parametrize("tls", [None, "starttls", "imaps"])
def test_literal_then_rest_of_command_in_second_write(imap, cert, tls):
    """The same without the disk: STATUS with its mailbox name as a
    literal, the rest of the command in a second write, Nagle on; in the
    clear, after STARTTLS (TLS as a filter over the connection) and on
    the implicit-TLS port (each write a TLS record of its own)."""
    c = connect(imap, tls=tls, ctx=client_ctx(cert) if tls else None)
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)   # the raw client sets it
    assert c.login(BOB, BOB_PW).ok
    times = []
    for i in range(APPENDS + 2):
        tag = c.next_tag()
        t0 = time.monotonic()
        c.send(f"{tag} STATUS {{5}}\r\n".encode())
        assert c.line().startswith("+ ")
        c.send(b"INBOX")
        c.send(b" (MESSAGES)\r\n")
        r = c.collect(tag)
        if i >= 2:
            times.append(time.monotonic() - t0)
        assert r.ok, r
    median = statistics.median(times)
    assert median < LITERAL_MEDIAN_MAX, (
        f"STATUS with a literal ({tls or 'plain'}): median {median * 1000:.1f} ms (all: {ms(times)} ms): the "
        "server's ACK of the literal waited for the delayed-ACK timer")


def test_smtp_end_of_data_in_second_write(mx):
    """SMTP has the same pattern: a client that writes the message and the
    final "." line in two calls (Nagle on) waits for the ACK of the
    message before the "." leaves."""
    c = mx.connect()
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
    c.start()
    body = b"Subject: ack\r\n\r\n" + b"y" * 300 + b"\r\n"
    times = []
    for i in range(APPENDS + 2):
        c.expect("MAIL FROM:<load@example.org>", 250)
        c.expect("RCPT TO:<bob@example.test>", 250)
        c.expect("DATA", 354)
        t0 = time.monotonic()
        c.send(body)
        c.send(b".\r\n")
        r = c.reply()
        if i >= 2:
            times.append(time.monotonic() - t0)
        assert r.code == 250, r.raw
    median = statistics.median(times)
    assert median < LITERAL_MEDIAN_MAX, (
        f"end of data: median {median * 1000:.1f} ms (all: {ms(times)} ms): the server's "
        "ACK of the message waited for the delayed-ACK timer")


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
    times = []
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
            times.append(time.monotonic() - t0)
            assert buf.startswith(b"* OK"), buf
        finally:
            s.close()
        time.sleep(0.01)
    return times


def storm(imap, commands, storm_tag, select="INBOX"):
    """Send every command of commands (tag, bytes) in one write on a
    logged-in session with select selected, and probe other clients'
    greetings while the session works through them.  Returns the worst
    greeting time, the number of probes and the session."""
    c = connect(imap, timeout=STORM_DEADLINE)
    assert c.login(BOB, BOB_PW).ok
    c.select(select)
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
    assert not bad, f"{storm_tag}: not OK: {list(bad.items())[:5]}"
    assert times, "no greeting was probed during the storm"
    return max(times), len(times), c


def fill(imap, folder, count=FOLDER_FILL):
    """count messages in folder (None: INBOX), known to the index."""
    for i in range(count):
        put_message(imap, BOB, f"Subject: old {i}\n\nold\n", folder=folder, sub="cur",
                    info="S")
    c = connect(imap)
    assert c.login(BOB, BOB_PW).ok
    r = c.ok(f"STATUS {folder or 'INBOX'} (MESSAGES)")
    assert r.find(rf"MESSAGES {count}\)"), r
    c.logout()


def test_copy_storm_does_not_hold_up_other_greetings(imap):
    put_message(imap, BOB, "Subject: one\n\nfirst\n")
    put_message(imap, BOB, "Subject: two\n\nsecond\n")
    fill(imap, "Trash")
    commands = [(f"c{i:04d}", f"c{i:04d} COPY 1:2 Trash\r\n".encode())
                for i in range(STORM_COPIES)]
    worst, probes, c = storm(imap, commands, "COPY")
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
    """APPENDs with non-synchronizing literals (LITERAL+), all in one
    write, into a folder of APPEND_FILL messages while another is
    selected."""
    n = STORM_COPIES
    fill(imap, None, APPEND_FILL)
    small = b"Subject: s\r\n\r\nx\r\n"
    commands = []
    for i in range(n):
        tag = f"p{i:04d}"
        head = f"{tag} APPEND INBOX (\\Seen) {{{len(small)}+}}\r\n".encode()
        commands.append((tag, head + small + b"\r\n"))
    worst, probes, c = storm(imap, commands, "APPEND", select="Drafts")
    assert worst < GREETING_MAX, (
        f"a greeting took {worst:.3f} s (worst of {probes}) while one client's "
        f"{n} pipelined APPENDs ran")
    assert len(folder_files(imap, BOB)) == APPEND_FILL + n
    r = c.ok("STATUS INBOX (MESSAGES UIDNEXT)")
    [line] = r.find(r"^\* STATUS ")
    assert f"MESSAGES {APPEND_FILL + n}" in line, line
    assert f"UIDNEXT {APPEND_FILL + n + 1}" in line, line
