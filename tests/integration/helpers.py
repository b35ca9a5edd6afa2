"""Small helpers shared by the integration tests: free ports, a raw SMTP
client that reads replies exactly as they come off the wire (smtplib hides
pipelining and multi-line details), Maildir reading and bounded waiting.

Nothing here resolves names: every address is a numeric 127.0.0.0/8 one.
"""

import fcntl
import os
import re
import socket
import subprocess
import tempfile
import time

HOST = "127.0.0.1"
CLIENT_HELO = "client.example.test"

# Markers the sanitizers print; any of them in a process's stderr fails the test.
SANITIZER_MARKERS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
    "WARNING: AddressSanitizer",
    "ThreadSanitizer",
    "event=seccomp-denied",   # a system call the confinement did not expect
)


def sanitizer_report(text):
    """The first sanitizer marker found in text (with some context), or None."""
    for marker in SANITIZER_MARKERS:
        i = text.find(marker)
        if i >= 0:
            return text[max(0, i - 200):i + 3000]
    return None


# -- ports ---------------------------------------------------------------------
#
# The tests run in several processes at once (pytest-xdist workers, or
# somebody's second `make check` on the same machine), and a port is only
# "free" until somebody binds it: two processes that each bind port 0 and
# read it back may be handed the same just-closed port, and any outgoing
# connection may take an ephemeral port between free_port() and the
# daemon's bind().  So every test process claims a block of BLOCK ports of
# its own, below the kernel's ephemeral range, by holding an flock on
# PORT_LOCK_DIR/block-N for as long as it lives (the kernel drops the lock
# when the process ends, however it ends), and hands out only ports of that
# block, round robin, each checked free at the moment.

PORT_BASE = 10000
BLOCK = 400
PORT_LOCK_DIR = os.path.join(tempfile.gettempdir(), "posthorn-it-ports")

_block = None          # (first port, open lock file) of this process's block
_block_pid = None      # the process that claimed it (a fork claims its own)
_next = 0              # round-robin cursor inside the block


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _claim_block():
    """Lock the first free block; returns its first port."""
    global _block, _block_pid
    if _block is not None and _block_pid == os.getpid():
        return _block[0]
    top = _ephemeral_low()
    if top - PORT_BASE < BLOCK:
        top = 65536          # an unusual ip_local_port_range: use what is left
    os.makedirs(PORT_LOCK_DIR, exist_ok=True)
    try:
        os.chmod(PORT_LOCK_DIR, 0o1777)      # whoever runs the tests next
    except OSError:
        pass
    for n in range((top - PORT_BASE) // BLOCK):
        path = os.path.join(PORT_LOCK_DIR, f"block-{n}")
        try:
            f = open(path, "a+")
        except OSError:          # another user's, not writable for this one
            continue
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        try:
            os.chmod(path, 0o666)
        except OSError:
            pass
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()} {os.environ.get('PYTEST_XDIST_WORKER', '-')}\n")
        f.flush()
        _block, _block_pid = (PORT_BASE + n * BLOCK, f), os.getpid()
        return _block[0]
    raise AssertionError(f"every block of {BLOCK} test ports from {PORT_BASE} to {top} is held "
                         f"by another test process (locks in {PORT_LOCK_DIR})")


def _bindable(host, port, kind):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host=HOST, udp=False):
    """A TCP port (and UDP too when udp is true) that nothing had bound a
    moment ago, from this process's own block: no other test process hands
    it out, and this one hands it out again only after the rest of its
    block (so two listeners of one daemon never get the same one)."""
    global _next
    first = _claim_block()
    for _ in range(BLOCK):
        port = first + _next
        _next = (_next + 1) % BLOCK
        # free on the wildcard address too, i.e. on every 127.0.0.x: a port
        # still in TIME_WAIT, or held by a module-scoped daemon, is skipped
        if not (_bindable(host, port, socket.SOCK_STREAM)
                and _bindable("0.0.0.0", port, socket.SOCK_STREAM)):
            continue
        if udp and not _bindable(host, port, socket.SOCK_DGRAM):
            continue
        return port
    raise AssertionError(f"no free TCP port in this process's block {first}-{first + BLOCK - 1}")


def wait_until(predicate, timeout=10.0, interval=0.05, what="condition"):
    """Poll predicate() until it returns something truthy; bounded in time."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Reply:
    """One SMTP reply: its code and the text of each line (without code)."""

    def __init__(self, code, lines, raw):
        self.code = code
        self.lines = lines
        self.raw = raw

    @property
    def text(self):
        return "\n".join(self.lines)

    @property
    def first(self):
        """'CODE text' of the first line, as a user would read it."""
        return f"{self.code} {self.lines[0]}" if self.lines else str(self.code)

    def __repr__(self):
        return f"Reply({self.raw!r})"


class ConnectionClosed(Exception):
    pass


class SMTPConn:
    """A raw SMTP connection with exact reply parsing.

    Every read is bounded by `timeout` seconds, so a silent server fails the
    test instead of hanging it."""

    def __init__(self, port, host=HOST, source=None, timeout=10.0):
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if source:
            self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self.buf = b""
        self.closed = False

    # -- bytes --------------------------------------------------------
    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("no reply in time")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.closed = True
            raise ConnectionClosed(f"connection closed; unread: {self.buf!r}")
        self.buf += chunk

    def readline(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\n" not in self.buf:
            if len(self.buf) > 100000:
                raise AssertionError("server sent an over-long reply line")
            self._fill(deadline)
        line, self.buf = self.buf.split(b"\n", 1)
        return line + b"\n"

    # -- replies ------------------------------------------------------
    def reply(self, timeout=None):
        """Read one (possibly multi-line) reply."""
        lines, raw, code = [], b"", None
        for _ in range(1000):
            line = self.readline(timeout)
            raw += line
            assert line.endswith(b"\r\n"), f"reply line not ended by CRLF: {line!r}"
            text = line[:-2].decode("utf-8", "replace")
            m = re.match(r"^(\d{3})([ -])(.*)$", text)
            assert m, f"malformed reply line: {line!r}"
            if code is None:
                code = int(m.group(1))
            assert int(m.group(1)) == code, f"reply code changed inside a reply: {raw!r}"
            lines.append(m.group(3))
            if m.group(2) == " ":
                return Reply(code, lines, raw)
        raise AssertionError("reply with more than 1000 lines")

    def cmd(self, line, timeout=None):
        """Send one command line (CRLF added) and return its reply."""
        self.send(line + "\r\n" if isinstance(line, str) else line + b"\r\n")
        return self.reply(timeout)

    def expect(self, line, code, prefix=None):
        r = self.cmd(line)
        assert r.code == code, f"{line!r}: expected {code}, got {r.raw!r}"
        if prefix is not None:
            assert r.first.startswith(prefix), f"{line!r}: expected {prefix!r}, got {r.raw!r}"
        return r

    def greeting(self):
        r = self.reply()
        assert r.code == 220, f"greeting: {r.raw!r}"
        return r

    def ehlo(self, name=CLIENT_HELO):
        r = self.cmd(f"EHLO {name}")
        assert r.code == 250, f"EHLO: {r.raw!r}"
        return r

    def start(self, ehlo=True):
        """Read the greeting and say EHLO."""
        self.greeting()
        return self.ehlo() if ehlo else None

    def wait_closed(self, timeout=None):
        """Read until the server closes; returns whatever it sent meanwhile."""
        deadline = time.monotonic() + (timeout or self.timeout)
        got = b""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"server did not close the connection; sent {got!r}")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            except socket.timeout:
                continue
            if not chunk:
                self.closed = True
                return self.buf + got
            got += chunk

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def ehlo_keywords(reply):
    """EHLO reply -> {KEYWORD: [params]} (first line is the greeting name)."""
    out = {}
    for line in reply.lines[1:]:
        parts = line.split()
        if parts:
            out[parts[0].upper()] = parts[1:]
    return out


def queue_id(reply):
    """The ID out of '250 2.0.0 Ok: queued as ID'."""
    m = re.search(r"queued as (\S+)", reply.text)
    assert reply.code == 250 and m, f"not a queued reply: {reply.raw!r}"
    return m.group(1)


def send_message(conn, sender, rcpts, body, expect=250):
    """MAIL/RCPT/DATA on an open, greeted connection; returns the final reply.

    body is bytes or str, already with CRLF line ends and dot-stuffed; the
    terminating CRLF.CRLF is added here."""
    conn.expect(f"MAIL FROM:<{sender}>", 250, "250 2.1.0")
    for r in rcpts:
        conn.expect(f"RCPT TO:<{r}>", 250, "250 2.1.5")
    conn.expect("DATA", 354)
    if isinstance(body, str):
        body = body.encode()
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    conn.send(body + b".\r\n")
    r = conn.reply()
    if expect is not None:
        assert r.code == expect, f"end of data: expected {expect}, got {r.raw!r}"
    return r


def split_message(data):
    """Maildir file bytes -> (list of (name, value) header fields, body)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"no header/body separator in {data[:300]!r}"
    fields = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + b"\r\n" + line)
        else:
            name, _, value = line.partition(b":")
            fields.append((name.decode(), value.strip()))
    return fields, body


def run(argv, input=None, env=None, timeout=60):
    """Run a short-lived command; return CompletedProcess with text output."""
    return subprocess.run(argv, input=input, env=env, capture_output=True,
                          text=True, timeout=timeout)


def proc_status(pid):
    """/proc/PID/status as a dict of field -> string."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def vm_rss_kb(pid):
    return int(proc_status(pid)["VmRSS"].split()[0])


def maildir_files(path, sub=("new", "cur")):
    """Sorted list of message file paths in a Maildir (new/ and cur/)."""
    files = []
    for s in sub:
        d = os.path.join(path, s)
        if os.path.isdir(d):
            files += [os.path.join(d, n) for n in os.listdir(d) if not n.startswith(".")]
    return sorted(files)


def stop_process(proc, grace=10.0):
    """Stop a process this test started, by its PID: SIGTERM, then SIGKILL
    after grace seconds; waits for it either way (bounded)."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
