"""Helpers for the authentication tests (test_auth.py): SASL messages built
by hand (PLAIN, LOGIN, a complete SCRAM-SHA-256 client per RFC 5802/7677),
TLS on top of helpers.SMTPConn, and the configuration of a submission
server with a certificate.

Nothing here resolves names: every address is a numeric 127.0.0.x one.
"""

import base64
import hashlib
import hmac
import os
import re
import select
import socket
import ssl
import time

from helpers import HOST


# -- base64 and the simple mechanisms ---------------------------------------

def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


def unb64(text):
    return base64.b64decode(text.encode() if isinstance(text, str) else text, validate=True)


def plain_response(user, password, authzid=""):
    """RFC 4616 message: authzid NUL authcid NUL passwd, base64."""
    return b64(f"{authzid}\0{user}\0{password}")


# -- SCRAM-SHA-256 (RFC 5802, RFC 7677) --------------------------------------

def _hmac(key, msg):
    return hmac.new(key, msg.encode() if isinstance(msg, str) else msg, hashlib.sha256).digest()


def saslname(name):
    """RFC 5802 §5.1: ',' and '=' in a name are escaped."""
    return name.replace("=", "=3D").replace(",", "=2C")


class ScramClient:
    """One SCRAM-SHA-256 exchange, computed the RFC way with hashlib/hmac.

    first() -> base64 client-first; final(server_first_b64) -> base64
    client-final (with a correct proof unless tamper says otherwise);
    check_server_final(b64) verifies the server's signature."""

    def __init__(self, user, password, authzid=None, cbflag="n", nonce=None):
        self.user = user
        self.password = password
        self.gs2_header = cbflag + "," + (f"a={saslname(authzid)}" if authzid else "") + ","
        self.cnonce = nonce or base64.b64encode(os.urandom(18)).decode()
        self.client_first_bare = f"n={saslname(user)},r={self.cnonce}"
        self.server_first = None
        self.salt = None
        self.iterations = None
        self.nonce = None
        self.server_signature = None
        self.auth_message = None

    def first(self):
        return b64(self.gs2_header + self.client_first_bare)

    def parse_server_first(self, server_first_b64):
        text = unb64(server_first_b64).decode()
        self.server_first = text
        m = re.fullmatch(r"r=([^,]+),s=([^,]+),i=(\d+)(,.*)?", text)
        assert m, f"malformed server-first-message: {text!r}"
        self.nonce, salt64, iters = m.group(1), m.group(2), m.group(3)
        assert self.nonce.startswith(self.cnonce) and len(self.nonce) > len(self.cnonce), \
            f"server nonce {self.nonce!r} does not extend the client nonce {self.cnonce!r}"
        self.salt = unb64(salt64)
        self.iterations = int(iters)
        return text

    def final(self, server_first_b64, tamper=None, cbind_header=None, nonce=None):
        """The client-final-message.  tamper: None, or an index of a proof
        byte to flip.  cbind_header: send c= for this header instead of
        the one used in client-first.  nonce: use this r= instead."""
        self.parse_server_first(server_first_b64)
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), self.salt, self.iterations)
        client_key = _hmac(salted, "Client Key")
        stored_key = hashlib.sha256(client_key).digest()
        server_key = _hmac(salted, "Server Key")
        header = self.gs2_header if cbind_header is None else cbind_header
        without_proof = f"c={b64(header)},r={nonce or self.nonce}"
        self.auth_message = f"{self.client_first_bare},{self.server_first},{without_proof}"
        client_sig = _hmac(stored_key, self.auth_message)
        proof = bytearray(a ^ b for a, b in zip(client_key, client_sig))
        if tamper is not None:
            proof[tamper] ^= 0x01
        self.server_signature = _hmac(server_key, self.auth_message)
        return b64(f"{without_proof},p={b64(bytes(proof))}")

    def check_server_final(self, server_final_b64):
        text = unb64(server_final_b64).decode()
        assert text.startswith("v="), f"server-final-message is not a verifier: {text!r}"
        got = unb64(text[2:])
        assert hmac.compare_digest(got, self.server_signature), \
            "the server's signature does not match the one computed from the password"
        return True


def scram_login(conn, user, password, initial=True, **final_kw):
    """A whole SCRAM-SHA-256 exchange on an SMTPConn; returns the last reply
    (235 on success).  The server signature is verified when it comes."""
    sc = ScramClient(user, password)
    if initial:
        r = conn.cmd("AUTH SCRAM-SHA-256 " + sc.first())
    else:
        r = conn.cmd("AUTH SCRAM-SHA-256")
        assert r.code == 334 and r.lines == [""], f"AUTH SCRAM-SHA-256: {r.raw!r}"
        r = conn.cmd(sc.first())
    assert r.code == 334, f"client-first: {r.raw!r}"
    r = conn.cmd(sc.final(r.lines[0], **final_kw))
    if r.code != 334:
        return r
    sc.check_server_final(r.lines[0])
    return conn.cmd("")


# -- TLS on a raw connection -------------------------------------------------

def client_context(cafile):
    """A client context that trusts only the test certificate and checks
    the name (the certificate is made for the IP address 127.0.0.1)."""
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = True
    return ctx


def wrap(conn, ctx):
    """Turn an SMTPConn's socket into a TLS socket (handshake included)."""
    assert conn.buf == b"", f"data left over before the TLS handshake: {conn.buf!r}"
    conn.sock = ctx.wrap_socket(conn.sock, server_hostname=HOST)
    return conn


def starttls(conn, ctx):
    r = conn.cmd("STARTTLS")
    assert r.first.startswith("220 2.0.0"), f"STARTTLS: {r.raw!r}"
    return wrap(conn, ctx)


def read_until_closed(conn, timeout=10.0):
    """What the server sends until it closes the (plain or TLS) connection.
    Raises AssertionError if it stays open beyond timeout."""
    deadline = time.monotonic() + timeout
    got = conn.buf
    conn.buf = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"server did not close the connection; sent {got!r}")
        conn.sock.settimeout(remaining)
        try:
            chunk = conn.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError, BrokenPipeError):
            chunk = b""
        except (socket.timeout, ssl.SSLWantReadError):
            continue
        if not chunk:
            conn.closed = True
            return got
        got += chunk


def is_closed(conn, timeout=10.0):
    try:
        read_until_closed(conn, timeout)
        return True
    except AssertionError:
        return False


# -- a user whose password check takes seconds (the PBKDF2 workers) -----------

SLOW = "zed@example.test"          # sorts after every default user
SLOW_PW = "zed-Slow-Secret-9"
SLOW_ITERATIONS = 3_000_000        # about 1.5 s of PBKDF2 here (4096: 2 ms)


def users_line(addr, password, iterations):
    """A users-file record (SCRAM-SHA-256 keys, RFC 5802 §3) with this many
    PBKDF2 iterations: a login whose check takes seconds, not milliseconds."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    server = hmac.new(salted, b"Server Key", "sha256").digest()
    b = lambda v: base64.b64encode(v).decode()
    return f"{addr}:SCRAM-SHA-256:{iterations}:{b(salt)}:{b(stored)}:{b(server)}\n"


def reply_waiting(c):
    """Has the server answered on c yet?  (Never blocks.)"""
    pending = getattr(c.sock, "pending", None)     # TLS: bytes already decrypted
    return bool(c.buf) or bool(pending and pending()) or \
        bool(select.select([c.sock], [], [], 0)[0])


__all__ = ["b64", "unb64", "plain_response", "saslname", "ScramClient", "scram_login",
           "client_context", "wrap", "starttls", "read_until_closed", "is_closed",
           "SLOW", "SLOW_PW", "SLOW_ITERATIONS", "users_line", "reply_waiting"]
