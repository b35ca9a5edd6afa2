"""TLS helpers for test_tls.py: certificates made with `posthorn cert new`
and the openssl CLI, `tls` blocks for server_block(extra=...), SMTP
connections that switch to TLS (STARTTLS or implicit), smtplib clients
pinned to 127.0.0.1 under a certificate's name, `openssl s_client` runs,
and a recording TCP proxy (the "Network Monitor").

Nothing here resolves names: every socket connects to a numeric
127.0.0.0/8 address, and a host name is only ever given to TLS (SNI and
certificate checks) or to curl with --resolve.  Every wait is bounded.
"""

import base64
import binascii
import os
import re
import select
import smtplib
import socket
import ssl
import subprocess
import threading
import time

from helpers import CLIENT_HELO, HOST, SMTPConn, run

OPENSSL = "/usr/bin/openssl"


# -- certificates ----------------------------------------------------------------

class CertPair:
    """The three files `posthorn cert new --hostname H --out DIR` writes."""

    def __init__(self, hostname, folder):
        self.hostname = hostname
        self.folder = str(folder)
        self.key = os.path.join(self.folder, hostname + ".key")
        self.crt = os.path.join(self.folder, hostname + ".crt")
        self.csr = os.path.join(self.folder, hostname + ".csr")

    def der(self):
        return pem_file_der(self.crt)

    def __repr__(self):
        return f"CertPair({self.hostname!r}, {self.folder!r})"


def pem_file_der(path):
    with open(path) as f:
        return pem_to_der(f.read())


def pem_to_der(text):
    """DER of the first PEM certificate in text."""
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.S)
    assert m, f"no PEM certificate in {text[:500]!r}"
    return ssl.PEM_cert_to_DER_cert(m.group(0))


def openssl(*args, input=None, timeout=30):
    return run([OPENSSL] + [str(a) for a in args], input=input, timeout=timeout)


def x509_text(crt):
    res = openssl("x509", "-in", crt, "-noout", "-text")
    assert res.returncode == 0, res.stderr
    return res.stdout


def x509_serial(crt):
    res = openssl("x509", "-in", crt, "-noout", "-serial")
    assert res.returncode == 0, res.stderr
    return res.stdout.strip().split("=", 1)[1]


_CA_CONF = """\
[ca]
default_ca = ca_here
[ca_here]
dir = .
database = ./index.txt
new_certs_dir = .
serial = ./serial
default_md = sha256
policy = policy_any
copy_extensions = copy
unique_subject = no
[policy_any]
commonName = supplied
"""


def make_cert_with_dates(folder, hostname, start, end):
    """A self-signed ECDSA certificate for hostname valid from start to end
    ("YYYYMMDDHHMMSSZ"), made with `openssl ca -selfsign` (the one openssl
    3.0 command that takes explicit dates).  Returns a CertPair."""
    os.makedirs(folder, exist_ok=True)
    pair = CertPair(hostname, folder)
    with open(os.path.join(folder, "ca.cnf"), "w") as f:
        f.write(_CA_CONF)
    open(os.path.join(folder, "index.txt"), "w").close()
    with open(os.path.join(folder, "serial"), "w") as f:
        f.write("1000\n")
    steps = [
        ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", pair.key],
        ["req", "-new", "-key", pair.key, "-subj", f"/CN={hostname}",
         "-addext", f"subjectAltName=DNS:{hostname}", "-out", pair.csr],
        ["ca", "-config", "ca.cnf", "-batch", "-selfsign", "-keyfile", pair.key, "-in", pair.csr,
         "-out", pair.crt, "-startdate", start, "-enddate", end, "-notext"],
    ]
    for argv in steps:
        res = subprocess.run([OPENSSL] + argv, cwd=folder, capture_output=True, text=True,
                             timeout=30)
        assert res.returncode == 0, f"openssl {argv[0]}: {res.stderr}"
    os.chmod(pair.key, 0o600)
    return pair


def tls_extra(pairs, implicit_port=None, listen_host=HOST, **opts):
    """Directives for server_block(extra=...): an implicit-TLS listener (when
    implicit_port is given) and a tls block with every (certificate, key)
    pair plus options (min_bits=256 -> "min-bits 256")."""
    lines = []
    if implicit_port:
        lines.append(f"listen {listen_host}:{implicit_port} tls")
    lines.append("tls {")
    for p in pairs:
        crt, key = (p.crt, p.key) if isinstance(p, CertPair) else p
        lines += [f"    certificate {crt}", f"    key {key}"]
    for k, v in opts.items():
        lines.append(f"    {k.replace('_', '-')} {v}")
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- TLS client contexts and connections -------------------------------------------

def client_context(cafile=None, minimum=None, maximum=None, ciphers=None, alpn=None):
    """A client context: verifying against cafile (name checked) when given,
    else accepting any certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile:
        ctx.load_verify_locations(cafile)
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if minimum:
        ctx.minimum_version = minimum
    if maximum:
        ctx.maximum_version = maximum
    if ciphers:
        ctx.set_ciphers(ciphers)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


class TLSConn(SMTPConn):
    """SMTPConn that can switch to TLS; reads stay bounded (the socket
    timeout covers the handshake too)."""

    tls = False

    def wrap(self, context=None, server_hostname=None, suppress_ragged_eofs=True):
        assert self.buf == b"", f"unread plaintext before the handshake: {self.buf!r}"
        self.sock.settimeout(self.timeout)
        self.sock = (context or client_context()).wrap_socket(
            self.sock, server_hostname=server_hostname,
            suppress_ragged_eofs=suppress_ragged_eofs)
        self.tls = True
        return self

    def starttls(self, context=None, server_hostname=None, **kw):
        r = self.cmd("STARTTLS")
        assert r.first.startswith("220 2.0.0"), f"STARTTLS: {r.raw!r}"
        return self.wrap(context, server_hostname, **kw)

    def peer_der(self):
        return self.sock.getpeercert(binary_form=True)

    def cipher(self):
        return self.sock.cipher()

    def version(self):
        return self.sock.version()


def tls_connect(port, context=None, server_hostname=None, timeout=10.0, **kw):
    """A TLSConn to an implicit-TLS port, handshake done, greeting unread."""
    c = TLSConn(port, timeout=timeout)
    try:
        return c.wrap(context, server_hostname, **kw)
    except BaseException:
        c.close()
        raise


class _Pinned:
    """smtplib that connects to 127.0.0.1 whatever the host name, which is
    kept for TLS (SNI and the certificate check): `curl --resolve` for
    smtplib."""

    def _get_socket(self, host, port, timeout):
        sock = socket.create_connection((HOST, port), timeout)
        if isinstance(self, smtplib.SMTP_SSL):
            sock = self.context.wrap_socket(sock, server_hostname=host)
        return sock


class PinnedSMTP(_Pinned, smtplib.SMTP):
    pass


class PinnedSMTP_SSL(_Pinned, smtplib.SMTP_SSL):
    pass


# -- openssl s_client ------------------------------------------------------------------

class SClient:
    """Result of one `openssl s_client` run."""

    def __init__(self, argv, res):
        self.argv = argv
        self.rc = res.returncode
        self.out = res.stdout
        self.err = res.stderr
        self.all = res.stdout + res.stderr

    @property
    def cipher(self):
        """The negotiated cipher, or None when no handshake completed."""
        m = re.search(r"^New, (\S+), Cipher is (\S+)", self.out, re.M)
        return None if not m or m.group(2) == "(NONE)" else m.group(2)

    @property
    def protocol(self):
        m = re.search(r"^New, (\S+), Cipher is (\S+)", self.out, re.M)
        return m.group(1) if m and m.group(2) != "(NONE)" else None

    @property
    def handshake_ok(self):
        return self.cipher is not None

    @property
    def subject(self):
        m = re.search(r"^subject=(.*)$", self.out, re.M)
        return m.group(1).strip() if m else None

    def peer_der(self):
        return pem_to_der(self.out)

    @property
    def replies(self):
        """SMTP reply lines the server sent inside TLS."""
        return [line.rstrip("\r") for line in self.out.splitlines()
                if re.match(r"^\d{3}[ -]", line)]

    def __repr__(self):
        return f"SClient(rc={self.rc}, argv={self.argv})\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


def s_client(port, *args, starttls=False, servername=None,
             input="EHLO client.example.test\nQUIT\n", timeout=20):
    """openssl s_client to 127.0.0.1:port; servername None sends no SNI.
    stdin is `input` (LF turned into CRLF); -ign_eof keeps it reading until
    the server closes."""
    argv = [OPENSSL, "s_client", "-connect", f"{HOST}:{port}", "-crlf", "-ign_eof"]
    argv += ["-servername", servername] if servername else ["-noservername"]
    if starttls:
        argv += ["-starttls", "smtp", "-name", CLIENT_HELO]
    argv += [str(a) for a in args]
    res = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
    return SClient(argv, res)


# -- the log ----------------------------------------------------------------------------

def tls_events(p, name, since=0):
    """Lines of event=NAME as dicts, with the quoted tls= and reason= values
    whole (the fixture's parser stops at the first space)."""
    out = []
    for ev in p.events(name, since):
        for key in ("tls", "reason"):
            m = re.search(key + r'="([^"]*)"', ev["_line"])
            if m:
                ev[key] = m.group(1)
        out.append(ev)
    return out


def wait_tls_event(p, name, since=0, timeout=10.0, **match):
    deadline = time.monotonic() + timeout
    while True:
        for ev in tls_events(p, name, since):
            if all(ev.get(k) == v for k, v in match.items()):
                return ev
        if time.monotonic() >= deadline:
            raise AssertionError(f"no event={name} {match} within {timeout}s; log:\n{p.log[since:]}")
        time.sleep(0.05)


# -- the Network Monitor ----------------------------------------------------------------

class RecordingProxy:
    """A TCP proxy on 127.0.0.1 that forwards to 127.0.0.1:target_port and
    records every byte in both directions, as a network monitor on the
    wire would see them.  Threads; every wait bounded by `lifetime`."""

    def __init__(self, target_port, lifetime=30.0):
        self.target_port = target_port
        self.deadline = time.monotonic() + lifetime
        self.lock = threading.Lock()
        self.to_server = bytearray()
        self.to_client = bytearray()
        self.connections = 0
        self.errors = []
        self._stop = threading.Event()
        self._socks = []
        self._threads = []
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((HOST, 0))
        self.lsock.listen(8)
        self.lsock.settimeout(0.1)
        self.port = self.lsock.getsockname()[1]
        t = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)
        t.start()
        self._threads.append(t)

    @property
    def capture(self):
        with self.lock:
            return bytes(self.to_server) + bytes(self.to_client)

    def _running(self):
        return not self._stop.is_set() and time.monotonic() < self.deadline

    def _accept(self):
        while self._running():
            try:
                client, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection((HOST, self.target_port), timeout=5)
            except OSError as e:
                self.errors.append(f"upstream connect: {e}")
                client.close()
                continue
            with self.lock:
                self.connections += 1
                self._socks += [client, server]
            t = threading.Thread(target=self._pump, args=(client, server), name="proxy-pump",
                                 daemon=True)
            t.start()
            self._threads.append(t)

    def _pump(self, client, server):
        record = {client: self.to_server, server: self.to_client}
        peer = {client: server, server: client}
        open_ = {client, server}
        try:
            while open_ and self._running():
                ready, _, _ = select.select(list(open_), [], [], 0.1)
                for s in ready:
                    try:
                        data = s.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        open_.discard(s)
                        try:
                            peer[s].shutdown(socket.SHUT_WR)
                        except OSError:
                            pass
                        continue
                    with self.lock:
                        record[s].extend(data)
                    try:
                        peer[s].sendall(data)
                    except OSError:
                        open_.clear()
        finally:
            for s in (client, server):
                try:
                    s.close()
                except OSError:
                    pass

    def close(self):
        self._stop.set()
        try:
            self.lsock.close()
        except OSError:
            pass
        for t in self._threads:
            t.join(5)
        with self.lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.close()
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def reveals(capture, secret):
    """Would somebody reading capture learn secret?  True when it appears
    as such, or inside any base64 word of the capture (AUTH PLAIN/LOGIN
    encode credentials, they do not hide them)."""
    if isinstance(secret, str):
        secret = secret.encode()
    if secret in capture:
        return True
    for word in re.findall(rb"[A-Za-z0-9+/]{8,}={0,2}", capture):
        for pad in (b"", b"=", b"=="):
            try:
                if secret in base64.b64decode(word + pad, validate=True):
                    return True
            except (binascii.Error, ValueError):
                continue
    return False


# -- swaks and curl ------------------------------------------------------------------------

SWAKS = "/usr/bin/swaks"
CURL = "/usr/bin/curl"

# swaks looks up the machine's own host name with gethostbyname(), which may
# reach the DNS resolver; this wrapper (as in test_smtp_basic) answers it
# locally.
_SWAKS_NO_DNS = ("BEGIN { *CORE::GLOBAL::gethostbyname = sub { return ($_[0]) } } "
                 "$0 = '" + SWAKS + "'; do '" + SWAKS + "'; die $@ if $@;")


def swaks(*args, timeout=60):
    return subprocess.run(["perl", "-e", _SWAKS_NO_DNS, "--"] + [str(a) for a in args],
                          capture_output=True, text=True, timeout=timeout)


def curl_smtp(scheme, hostname, port, *args, timeout=60):
    """curl to scheme://hostname:port/CLIENT_HELO with hostname pinned to
    127.0.0.1 (--resolve: no DNS) and no proxy."""
    argv = [CURL, "-sS", "--max-time", "20", "--noproxy", "*",
            "--resolve", f"{hostname}:{port}:{HOST}",
            f"{scheme}://{hostname}:{port}/{CLIENT_HELO}"] + [str(a) for a in args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


# -- a client that sends its first command with its Finished message -----------------------

def tls_with_first_flight(sock, payload, context=None, server_hostname=None, timeout=10.0):
    """Complete a client handshake over sock through memory BIOs and send
    the client's last handshake flight (TLS 1.3 Finished) and an
    application-data record carrying payload in ONE write, as `openssl
    s_client` does when its input is already waiting (RFC 8446 §2 allows
    application data right after the client's Finished).  Then read until
    the server closes or `timeout`; returns (plaintext, how it ended)."""
    deadline = time.monotonic() + timeout
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = (context or client_context()).wrap_bio(inc, out, server_hostname=server_hostname)
    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            if out.pending:
                sock.sendall(out.read())
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("server closed during the handshake")
            inc.write(data)
    assert obj.version() == "TLSv1.3", obj.version()
    finished = out.read()
    obj.write(payload)
    sock.sendall(finished + out.read())
    plain, end = b"", "timeout"
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            data = b""
        if not data:
            inc.write_eof()
        else:
            inc.write(data)
        try:
            while True:
                chunk = obj.read(65536)
                if not chunk:
                    return plain, "close_notify"
                plain += chunk
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            return plain, "close_notify"
        except ssl.SSLEOFError:
            return plain, "eof without close_notify"
        except ssl.SSLError as e:
            return plain, f"TLS error {e}"
        if not data:
            return plain, "eof"
    return plain, end
