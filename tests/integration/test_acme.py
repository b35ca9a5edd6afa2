"""ACME (RFC 8555): posthorn gets its certificate from Pebble over http-01,
serves it, renews it at two thirds of its lifetime, keeps it when the CA
is down or an order fails, and `posthorn cert status` tells about it."""

import os
import pwd
import socket
import ssl
import stat
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from acmeutil import CA_NAME, Pebble
from helpers import HOST, free_port, wait_until

NAMES = ["mail.example.test", "smtp.example.test"]


def served_certificate(port, name=NAMES[0]):
    """The leaf the daemon's implicit-TLS port presents, as PEM text."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((HOST, port), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname=name) as t:
            der = t.getpeercert(binary_form=True)
    return ssl.DER_cert_to_PEM_cert(der)


def cert_field(pem, *what):
    res = subprocess.run(["openssl", "x509", "-noout", *what], input=pem, text=True,
                         capture_output=True, check=True)
    return res.stdout.strip()


def issuer(pem):
    return cert_field(pem, "-issuer")


def serial(pem):
    return cert_field(pem, "-serial")


def acme_block(pebble, http_port, names=NAMES, challenge=None):
    challenge = challenge or f"http-01 127.0.0.1:{http_port}"
    return ("acme {\n"
            f"    directory {pebble.directory}\n"
            "    contact mailto:postmaster@example.test\n"
            f"    challenge {challenge}\n"
            f"    names {' '.join(names)}\n"
            f"    ca {pebble.ca}\n"
            "}\n")


def tls_server(port):
    return {"port": port, "extra": "tls {\n    certificate acme\n}\n"}


@pytest.fixture
def acme_world(tmp_path, dnsmasq):
    """dnsmasq that maps NAMES to 127.0.0.1, Pebble validating through it."""
    dns = dnsmasq(hosts=[(n, "127.0.0.1") for n in NAMES + [CA_NAME]])
    http_port = free_port("127.0.0.1")
    started = []

    def pebble(**kw):
        p = Pebble(tmp_path / "pebble", dns.address, http_port, **kw)
        started.append(p)
        return p
    yield dns, http_port, pebble
    for p in started:
        p.stop()


def start_daemon(posthorn, pebble, http_port, names=NAMES, tls_port=None, challenge=None):
    tls_port = tls_port or free_port()
    servers = {"mx": {}, "submissions": {"port": tls_port, "extra": ""}}
    ph = posthorn(start=False, servers=servers,
                  global_extra=acme_block(pebble, http_port, names, challenge))
    text = ph.config_text().replace(
        f"listen {HOST}:{tls_port}\n", f"listen {HOST}:{tls_port} tls\n    tls {{\n"
        "        certificate acme\n    }\n")
    ph.write_config(text)
    ph.start()
    return ph, tls_port


def test_issuance_serves_pebble_certificate(posthorn, acme_world):
    dns, http_port, make_pebble = acme_world
    pebble = make_pebble()
    ph, tls_port = start_daemon(posthorn, pebble, http_port)
    # before the CA answered: a stand-in, never an error
    ph.wait_event("acme-issued", timeout=30)
    ph.wait_event("reload", timeout=10)
    pem = served_certificate(tls_port)
    assert "Pebble Intermediate CA" in issuer(pem), issuer(pem)
    sans = cert_field(pem, "-ext", "subjectAltName")
    for n in NAMES:
        assert f"DNS:{n}" in sans
    acme_dir = os.path.join(ph.spool, "acme")
    for f in ("certificate.pem", "account.key"):
        mode = stat.S_IMODE(os.stat(os.path.join(acme_dir, f)).st_mode)
        assert mode == 0o600, (f, oct(mode))
    assert ph.events("acme-challenge-served"), "Pebble never fetched the http-01 token"
    assert "seccomp-denied" not in ph.log
    # the challenge listener answers nothing else: no order is waiting now
    for path in ("/.well-known/acme-challenge/unknownToken", "/", "/.well-known/acme-challenge/"):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://127.0.0.1:{http_port}{path}", timeout=5)
        assert e.value.code == 404, (path, e.value.code)
    req = urllib.request.Request(f"http://127.0.0.1:{http_port}/.well-known/acme-challenge/x",
                                 data=b"", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 501   # only GET and HEAD are served (evhttp's answer)


def test_renewal_at_two_thirds_of_lifetime(posthorn, acme_world):
    dns, http_port, make_pebble = acme_world
    pebble = make_pebble(validity=9)   # seconds: renewed after 6
    ph, tls_port = start_daemon(posthorn, pebble, http_port)
    first = ph.wait_event("acme-issued", timeout=30)
    wait_until(lambda: "Pebble" in issuer(served_certificate(tls_port)), 10,
               what="the first certificate served")
    old = serial(served_certificate(tls_port))
    # a session that started on the old certificate
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    sess = ctx.wrap_socket(socket.create_connection((HOST, tls_port), timeout=10),
                           server_hostname=NAMES[0])
    assert sess.recv(512).startswith(b"220")
    mark = ph.log_mark()
    ph.wait_event("acme-issued", since=mark, timeout=20)
    wait_until(lambda: serial(served_certificate(tls_port)) != old, 10,
               what="the renewed certificate served")
    assert "Pebble Intermediate CA" in issuer(served_certificate(tls_port))
    # taken into use as at a reload, never by a restart: the session goes on
    assert ph.run.proc.poll() is None and len(ph.runs) == 1
    sess.sendall(b"NOOP\r\n")
    assert sess.recv(512).startswith(b"250")
    sess.close()
    # a certificate that expires within 7 days: a warning at start (and daily)
    ph.restart()
    ev = ph.wait_event("acme-expiry-soon", timeout=10)
    assert ev["_line"].split()[2] == "warning", ev["_line"]
    assert first is not None


def test_ca_down_keeps_certificate_and_backs_off(posthorn, acme_world):
    dns, http_port, make_pebble = acme_world
    pebble = make_pebble(validity=9)
    ph, tls_port = start_daemon(posthorn, pebble, http_port)
    ph.wait_event("acme-issued", timeout=30)
    wait_until(lambda: "Pebble" in issuer(served_certificate(tls_port)), 10,
               what="the first certificate served")
    old = serial(served_certificate(tls_port))
    pebble.stop()
    mark = ph.log_mark()
    ev = ph.wait_event("acme-failed", since=mark, timeout=20)
    assert ev["failures"] == "1" and ev["retry_in"] == "10s", ev["_line"]
    assert "Could not connect" in ev["_line"] or "Couldn't connect" in ev["_line"], ev["_line"]
    ph.wait_event("acme-planned", since=mark, timeout=5, **{"in": "10s"})
    # the old certificate is still served, and sessions go on
    assert serial(served_certificate(tls_port)) == old
    assert ph.run.proc.poll() is None
    st = ph.cli("cert", "status")
    assert st.returncode == 0, st.stderr
    assert "failed" in st.stdout and "Pebble Intermediate CA" in st.stdout, st.stdout


def test_invalid_order_logged_old_certificate_kept(posthorn, acme_world):
    dns, http_port, make_pebble = acme_world
    pebble = make_pebble()
    ph, tls_port = start_daemon(posthorn, pebble, http_port)
    ph.wait_event("acme-issued", timeout=30)
    wait_until(lambda: "Pebble" in issuer(served_certificate(tls_port)), 10,
               what="the first certificate served")
    old = serial(served_certificate(tls_port))
    # a name the tests' DNS does not know: Pebble cannot validate it
    with open(ph.conf) as f:
        text = f.read()
    ph.write_config(text.replace(f"names {' '.join(NAMES)}",
                                 f"names {' '.join(NAMES)} unknown.example.test"))
    mark = ph.log_mark()
    ph.reload()
    ev = ph.wait_event("acme-failed", since=mark, timeout=30)
    assert "unknown.example.test" in ev["_line"] and "invalid" in ev["_line"], ev["_line"]
    assert serial(served_certificate(tls_port)) == old
    st = ph.cli("cert", "status")
    assert "unknown.example.test" in st.stdout, st.stdout
    # Pebble's default lifetime is years: no expiry warning
    assert not ph.events("acme-expiry-soon")


def test_tls_alpn_01_on_the_tls_listener(posthorn, acme_world):
    """RFC 8737: the CA's TLS connection offering only acme-tls/1 gets the
    challenge certificate; no http-01 listener exists."""
    dns, http_port, make_pebble = acme_world
    tls_port = free_port()
    pebble = make_pebble(tls_port=tls_port)
    ph, _ = start_daemon(posthorn, pebble, http_port, tls_port=tls_port, challenge="tls-alpn-01")
    ph.wait_event("acme-issued", timeout=30)
    wait_until(lambda: "Pebble" in issuer(served_certificate(tls_port)), 10,
               what="the certificate served")
    assert not ph.events("acme-listen"), "no http-01 listener for tls-alpn-01"
    assert not ph.events("acme-challenge-served")
    # the validations' connections were closed after the handshake
    assert "tls-alpn-01 validation" in ph.log
    # a client that offers only acme-tls/1 for a name nothing is pending for: refused
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["acme-tls/1"])
    with socket.create_connection((HOST, tls_port), timeout=10) as s:
        with pytest.raises(ssl.SSLError):
            ctx.wrap_socket(s, server_hostname=NAMES[0])


def test_issuance_with_run_as(posthorn, acme_world):
    """The worker writes SPOOL/acme after the privilege drop: the folder
    made before it belongs to the run-as user."""
    dns, http_port, _ = acme_world
    world = posthorn.world_dir()
    pebble = Pebble(os.path.join(world, "pebble"), dns.address, http_port)
    os.chmod(os.path.join(world, "pebble"), 0o755)
    try:
        tls_port = free_port()
        servers = {"mx": {}, "submissions": {"port": tls_port, "extra": ""}}
        ph = posthorn(start=False, root=world, run_as="nobody", servers=servers,
                      global_extra=acme_block(pebble, http_port),
                      asan_options={"detect_leaks": "0"})
        ph.write_config(ph.config_text().replace(
            f"listen {HOST}:{tls_port}\n", f"listen {HOST}:{tls_port} tls\n    tls {{\n"
            "        certificate acme\n    }\n"))
        ph.start()
        ph.wait_event("acme-issued", timeout=30)
        wait_until(lambda: "Pebble" in issuer(served_certificate(tls_port)), 10,
                   what="the certificate served")
        st = os.stat(os.path.join(ph.spool, "acme", "certificate.pem"))
        assert st.st_uid == pwd.getpwnam("nobody").pw_uid
    finally:
        pebble.stop()


def test_ca_name_looked_up_with_posthorns_resolver(posthorn, acme_world):
    """A directory URL with a host name: posthorn asks its own DNS (the
    `dns` directive, here the tests' dnsmasq), never the system's."""
    dns, http_port, make_pebble = acme_world
    pebble = make_pebble()
    tls_port = free_port()
    servers = {"mx": {}, "submissions": {"port": tls_port, "extra": ""}}
    block = acme_block(pebble, http_port).replace("https://127.0.0.1:", f"https://{CA_NAME}:")
    ph = posthorn(start=False, servers=servers, global_extra=block, dns=dns.address)
    ph.write_config(ph.config_text().replace(
        f"listen {HOST}:{tls_port}\n", f"listen {HOST}:{tls_port} tls\n    tls {{\n"
        "        certificate acme\n    }\n"))
    ph.start()
    ph.wait_event("acme-issued", timeout=30)
    assert ("A", CA_NAME) in dns.queries(), dns.queries()
    wait_until(lambda: "Pebble" in issuer(served_certificate(tls_port)), 10,
               what="the certificate served")
