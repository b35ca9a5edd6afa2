"""Secure delivery between servers (docs/protocols.md, outbound delivery):
DANE (RFC 7672) and REQUIRETLS (RFC 8689), against a real validating
resolver.  unbound on a loopback port serves zones signed here with
ldns-signzone, anchored by their DS (unboundutil.py): a secure zone with
matching and mismatching TLSA records, a zone whose signatures are bogus,
and an unsigned one.  The mail exchangers are the outbound tests' SMTP
sink on 127.0.0.x, each with its own certificate.

Only 127.0.0.x addresses; every wait is bounded; unbound and posthorn are
stopped by PID (the fixtures do that)."""

import hashlib
import os
import subprocess

import pytest

from conftest import run_cli
from helpers import SMTPConn, ehlo_keywords, free_port, queue_id, wait_until
from test_outbound import (BOB, RELAY_BY_IP, Sink, bounce_parts, message, outbound_block,
                           queued, wait_spool_empty)
from tlsutil import CertPair, TLSConn, tls_extra
from unboundutil import Unbound

MX1, MX2 = "127.0.0.2", "127.0.0.4"
HOSTNAME = "mail.example.test"


@pytest.fixture
def unbound(tmp_path):
    started = []

    def make(zones):
        u = Unbound(tmp_path, zones)
        started.append(u)
        return u
    yield make
    for u in started:
        u.stop()


@pytest.fixture
def sinks():
    started = []

    def make(host, port, **kw):
        s = Sink(host, port, **kw)
        started.append(s)
        return s
    yield make
    for s in started:
        s.stop()


class SinkCert:
    """A sink's certificate (posthorn cert new) and its TLSA data."""

    def __init__(self, posthorn_bin, folder, hostname):
        os.makedirs(folder, exist_ok=True)
        res = run_cli(posthorn_bin, ["cert", "new", "--hostname", hostname, "--out", str(folder)])
        assert res.returncode == 0, res.stderr
        self.pair = CertPair(hostname, folder)
        spki = subprocess.run(
            f"openssl x509 -in {self.pair.crt} -pubkey -noout | openssl pkey -pubin -outform DER",
            shell=True, capture_output=True, check=True).stdout
        self.spki_sha256 = hashlib.sha256(spki).hexdigest()

    def context(self):
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.pair.crt, self.pair.key)
        return ctx

    def tlsa(self, host, port):
        """DANE-EE(3) SPKI(1) SHA-256(1): the record RFC 7672 §3.1.1 recommends."""
        return f"_{port}._tcp.{host} IN TLSA 3 1 1 {self.spki_sha256}"


WRONG_TLSA = "3 1 1 " + "ab" * 32


def relay(posthorn, ub, port, **kw):
    return posthorn(dns=ub.address, global_extra=outbound_block(port, **kw.pop("outbound", {})),
                    servers={"mx": {"anonymous": True, "extra": RELAY_BY_IP + kw.pop("extra", "")}},
                    **kw)


def transaction(c, rcpt, text, params=""):
    """MAIL (with params), RCPT and DATA on a greeted connection; the queue ID."""
    c.expect(f"MAIL FROM:<{BOB}>{params}", 250)
    c.expect(f"RCPT TO:<{rcpt}>", 250)
    c.expect("DATA", 354)
    c.send(text.encode() + b".\r\n")
    return queue_id(c.reply())


def submit(p, rcpt, text):
    with SMTPConn(p.port()) as c:
        c.start()
        qid = transaction(c, rcpt, text)
        c.cmd("QUIT")
    return qid


# -- DANE ---------------------------------------------------------------------------

def test_resolver_marks_signed_answers_secure(unbound):
    """The fixture itself: AD for the signed zone, none for the unsigned
    one, SERVFAIL for the bogus one — what posthorn's DANE relies on."""
    ub = unbound([{"name": "dane.test", "records": ["mx1 IN A 127.0.0.2"]},
                  {"name": "plain.test", "kind": "insecure", "records": ["mx1 IN A 127.0.0.2"]},
                  {"name": "bogus.test", "kind": "bogus", "records": ["mx1 IN A 127.0.0.2"]}])
    assert ub.query("mx1.dane.test", 1) == (0, True, 1)
    assert ub.query("mx1.plain.test", 1) == (0, False, 1)
    assert ub.query("mx1.bogus.test", 1)[0] == 2  # SERVFAIL


def test_matching_tlsa_delivers_over_authenticated_tls(posthorn, posthorn_bin, unbound, sinks,
                                                       tmp_path):
    port = free_port(MX1)
    cert = SinkCert(posthorn_bin, tmp_path / "c1", "mx1.dane.test")
    sink = sinks(MX1, port, tls=cert.context(), name="mx1.dane.test")
    ub = unbound([{"name": "dane.test", "records": [
        "@ IN MX 10 mx1.dane.test.", f"mx1 IN A {MX1}", cert.tlsa("mx1", port)]}])
    p = relay(posthorn, ub, port)
    submit(p, "someone@dane.test", message("dane match", to="someone@dane.test"))
    got = sink.wait_delivered(1)[0]
    assert got["tls"]
    ev = p.wait_event("outbound-tls", host="mx1.dane.test")
    assert ev["tls-policy"] == "dane", ev["_line"]
    wait_spool_empty(p)


def test_tlsa_mismatch_defers_and_the_next_mx_takes_it(posthorn, posthorn_bin, unbound, sinks,
                                                      tmp_path):
    port = free_port(MX1)
    c1 = SinkCert(posthorn_bin, tmp_path / "c1", "mx1.dane.test")
    c2 = SinkCert(posthorn_bin, tmp_path / "c2", "mx2.dane.test")
    bad = sinks(MX1, port, tls=c1.context(), name="mx1.dane.test")
    good = sinks(MX2, port, tls=c2.context(), name="mx2.dane.test")
    ub = unbound([{"name": "dane.test", "records": [
        "@ IN MX 10 mx1.dane.test.", "@ IN MX 20 mx2.dane.test.",
        f"mx1 IN A {MX1}", f"mx2 IN A {MX2}",
        f"_{port}._tcp.mx1 IN TLSA {WRONG_TLSA}", c2.tlsa("mx2", port)]}])
    p = relay(posthorn, ub, port)
    submit(p, "someone@dane.test", message("dane mismatch", to="someone@dane.test"))
    got = good.wait_delivered(1)[0]
    assert got["tls"]
    assert bad.delivered() == []
    # the first host was reached, its certificate refused, nothing sent to it
    said = [c.upper() for s in bad.sessions for c in s["commands"]]
    assert "STARTTLS" in said and not any(c.startswith("MAIL") for c in said), said
    ev = p.wait_event("outbound", result="deferred", host="mx1.dane.test")
    assert ev["tls-policy"] == "dane" and ev["tls-result"] == "tlsa-mismatch", ev["_line"]
    assert "matches no TLSA record" in ev["_line"], ev["_line"]
    sent = p.wait_event("outbound", result="sent", host="mx2.dane.test")
    assert sent["tls-policy"] == "dane" and sent["tls-result"] == "verified", sent["_line"]
    wait_spool_empty(p)


def test_dane_host_without_starttls_is_never_sent_in_clear(posthorn, posthorn_bin, unbound,
                                                           sinks, tmp_path):
    port = free_port(MX1)
    cert = SinkCert(posthorn_bin, tmp_path / "c1", "mx1.dane.test")
    sink = sinks(MX1, port, name="mx1.dane.test")  # no STARTTLS offered
    ub = unbound([{"name": "dane.test", "records": [
        "@ IN MX 10 mx1.dane.test.", f"mx1 IN A {MX1}", cert.tlsa("mx1", port)]}])
    p = relay(posthorn, ub, port, outbound={"lifetime": "1h"})
    qid = submit(p, "someone@dane.test", message("dane stripped", to="someone@dane.test"))
    ev = p.wait_event("outbound", result="deferred")
    assert ev["tls-policy"] == "dane" and ev["tls-result"] == "starttls-not-supported", ev["_line"]
    assert sink.delivered() == []
    assert qid in queued(p)


def test_bogus_dnssec_defers(posthorn, posthorn_bin, unbound, sinks, tmp_path):
    port = free_port(MX1)
    sink = sinks(MX1, port, name="mx1.bogus.test")
    ub = unbound([{"name": "bogus.test", "kind": "bogus", "records": [
        "@ IN MX 10 mx1.bogus.test.", f"mx1 IN A {MX1}"]}])
    p = relay(posthorn, ub, port, outbound={"lifetime": "1h"})
    qid = submit(p, "someone@bogus.test", message("bogus", to="someone@bogus.test"))
    ev = p.wait_event("outbound", result="deferred")
    assert "MX lookup for bogus.test failed" in ev["_line"], ev["_line"]
    assert sink.sessions == []
    assert qid in queued(p)


def test_insecure_zone_falls_back_to_opportunistic_tls(posthorn, posthorn_bin, unbound, sinks,
                                                       tmp_path):
    """TLSA records in an unsigned zone prove nothing (RFC 7672 §2.2):
    STARTTLS as usual, whatever the certificate."""
    port = free_port(MX1)
    cert = SinkCert(posthorn_bin, tmp_path / "c1", "mx1.plain.test")
    sink = sinks(MX1, port, tls=cert.context(), name="mx1.plain.test")
    ub = unbound([{"name": "plain.test", "kind": "insecure", "records": [
        "@ IN MX 10 mx1.plain.test.", f"mx1 IN A {MX1}", f"_{port}._tcp.mx1 IN TLSA {WRONG_TLSA}"]}])
    p = relay(posthorn, ub, port)
    submit(p, "someone@plain.test", message("insecure", to="someone@plain.test"))
    assert sink.wait_delivered(1)[0]["tls"]
    ev = p.wait_event("outbound-tls", host="mx1.plain.test")
    assert ev["tls-policy"] == "none", ev["_line"]
    wait_spool_empty(p)


def test_tls_policy_none_ignores_tlsa(posthorn, posthorn_bin, unbound, sinks, tmp_path):
    port = free_port(MX1)
    cert = SinkCert(posthorn_bin, tmp_path / "c1", "mx1.dane.test")
    sink = sinks(MX1, port, tls=cert.context(), name="mx1.dane.test")
    ub = unbound([{"name": "dane.test", "records": [
        "@ IN MX 10 mx1.dane.test.", f"mx1 IN A {MX1}", f"_{port}._tcp.mx1 IN TLSA {WRONG_TLSA}"]}])
    p = relay(posthorn, ub, port, outbound={"extra": ["tls-policy none"]})
    submit(p, "someone@dane.test", message("policy none", to="someone@dane.test"))
    assert sink.wait_delivered(1)[0]["tls"]
    wait_spool_empty(p)


def test_tls_required_no_header_delivers_despite_a_mismatch(posthorn, posthorn_bin, unbound,
                                                            sinks, tmp_path):
    """RFC 8689 §4.2: the sender's "TLS-Required: No" outranks the domain's
    DANE policy when it fails."""
    port = free_port(MX1)
    cert = SinkCert(posthorn_bin, tmp_path / "c1", "mx1.dane.test")
    sink = sinks(MX1, port, tls=cert.context(), name="mx1.dane.test")
    ub = unbound([{"name": "dane.test", "records": [
        "@ IN MX 10 mx1.dane.test.", f"mx1 IN A {MX1}", f"_{port}._tcp.mx1 IN TLSA {WRONG_TLSA}"]}])
    p = relay(posthorn, ub, port)
    submit(p, "someone@dane.test", message("optional", to="someone@dane.test",
                                            extra_headers="TLS-Required: No\r\n"))
    assert sink.wait_delivered(1)[0]["tls"]
    wait_spool_empty(p)


# -- REQUIRETLS ----------------------------------------------------------------------

def tls_relay(posthorn, posthorn_bin, ub, port, tmp_path, **kw):
    folder = tmp_path / "own"
    res = run_cli(posthorn_bin, ["cert", "new", "--hostname", HOSTNAME, "--out", str(folder)])
    assert res.returncode == 0, res.stderr
    return relay(posthorn, ub, port, extra=tls_extra([CertPair(HOSTNAME, folder)]), **kw)


def submit_requiretls(p, rcpt, text):
    with TLSConn(p.port()) as c:
        c.start()
        c.starttls()
        assert "REQUIRETLS" in ehlo_keywords(c.ehlo())
        qid = transaction(c, rcpt, text, " REQUIRETLS")
        c.cmd("QUIT")
    return qid


def test_requiretls_is_offered_and_taken_only_over_tls(posthorn, posthorn_bin, unbound,
                                                       tmp_path):
    ub = unbound([{"name": "dane.test", "records": []}])
    p = tls_relay(posthorn, posthorn_bin, ub, free_port(MX1), tmp_path)
    with SMTPConn(p.port()) as c:
        assert "REQUIRETLS" not in ehlo_keywords(c.start())
        r = c.cmd(f"MAIL FROM:<{BOB}> REQUIRETLS")
        assert r.first.startswith("530 5.7.10"), r.raw


def test_requiretls_goes_over_dane_to_a_server_that_offers_it(posthorn, posthorn_bin, unbound,
                                                              sinks, tmp_path):
    port = free_port(MX1)
    cert = SinkCert(posthorn_bin, tmp_path / "c1", "mx1.dane.test")
    sink = sinks(MX1, port, tls=cert.context(), name="mx1.dane.test", requiretls=True)
    ub = unbound([{"name": "dane.test", "records": [
        "@ IN MX 10 mx1.dane.test.", f"mx1 IN A {MX1}", cert.tlsa("mx1", port)]}])
    p = tls_relay(posthorn, posthorn_bin, ub, port, tmp_path)
    submit_requiretls(p, "someone@dane.test", message("must be secret", to="someone@dane.test"))
    got = sink.wait_delivered(1)[0]
    assert got["tls"] and "REQUIRETLS" in got["params"].upper(), got["params"]
    wait_spool_empty(p)


@pytest.mark.parametrize("zone,offers", [("plain.test", True), ("dane.test", False)])
def test_requiretls_without_verified_tls_or_the_extension_bounces(posthorn, posthorn_bin, unbound,
                                                                  sinks, tmp_path, zone, offers):
    """An unsigned zone (TLS, but not authenticated) or a DANE host that does
    not offer REQUIRETLS: the message is returned with 5.7.30 and never sent."""
    port = free_port(MX1)
    cert = SinkCert(posthorn_bin, tmp_path / "c1", f"mx1.{zone}")
    sink = sinks(MX1, port, tls=cert.context(), name=f"mx1.{zone}", requiretls=offers)
    kind = "insecure" if zone == "plain.test" else "secure"
    ub = unbound([{"name": zone, "kind": kind, "records": [
        f"@ IN MX 10 mx1.{zone}.", f"mx1 IN A {MX1}", cert.tlsa("mx1", port)]}])
    p = tls_relay(posthorn, posthorn_bin, ub, port, tmp_path)
    submit_requiretls(p, f"someone@{zone}", message("must be secret", to=f"someone@{zone}"))
    wait_spool_empty(p)
    assert sink.delivered() == []
    bounce = p.wait_messages(BOB, 1)[0]
    fields, ctype, parts = bounce_parts(bounce)
    assert b"5.7.30" in b"".join(parts)
