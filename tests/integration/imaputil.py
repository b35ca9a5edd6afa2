"""Helpers for the IMAP tests (test_imap*.py; RFC 3501 and the
extensions posthorn offers): the configuration of a `protocol imap`
server next to an anonymous SMTP server that delivers the test mail, a
raw IMAP client that reads responses exactly as they come off the wire
(literals included), a parser for IMAP data (lists, strings, literals,
NIL) to check ENVELOPE and BODYSTRUCTURE field by field, Maildir helpers
(flags in file names, folders) and the mbsync configuration.

Nothing here resolves names: every socket connects to a numeric
127.0.0.0/8 address; the certificate is made for the IP address 127.0.0.1
so that Python's ssl, curl and mbsync check it by name.  Every read is
bounded in time.
"""

import os
import re
import socket
import ssl
import time
import uuid

from conftest import DEFAULT_USERS, run_cli
from helpers import HOST, SMTPConn, free_port, send_message

CURL = "/usr/bin/curl"
MBSYNC = "/usr/bin/mbsync"

BOB, BOB_PW = "bob@example.test", DEFAULT_USERS["bob@example.test"]
CAROL, CAROL_PW = "carol@example.test", DEFAULT_USERS["carol@example.test"]
DAVE, DAVE_PW = "dave@example.test", DEFAULT_USERS["dave@example.test"]
ALICE, ALICE_PW = "alice@example.org", DEFAULT_USERS["alice@example.org"]

# Maildir info letters of the system flags (Maildir spec; notes/imap.md)
FLAG_LETTERS = {"\\Draft": "D", "\\Flagged": "F", "\\Answered": "R", "\\Seen": "S",
                "\\Deleted": "T"}
SPECIAL_USE = {"Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash", "Junk": "\\Junk"}


# -- certificate and daemon ---------------------------------------------------------------

def make_cert(posthorn_bin, folder):
    """A certificate for the IP address 127.0.0.1 from `posthorn cert new`."""
    res = run_cli(posthorn_bin, ["cert", "new", "--hostname", HOST, "--out", str(folder)])
    assert res.returncode == 0, f"cert new: {res.returncode} {res.stderr}"
    return {"crt": os.path.join(str(folder), f"{HOST}.crt"),
            "key": os.path.join(str(folder), f"{HOST}.key")}


def client_ctx(cert):
    """A client context that trusts only the test certificate, name checked."""
    c = ssl.create_default_context(cafile=cert["crt"])
    c.check_hostname = True
    return c


def imap_spec(cert, tls_port=None, tls=(), auth=(), connection=(), limits=None):
    """conftest server spec of an IMAP server: the plain listener (STARTTLS),
    an implicit-TLS listener on tls_port, a tls block (certificate plus the
    lines in tls) unless cert is None, and auth/connection blocks."""
    lines = ["protocol imap"]
    if tls_port:
        lines.append(f"listen {HOST}:{tls_port} tls")
    if cert is not None:
        lines += ["tls {", f"    certificate {cert['crt']}", f"    key {cert['key']}"]
        lines += ["    " + t for t in tls] + ["}"]
    if auth:
        lines += ["auth {"] + ["    " + a for a in auth] + ["}"]
    if connection:
        lines += ["connection {"] + ["    " + c for c in connection] + ["}"]
    return {"anonymous": None, "limits": limits, "extra": "\n".join(lines)}


def start_imap(posthorn, cert, asan_options=None, start=True, **kw):
    """A daemon with an anonymous SMTP server `mx` (it delivers the test
    mail) and the IMAP server `imap` (STARTTLS on p.port("imap"), implicit
    TLS on p.imaps_port)."""
    tls_port = free_port()
    servers = {"mx": {"anonymous": True}, "imap": imap_spec(cert, tls_port, **kw)}
    p = posthorn(servers=servers, asan_options=asan_options, start=start)
    p.imaps_port = tls_port
    return p


# -- mail into the Maildir -----------------------------------------------------------------

def crlf(text):
    if isinstance(text, str):
        text = text.encode()
    return text.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def deliver(p, rcpt, message, sender="sender@example.org"):
    """Deliver message (str/bytes, any line ends) to rcpt through the
    daemon's SMTP server `mx`; returns once it is in rcpt's Maildir."""
    before = len(p.messages(rcpt))
    body = crlf(message)
    body = re.sub(rb"(?m)^\.", b"..", body)        # dot-stuffing
    s = p.connect("mx")
    s.start()
    send_message(s, sender, [rcpt], body)
    s.cmd("QUIT")
    s.close()
    p.wait_messages(rcpt, before + 1, timeout=20, settle=0)


_seq = [0]


def put_message(p, addr, text, when=None, folder=None, sub="new", info=None):
    """Write a message straight into a Maildir (folder None = INBOX, else
    the Maildir++ folder ".folder") the way the delivery agent names it (LF line
    ends, ",S=<size>,W=<CRLF size>"); returns the file's path."""
    if isinstance(text, str):
        text = text.encode()
    text = text.replace(b"\r\n", b"\n")
    _seq[0] += 1
    when = when or int(time.time())
    lines = text.count(b"\n")
    name = (f"{when}.M{_seq[0]:06d}P{os.getpid()}Q{_seq[0]}R{uuid.uuid4().hex[:8]}.testhost"
            f",S={len(text)},W={len(text) + lines}")
    if sub == "cur":
        name += ":2," + (info or "")
    d = folder_path(p, addr, folder)
    for s in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(d, s), exist_ok=True)
    tmp = os.path.join(d, "tmp", name)
    with open(tmp, "wb") as f:
        f.write(text)
    os.utime(tmp, (when, when))
    dest = os.path.join(d, sub, name)
    os.rename(tmp, dest)
    return dest


def folder_path(p, addr, folder=None):
    """The directory of a folder: INBOX is the Maildir root, "A.B" is
    "<root>/.A.B" (Maildir++)."""
    root = p.maildir(addr)
    if folder is None or folder.upper() == "INBOX":
        return root
    return os.path.join(root, "." + folder)


def folder_files(p, addr, folder=None, subs=("new", "cur")):
    """Message file names (without directory) in a folder's new/ and cur/."""
    out = []
    d = folder_path(p, addr, folder)
    for s in subs:
        sd = os.path.join(d, s)
        if os.path.isdir(sd):
            out += sorted(n for n in os.listdir(sd) if not n.startswith("."))
    return out


def info_flags(name):
    """The flag letters of a Maildir file name ("" without ':2,')."""
    _, sep, info = name.rpartition(":2,")
    return info if sep else ""


def unique_part(name):
    """The unique part of a Maildir file name (before ',' and ':')."""
    return re.split(r"[,:]", name, 1)[0]


# -- a raw IMAP client ---------------------------------------------------------------------

class Result:
    """The responses to one command: the untagged ones (raw bytes, CRLF
    stripped, literals inline as "{n}\\r\\n<octets>") and the tagged line."""

    def __init__(self, tag, untagged, tagged):
        self.tag = tag
        self.untagged = untagged
        self.tagged = tagged            # str, without the tag: "OK ..." / "NO ..." / "BAD ..."

    @property
    def status(self):
        return self.tagged.split(" ", 1)[0]

    @property
    def ok(self):
        return self.status == "OK"

    def code(self):
        """The response code of the tagged line ("" when none): "COPYUID 1 2 3"."""
        m = re.match(r"^\w+ \[([^\]]*)\]", self.tagged)
        return m.group(1) if m else ""

    def lines(self):
        return [u.decode("utf-8", "replace") for u in self.untagged]

    def find(self, pattern):
        """Untagged responses (str) matching the regular expression."""
        return [t for t in self.lines() if re.search(pattern, t)]

    def __repr__(self):
        return f"Result({self.tag} {self.tagged!r}, untagged={self.untagged!r})"


class IMAPConn(SMTPConn):
    """A raw IMAP connection (SMTPConn's bounded socket handling), TLS on
    demand, tags a001, a002, ..."""

    def __init__(self, port, host=HOST, source=None, timeout=15.0):
        super().__init__(port, host=host, source=source, timeout=timeout)
        self.ntag = 0

    def next_tag(self):
        self.ntag += 1
        return f"a{self.ntag:03d}"

    def readline(self, timeout=None):
        """One line; IMAP response lines can be long (a BODYSTRUCTURE of a
        thousand parts), so the bound is 16 MB rather than SMTPConn's."""
        deadline = time.monotonic() + (timeout or self.timeout)
        start = 0
        while True:
            i = self.buf.find(b"\n", start)
            if i >= 0:
                line, self.buf = self.buf[:i + 1], self.buf[i + 1:]
                return line
            start = len(self.buf)
            assert len(self.buf) < 16 * 1024 * 1024, "server sent an over-long response line"
            self._fill(deadline)

    def readexactly(self, n, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while len(self.buf) < n:
            self._fill(deadline)
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def response(self, timeout=None):
        """One whole response (a line with its literals), CRLF stripped."""
        out = b""
        while True:
            line = self.readline(timeout)
            assert line.endswith(b"\r\n"), f"response line not ended by CRLF: {line!r}"
            m = re.search(rb"\{(\d+)\}\r\n$", line)
            if not m:
                return out + line[:-2]
            n = int(m.group(1))
            assert n < 50 * 1024 * 1024, f"absurd literal size in {line!r}"
            out += line + self.readexactly(n, timeout)

    def line(self, timeout=None):
        return self.response(timeout).decode("utf-8", "replace")

    def greeting(self):
        g = self.line()
        assert g.startswith("* OK") or g.startswith("* PREAUTH"), f"greeting: {g!r}"
        return g

    def send_cmd(self, text, tag=None):
        """Send "TAG text" (CRLF added); returns the tag."""
        tag = tag or self.next_tag()
        data = text.encode() if isinstance(text, str) else text
        self.send(tag.encode() + b" " + data + b"\r\n")
        return tag

    def collect(self, tag, timeout=None):
        """Read responses up to the one tagged tag."""
        untagged = []
        for _ in range(1000000):
            r = self.response(timeout)
            if r.startswith(tag.encode() + b" "):
                return Result(tag, untagged, r[len(tag) + 1:].decode("utf-8", "replace"))
            untagged.append(r)
        raise AssertionError("no tagged response")

    def cmd(self, text, timeout=None):
        return self.collect(self.send_cmd(text), timeout)

    def ok(self, text, timeout=None):
        r = self.cmd(text, timeout)
        assert r.ok, f"{text!r}: {r!r}"
        return r

    def capabilities(self):
        r = self.ok("CAPABILITY")
        [line] = r.find(r"^\* CAPABILITY ")
        return {w.upper() for w in line.split()[2:]}        # names are case-insensitive

    def wrap(self, context, server_hostname=HOST):
        assert self.buf == b"", f"unread plaintext before the handshake: {self.buf!r}"
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)
        return self

    def starttls(self, context):
        r = self.cmd("STARTTLS")
        assert r.ok, f"STARTTLS: {r!r}"
        return self.wrap(context)

    def login(self, user, password):
        return self.cmd(f"LOGIN {quote(user)} {quote(password)}")

    def select(self, mailbox="INBOX"):
        r = self.ok(f"SELECT {quote(mailbox)}")
        return r

    def quiet(self, seconds):
        """Whatever arrives within seconds (b"" when the server stays silent)."""
        got = self.buf
        self.buf = b""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except (socket.timeout, ssl.SSLWantReadError):
                continue
            if not chunk:
                break
            got += chunk
        return got

    def logout(self):
        r = self.cmd("LOGOUT")
        assert r.ok and r.find(r"^\* BYE"), r
        self.wait_closed()
        return r


def quote(s):
    """An IMAP quoted string."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def connect(p, tls=None, ctx=None, source=None, timeout=15.0, greet=True, port=None):
    """tls: None (plain), "starttls" or "imaps"."""
    if port is None:
        port = p.imaps_port if tls == "imaps" else p.port("imap")
    c = IMAPConn(port, source=source, timeout=timeout)
    p.conns.append(c)
    if tls == "imaps":
        c.wrap(ctx)
    if greet:
        c.greeting()
    if tls == "starttls":
        c.starttls(ctx)
    return c


def login_select(p, ctx, user=BOB, password=BOB_PW, tls="imaps", mailbox="INBOX", **kw):
    c = connect(p, tls=tls, ctx=ctx, **kw)
    r = c.login(user, password)
    assert r.ok, r
    c.select(mailbox)
    return c


# -- IMAP data: lists, strings, literals, NIL ------------------------------------------------

class Atom(str):
    """An atom (or number) as written; strings are bytes, NIL is None."""


def parse_data(data):
    """bytes of IMAP data items -> Python values: atoms (Atom, "BODY[...]<n>"
    kept in one piece), strings (bytes; quoted or literal), NIL (None),
    parenthesised lists (list)."""
    items, pos = _parse_items(data, 0, top=True)
    assert pos == len(data), f"unparsed rest: {data[pos:pos + 80]!r}"
    return items


def _parse_items(data, pos, top):
    out = []
    n = len(data)
    while pos < n:
        c = data[pos:pos + 1]
        if c == b" ":
            pos += 1
        elif c == b"(":
            sub, pos = _parse_items(data, pos + 1, top=False)
            out.append(sub)
        elif c == b")":
            assert not top, f"unbalanced ')' at {pos}: {data[:pos + 1][-80:]!r}"
            return out, pos + 1
        elif c == b'"':
            pos += 1
            s = bytearray()
            while True:
                assert pos < n, "unterminated quoted string"
                ch = data[pos:pos + 1]
                if ch == b"\\":
                    s += data[pos + 1:pos + 2]
                    pos += 2
                elif ch == b'"':
                    pos += 1
                    break
                else:
                    assert ch not in (b"\r", b"\n"), "CR/LF in a quoted string"
                    s += ch
                    pos += 1
            out.append(bytes(s))
        elif c == b"{":
            m = re.compile(rb"\{(\d+)\}\r\n").match(data, pos)
            assert m, f"bad literal at {data[pos:pos + 20]!r}"
            size = int(m.group(1))
            start = m.end()
            assert start + size <= n, "literal shorter than announced"
            out.append(bytes(data[start:start + size]))
            pos = start + size
        else:
            start = pos
            while pos < n and data[pos:pos + 1] not in (b" ", b"(", b")"):
                if data[pos:pos + 1] == b"[":
                    end = data.find(b"]", pos)
                    assert end > 0, "unterminated '['"
                    pos = end + 1
                else:
                    pos += 1
            word = data[start:pos].decode("ascii")
            out.append(None if word.upper() == "NIL" else Atom(word))
    assert top, "unbalanced '('"
    return out, pos


def fetch_responses(result):
    """{seq: {ITEM: value}} of the untagged FETCH responses in a Result."""
    out = {}
    for raw in result.untagged:
        m = re.match(rb"^\* (\d+) FETCH ", raw)
        if not m:
            continue
        [items] = parse_data(raw[m.end():])
        d = out.setdefault(int(m.group(1)), {})
        for k, v in zip(items[0::2], items[1::2]):
            d[k.upper()] = v
    return out


def imaplib_data(data):
    """imaplib's FETCH data (bytes and (header, literal) tuples) back into
    the wire form (literals inline), one bytes per response."""
    out, cur = [], b""
    for part in data:
        if isinstance(part, tuple):
            cur += part[0] + b"\r\n" + part[1]
        elif part == b")" and cur:
            out.append(cur + part)
            cur = b""
        elif cur:
            cur += part
            out.append(cur)
            cur = b""
        elif part is not None:
            out.append(part)
    if cur:
        out.append(cur)
    return out


def imaplib_fetch(data):
    """{seq: {ITEM: value}} of imaplib's FETCH data."""
    out = {}
    for raw in imaplib_data(data):
        m = re.match(rb"^(\d+) ", raw)
        assert m, raw
        [items] = parse_data(raw[m.end():])
        d = out.setdefault(int(m.group(1)), {})
        for k, v in zip(items[0::2], items[1::2]):
            d[k.upper()] = v
    return out


def text(v):
    """A string value as str (bytes decoded), None and atoms unchanged."""
    return v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v


def code_of(line):
    """"COPYUID 5 1:2 7:8" out of "OK [COPYUID 5 1:2 7:8] done" (bytes or str)."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", "replace")
    m = re.search(r"\[([^\]]*)\]", line)
    return m.group(1) if m else ""


def uid_set(text_):
    """Expand an IMAP uid-set "1:3,7" into a list of numbers (small sets only)."""
    out = []
    for part in text_.split(","):
        a, _, b = part.partition(":")
        lo, hi = int(a), int(b or a)
        if lo > hi:
            lo, hi = hi, lo
        assert hi - lo < 100000
        out += list(range(lo, hi + 1))
    return out


# -- mbsync ------------------------------------------------------------------------------------

def mbsync_config(path, cert, port, user, password, local, ssltype="IMAPS", authmechs="*"):
    """An mbsync (isync 1.4) configuration: the server's account over TLS
    (implicit, or STARTTLS with ssltype="STARTTLS"), checked against the
    test certificate, logging in with authmechs (mbsync's AuthMechs: "*"
    for the best SASL mechanism, "LOGIN" for the IMAP LOGIN command), every folder synchronised both ways with a local
    Maildir++-like tree under `local`."""
    os.makedirs(local, exist_ok=True)
    text_ = f"""\
IMAPAccount test
Host {HOST}
Port {port}
User {user}
Pass "{password}"
SSLType {ssltype}
CertificateFile {cert['crt']}
AuthMechs {authmechs}
Timeout 30

IMAPStore remote
Account test

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel test
Far :remote:
Near :local:
Patterns *
Create Both
Expunge Both
Sync All
SyncState *
"""
    with open(path, "w") as f:
        f.write(text_)
    os.chmod(path, 0o600)
    return path

