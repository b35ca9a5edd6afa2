"""Small helpers shared by the integration tests: free ports, a raw SMTP
client that reads replies exactly as they come off the wire (smtplib hides
pipelining and multi-line details), Maildir reading and bounded waiting.

Nothing here resolves names: every address is a numeric 127.0.0.0/8 one.
"""

import os
import re
import socket
import subprocess
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


_ports_given = set()


def free_port(host=HOST):
    """A TCP port that was free a moment ago (bind to port 0, read it
    back), and never one this process handed out before: the kernel may
    offer a just-closed port again, and two listeners of one daemon must
    not get the same one."""
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _ports_given:
            _ports_given.add(port)
            return port
    raise AssertionError("no fresh TCP port in 1000 tries")


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
