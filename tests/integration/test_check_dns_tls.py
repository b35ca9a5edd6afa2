"""`posthorn check-dns` on the records other servers read to send here
securely: the MTA-STS and TLS-RPT records of each local domain, and the
TLSA record of each port-25 SMTP server against the certificate it serves
(dnsmasq serves the TXT records and, with --dns-rr, the TLSA ones)."""

import hashlib
import subprocess

from conftest import run_cli
from test_check_dns import MAIL_MX, MAIL_TXT
from tlsutil import CertPair


def spki_sha256(crt):
    der = subprocess.run(f"openssl x509 -in {crt} -pubkey -noout | openssl pkey -pubin -outform DER",
                         shell=True, capture_output=True, check=True).stdout
    return hashlib.sha256(der).hexdigest()


def new_cert(posthorn_bin, tmp_path):
    folder = tmp_path / "cert"
    res = run_cli(posthorn_bin, ["cert", "new", "--hostname", "mx.example.test", "--out", str(folder)])
    assert res.returncode == 0, res.stderr
    return CertPair("mx.example.test", folder)


def configure(p, pair):
    text = p.config_text().split("\nserver ", 1)[0] + "\n"
    text += ("server mx {\n    listen 127.0.0.5:25\n    hostname mx.example.test\n"
             f"    auth {{ anonymous yes }}\n    tls {{\n        certificate {pair.crt}\n"
             f"        key {pair.key}\n    }}\n}}\n")
    p.write_config(text)


def dns_for(dnsmasq, tlsa_hex=None, txt=()):
    extra = [f"--txt-record={name},{value}" for name, value in txt]
    if tlsa_hex:
        extra.append(f"--dns-rr=_25._tcp.mx.example.test,52,030101{tlsa_hex}")
    return dnsmasq(ptr=[("127.0.0.5", "mx.example.test")], hosts=[("mx.example.test", "127.0.0.5")],
                   mx=MAIL_MX, txt=MAIL_TXT, extra=extra)


def test_published_records_are_recognised(posthorn, posthorn_bin, dnsmasq, tmp_path):
    pair = new_cert(posthorn_bin, tmp_path)
    h = spki_sha256(pair.crt)
    d = dns_for(dnsmasq, tlsa_hex=h, txt=[("_mta-sts.example.test", "v=STSv1; id=abc;"),
                                          ("_smtp._tls.example.test", "v=TLSRPTv1; rua=mailto:r@example.test")])
    p = posthorn(start=False, dns=d.address)
    configure(p, pair)
    res = p.cli("check-dns")
    out = res.stdout
    assert "MTA-STS: record published (id abc)" in out, out
    assert "TLS-RPT: v=TLSRPTv1; rua=mailto:r@example.test" in out, out
    assert f"TLSA for {pair.crt}: published; the record: _25._tcp.mx.example.test. IN TLSA 3 1 1 {h}" in out, out
    assert "none matches" not in out
    assert res.returncode == 0, out + res.stderr


def test_missing_and_wrong_records_are_explained(posthorn, posthorn_bin, dnsmasq, tmp_path):
    pair = new_cert(posthorn_bin, tmp_path)
    d = dns_for(dnsmasq, tlsa_hex="ab" * 32, txt=[("_mta-sts.example.test", "v=STSv1; id=a-b;")])
    p = posthorn(start=False, dns=d.address)
    configure(p, pair)
    res = p.cli("check-dns")
    out = res.stdout
    assert res.returncode == 1, out + res.stderr
    assert 'MTA-STS: _mta-sts.example.test is not one valid "v=STSv1; id=...;" record' in out, out
    assert ('TLS-RPT: none published; to get reports of failed TLS to you, publish '
            '_smtp._tls.example.test. IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@example.test"') in out, out
    assert "has TLSA records but none matches a certificate this server uses" in out, out
    assert f"IN TLSA 3 1 1 {spki_sha256(pair.crt)}" in out
