"""MTA-STS (RFC 8461) on outbound delivery: the tests' dnsmasq publishes
the _mta-sts TXT record, the MX and the addresses; a real HTTPS server
(Python's http.server with TLS) serves the policy at
https://mta-sts.DOMAIN/.well-known/mta-sts.txt on port 443 of a loopback
address, under a test CA that posthorn is told to trust (outbound
ca-file); the mail exchangers are the outbound tests' SMTP sink with
certificates from that CA (or a self-signed one).

Port 443 needs root, as `make check` runs; only 127.0.0.x addresses; every
wait is bounded; posthorn and dnsmasq are stopped by PID (the fixtures do
that), the HTTPS server by its thread."""

import os
import random
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import run_cli
from helpers import free_port, wait_until
from test_dane import SinkCert, relay, sinks, submit  # noqa: F401 (sinks: a fixture)
from test_outbound import message, queued, wait_spool_empty

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the policy server needs port 443")

MX1, MX2 = "127.0.0.2", "127.0.0.4"
DOMAIN = "sts.test"


# -- a CA of the test's own ------------------------------------------------------------

def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


class LocalCA:
    def __init__(self, folder):
        self.folder = str(folder)
        os.makedirs(self.folder, exist_ok=True)
        self.crt = os.path.join(self.folder, "ca.crt")
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
                 "-subj", "/CN=posthorn test CA", cwd=self.folder)

    def issue(self, hostname):
        """(certificate, key) for hostname, signed by this CA."""
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", f"{hostname}.key", "-out", f"{hostname}.csr", "-subj",
                 f"/CN={hostname}", cwd=self.folder)
        ext = os.path.join(self.folder, f"{hostname}.ext")
        with open(ext, "w") as f:
            f.write(f"subjectAltName=DNS:{hostname}\n")
        _openssl("x509", "-req", "-in", f"{hostname}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{hostname}.crt", "-days", "1", "-extfile", ext,
                 cwd=self.folder)
        return (os.path.join(self.folder, f"{hostname}.crt"),
                os.path.join(self.folder, f"{hostname}.key"))

    def server_context(self, hostname):
        crt, key = self.issue(hostname)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(crt, key)
        return ctx


# -- the policy server -----------------------------------------------------------------

class PolicyServer:
    """HTTPS on ADDR:443 answering GET /.well-known/mta-sts.txt with .policy."""

    def __init__(self, ctx, policy):
        self.policy = policy
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests += 1
                if self.path != "/.well-known/mta-sts.txt":
                    self.send_error(404)
                    return
                body = server.policy.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        for _ in range(50):
            self.addr = f"127.0.{random.randint(10, 250)}.{random.randint(2, 250)}"
            try:
                self.httpd = ThreadingHTTPServer((self.addr, 443), Handler)
                break
            except OSError:
                continue
        else:
            raise RuntimeError("no free loopback address for port 443")
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def policy(mode, mx=("mx1.sts.test",), max_age=86400):
    lines = ["version: STSv1", f"mode: {mode}"] + [f"mx: {m}" for m in mx]
    return "\r\n".join(lines + [f"max_age: {max_age}", ""])


@pytest.fixture
def sts(tmp_path, dnsmasq):
    """Factory: sts(policy_text, record_id) -> (PolicyServer, Dnsmasq, LocalCA)."""
    started = []
    ca = LocalCA(tmp_path / "ca")

    def make(text, record_id="1", extra_mx=(), extra=()):
        srv = PolicyServer(ca.server_context(f"mta-sts.{DOMAIN}"), text)
        started.append(srv)
        dns = dnsmasq(mx=[(DOMAIN, "mx1.sts.test", 10)] + list(extra_mx),
                      hosts=[("mx1.sts.test", MX1), ("mx2.sts.test", MX2),
                             (f"mta-sts.{DOMAIN}", srv.addr)],
                      extra=[f"--txt-record=_mta-sts.{DOMAIN},v=STSv1; id={record_id};"]
                      + list(extra))
        return srv, dns
    make.ca = ca
    yield make
    for s in started:
        s.stop()


def sts_relay(posthorn, dns, port, ca, **kw):
    extra = [f"ca-file {ca.crt}", "tls-policy mta-sts"] + kw.pop("extra", [])
    return relay(posthorn, dns, port, outbound={"extra": extra, **kw.pop("outbound", {})}, **kw)


RCPT = f"someone@{DOMAIN}"


def test_enforce_delivers_to_a_named_mx_with_a_valid_certificate(posthorn, sts, sinks):
    srv, dns = sts(policy("enforce"))
    port = free_port(MX1)
    sink = sinks(MX1, port, tls=sts.ca.server_context("mx1.sts.test"), name="mx1.sts.test")
    p = sts_relay(posthorn, dns, port, sts.ca)
    submit(p, RCPT, message("sts ok", to=RCPT))
    assert sink.wait_delivered(1)[0]["tls"]
    ev = p.wait_event("outbound", result="sent")
    assert ev["tls-policy"] == "mta-sts" and ev["tls-result"] == "verified", ev["_line"]
    got = p.wait_event("mta-sts", domain=DOMAIN)
    assert got["mode"] == "enforce" and got["source"] == "fetched", got["_line"]
    assert srv.requests == 1
    # the policy is kept in the spool for the next delivery
    assert os.path.exists(os.path.join(p.spool, "mta-sts", DOMAIN))
    wait_spool_empty(p)


def test_enforce_with_an_untrusted_certificate_defers(posthorn, posthorn_bin, sts, sinks, tmp_path):
    srv, dns = sts(policy("enforce"))
    port = free_port(MX1)
    self_signed = SinkCert(posthorn_bin, tmp_path / "self", "mx1.sts.test")
    sink = sinks(MX1, port, tls=self_signed.context(), name="mx1.sts.test")
    p = sts_relay(posthorn, dns, port, sts.ca, outbound={"lifetime": "1h"})
    qid = submit(p, RCPT, message("sts bad cert", to=RCPT))
    ev = p.wait_event("outbound", result="deferred")
    assert ev["tls-policy"] == "mta-sts", ev["_line"]
    assert ev["tls-result"] == "certificate-not-trusted", ev["_line"]
    assert sink.delivered() == []
    assert qid in queued(p)


def test_testing_mode_delivers_and_notes_the_failure(posthorn, posthorn_bin, sts, sinks, tmp_path):
    """Delivered, and counted as a failure in the domain's TLS report (RFC
    8460), which goes to the rua of its _smtp._tls record."""
    from test_tls_reports import mailed_report
    srv, dns = sts(policy("testing"), extra_mx=[("rpt.test", "mx2.sts.test", 10)],
                   extra=[f"--txt-record=_smtp._tls.{DOMAIN},v=TLSRPTv1; rua=mailto:r@rpt.test"])
    port = free_port(MX1)
    self_signed = SinkCert(posthorn_bin, tmp_path / "self", "mx1.sts.test")
    sink = sinks(MX1, port, tls=self_signed.context(), name="mx1.sts.test")
    reports = sinks(MX2, port, name="mx2.sts.test")
    p = sts_relay(posthorn, dns, port, sts.ca, extra=["tls-reports yes"])
    submit(p, RCPT, message("sts testing", to=RCPT))
    assert sink.wait_delivered(1)[0]["tls"]
    ev = p.wait_event("outbound", result="sent")
    assert ev["tls-policy"] == "mta-sts", ev["_line"]
    assert ev["tls-result"] == "certificate-not-trusted", ev["_line"]
    wait_spool_empty(p)
    assert "1 TLS report being sent" in p.cli("queue", "tls-report").stdout
    _, rep = mailed_report(reports.wait_delivered(1)[0]["data"])
    [pol] = rep["policies"]
    assert pol["policy"]["policy-type"] == "sts" and pol["policy"]["policy-domain"] == DOMAIN
    assert "mode: testing" in pol["policy"]["policy-string"], pol["policy"]
    assert pol["summary"]["total-failure-session-count"] == 1, pol
    [fail] = pol["failure-details"]
    assert fail["result-type"] == "certificate-not-trusted"
    assert fail["receiving-mx-hostname"] == "mx1.sts.test"


def test_enforce_skips_mail_exchangers_the_policy_does_not_name(posthorn, sts, sinks):
    srv, dns = sts(policy("enforce", mx=("mx2.sts.test",)), extra_mx=[(DOMAIN, "mx2.sts.test", 20)])
    port = free_port(MX1)
    unnamed = sinks(MX1, port, tls=sts.ca.server_context("mx1.sts.test"), name="mx1.sts.test")
    named = sinks(MX2, port, tls=sts.ca.server_context("mx2.sts.test"), name="mx2.sts.test")
    p = sts_relay(posthorn, dns, port, sts.ca)
    submit(p, RCPT, message("sts named", to=RCPT))
    assert named.wait_delivered(1)[0]["tls"]
    assert unnamed.sessions == []
    mismatch = p.wait_event("mta-sts-mismatch")
    assert mismatch["host"] == "mx1.sts.test", mismatch["_line"]
    wait_spool_empty(p)


def test_policy_is_cached_for_max_age_then_fetched_again(posthorn, sts, sinks):
    """Within max_age the cached policy applies even if the server changed
    it under the same id; once it expires the new one is fetched."""
    srv, dns = sts(policy("enforce", max_age=3))
    port = free_port(MX1)
    sink = sinks(MX1, port, tls=sts.ca.server_context("mx1.sts.test"), name="mx1.sts.test")
    p = sts_relay(posthorn, dns, port, sts.ca, outbound={"lifetime": "1h"})
    t0 = time.monotonic()
    submit(p, RCPT, message("first", to=RCPT))
    sink.wait_delivered(1)
    srv.policy = policy("enforce", mx=("elsewhere.sts.test",), max_age=3)
    submit(p, RCPT, message("second", to=RCPT))
    sink.wait_delivered(2)
    assert srv.requests == 1, "a fresh cached policy was fetched again"
    assert time.monotonic() - t0 < 3, "too slow to test the cache"
    # the cache keeps whole seconds: 4.5 s after the fetch it has expired
    time.sleep(max(0.0, 4.5 - (time.monotonic() - t0)))
    qid = submit(p, RCPT, message("third", to=RCPT))
    wait_until(lambda: srv.requests == 2, 15, what="the policy fetched again")
    ev = p.wait_event("outbound", result="deferred")
    assert ev["tls-result"] == "sts-no-mx-match", ev["_line"]
    assert len(sink.delivered()) == 2
    assert qid in queued(p)


def test_no_record_means_no_policy(posthorn, dnsmasq, sinks, tmp_path):
    """A domain without _mta-sts: plain opportunistic delivery, nothing fetched."""
    port = free_port(MX1)
    sink = sinks(MX1, port, name="mx1.sts.test")
    dns = dnsmasq(mx=[(DOMAIN, "mx1.sts.test", 10)], hosts=[("mx1.sts.test", MX1)])
    ca = LocalCA(tmp_path / "ca")
    p = sts_relay(posthorn, dns, port, ca)
    submit(p, RCPT, message("no sts", to=RCPT))
    sink.wait_delivered(1)
    ev = p.wait_event("outbound", result="sent")
    assert ev["tls-policy"] == "none", ev["_line"]
    assert p.events("mta-sts") == []
    wait_spool_empty(p)
