"""Encryption (posthorn.conf(5) `tls` block; RFC 3207): `posthorn cert new`,
STARTTLS and implicit TLS with the clients people use (smtplib, openssl
s_client, curl, swaks), STARTTLS hygiene and command injection, minimum
version and cipher strength, "require secure channel", the traffic-capture
("Network Monitor") check, SNI and ALPN, `posthorn check` on certificates,
SIGHUP reloading certificates and failed handshakes.

Certificates are made once per module with `posthorn cert new` (ECDSA for
mx.example.test, a.example.test, b.example.test; RSA 2048 for
mx.example.test).  Every connection goes to 127.0.0.1; host names are only
given to TLS (SNI, certificate checks) and to curl with --resolve.
"""

import base64
import os
import re
import shutil
import socket
import ssl
import time
import uuid

import pytest

from conftest import HOSTNAME, run_cli
from helpers import (CLIENT_HELO, ehlo_keywords, free_port, queue_id,
                     send_message, split_message)
from tlsutil import (CertPair, PinnedSMTP, PinnedSMTP_SSL, RecordingProxy, TLSConn,
                     client_context, curl_smtp, make_cert_with_dates, openssl, reveals,
                     s_client, swaks, tls_connect, tls_events, tls_extra, tls_with_first_flight,
                     wait_tls_event, x509_serial, x509_text)

SENDER = "alice@example.org"
NEEDS_TLS = "530 5.7.0 Must issue a STARTTLS command first"


# -- certificates and servers ---------------------------------------------------------

def cert_new(bin_path, hostname, out, rsa=None):
    args = ["cert", "new", "--hostname", hostname, "--out", str(out)]
    if rsa:
        args += ["--rsa", str(rsa)]
    return run_cli(bin_path, args)


@pytest.fixture(scope="module")
def certs(posthorn_bin, tmp_path_factory):
    """name -> CertPair, made with `posthorn cert new` once per module."""
    root = tmp_path_factory.mktemp("certs")
    out = {}
    for name, host, rsa in (("mx", HOSTNAME, None), ("a", "a.example.test", None),
                            ("b", "b.example.test", None), ("rsa", HOSTNAME, 2048)):
        res = cert_new(posthorn_bin, host, root / name, rsa)
        assert res.returncode == 0, f"cert new {host}: {res.stderr}"
        out[name] = CertPair(host, root / name)
    return out


def tls_server(posthorn, pairs, anonymous=True, implicit=True, limits=None, auth=None,
               start=True, **tls_opts):
    """A daemon with one SMTP server `mx`: plain listener (STARTTLS) plus,
    unless implicit is False, an implicit-TLS listener at p.tls_port."""
    tls_port = free_port() if implicit else None
    extra = tls_extra(pairs, tls_port, **tls_opts)
    if auth:
        extra = auth + extra
        anonymous = None
    p = posthorn(start=start, servers={"mx": {"anonymous": anonymous, "limits": limits,
                                              "extra": extra}})
    p.tls_port = tls_port
    return p


@pytest.fixture
def tls_mx(posthorn, certs):
    """The common case: mx.example.test's ECDSA certificate, STARTTLS on the
    plain port and implicit TLS on p.tls_port, anonymous senders allowed."""
    return tls_server(posthorn, [certs["mx"]])


def verifying(pair, **kw):
    """A client context trusting only pair's certificate, checking the name."""
    return client_context(cafile=pair.crt, **kw)


def desc_of(conn_cipher):
    """What the daemon should write for a session Python negotiated."""
    name, proto, bits = conn_cipher
    return f"{proto} with cipher {name} ({bits}/{bits} bits)"


def received(data):
    fields, _ = split_message(data)
    return [v.decode() for n, v in fields if n.lower() == "received"]


def assert_tls_received(data, desc, with_="ESMTPS", helo=CLIENT_HELO):
    [rcvd] = received(data)
    assert rcvd.startswith(f"from {helo} (unknown [127.0.0.1])\r\n\t(using {desc})\r\n"), rcvd
    assert f"by {HOSTNAME} (posthorn) with {with_} id " in rcvd, rcvd


def assert_refused(sc, p, since, reason_hint=None):
    """The s_client run got no TLS session and no SMTP, and the daemon
    logged the failed handshake with the client's address and a reason."""
    assert not sc.handshake_ok, sc
    assert not sc.replies, sc
    ev = wait_tls_event(p, "tls-failed", since=since, client="127.0.0.1", server="mx")
    assert ev.get("reason"), ev["_line"]
    if reason_hint:
        assert reason_hint in ev["reason"], ev["_line"]
    assert not tls_events(p, "tls", since), p.log[since:]
    return ev


def assert_accepted(sc, starttls=False):
    """A TLS session, and SMTP spoken inside it: the greeting on implicit
    TLS (sent as the handshake completes), the EHLO reply after STARTTLS."""
    assert sc.handshake_ok, sc
    if starttls:
        assert f"250-{HOSTNAME}" in sc.replies, sc
    else:
        assert sc.replies and sc.replies[0].startswith(f"220 {HOSTNAME} ESMTP"), sc


# -- posthorn cert new -----------------------------------------------------------------

def test_cert_new_ecdsa_key_certificate_and_request(posthorn_bin, tmp_path):
    out = tmp_path / "new"
    res = cert_new(posthorn_bin, "mail.example.test", out)
    assert res.returncode == 0, res.stderr
    pair = CertPair("mail.example.test", out)
    # the output tells the admin what to put into the tls block
    assert f"certificate {pair.crt}" in res.stdout, res.stdout
    assert f"key         {pair.key}" in res.stdout or f"key {pair.key}" in res.stdout, res.stdout

    # the private key: mode 0600, unencrypted PEM, ECDSA P-256
    assert os.stat(pair.key).st_mode & 0o777 == 0o600
    with open(pair.key) as f:
        assert f.read().startswith("-----BEGIN PRIVATE KEY-----")
    k = openssl("pkey", "-in", pair.key, "-noout", "-text")
    assert k.returncode == 0 and "NIST CURVE: P-256" in k.stdout, k.stdout + k.stderr

    # the certificate: self-signed, subjectAltName the host name, one year
    text = x509_text(pair.crt)
    assert re.search(r"Subject: CN ?= ?mail\.example\.test", text), text
    assert re.search(r"Issuer: CN ?= ?mail\.example\.test", text), text
    assert re.search(r"X509v3 Subject Alternative Name: *\n\s+DNS:mail\.example\.test\s*\n", text), text
    assert "id-ecPublicKey" in text and "P-256" in text, text
    assert "TLS Web Server Authentication" in text, text
    assert re.search(r"Basic Constraints: critical\s+CA:FALSE", text), text
    dates = openssl("x509", "-in", pair.crt, "-noout", "-startdate", "-enddate").stdout
    before = ssl.cert_time_to_seconds(re.search(r"notBefore=(.*)", dates).group(1).strip())
    after = ssl.cert_time_to_seconds(re.search(r"notAfter=(.*)", dates).group(1).strip())
    assert abs(before - time.time()) < 600, dates
    assert 364 <= (after - before) / 86400 <= 366, dates
    v = openssl("verify", "-CAfile", pair.crt, "-purpose", "sslserver",
                "-verify_hostname", "mail.example.test", pair.crt)
    assert v.returncode == 0 and v.stdout.strip().endswith("OK"), v.stdout + v.stderr
    wrong = openssl("verify", "-CAfile", pair.crt, "-verify_hostname", "other.example.test",
                    pair.crt)
    assert wrong.returncode != 0, wrong.stdout

    # the request: signature valid, same name and subjectAltName
    r = openssl("req", "-in", pair.csr, "-verify", "-noout", "-text")
    assert r.returncode == 0, r.stderr
    assert "verify OK" in r.stdout + r.stderr, r.stdout + r.stderr
    assert re.search(r"Subject: CN ?= ?mail\.example\.test", r.stdout), r.stdout
    assert "DNS:mail.example.test" in r.stdout, r.stdout

    # all three carry the same public key
    pub_key = openssl("pkey", "-in", pair.key, "-pubout").stdout
    pub_crt = openssl("x509", "-in", pair.crt, "-noout", "-pubkey").stdout
    pub_csr = openssl("req", "-in", pair.csr, "-noout", "-pubkey").stdout
    assert pub_key and pub_key == pub_crt == pub_csr


def test_cert_new_rsa(posthorn_bin, tmp_path):
    res = cert_new(posthorn_bin, "rsa.example.test", tmp_path, rsa=2048)
    assert res.returncode == 0, res.stderr
    pair = CertPair("rsa.example.test", tmp_path)
    assert os.stat(pair.key).st_mode & 0o777 == 0o600
    text = x509_text(pair.crt)
    assert "rsaEncryption" in text and "Public-Key: (2048 bit)" in text, text
    assert "DNS:rsa.example.test" in text, text
    r = openssl("req", "-in", pair.csr, "-verify", "-noout")
    assert r.returncode == 0 and "verify OK" in r.stdout + r.stderr, r.stdout + r.stderr
    m = openssl("pkey", "-in", pair.key, "-noout", "-text")
    assert "Private-Key: (2048 bit" in m.stdout, m.stdout


def test_cert_new_refuses_to_overwrite(posthorn_bin, tmp_path):
    assert cert_new(posthorn_bin, "mail.example.test", tmp_path).returncode == 0
    pair = CertPair("mail.example.test", tmp_path)
    before = {f: open(f, "rb").read() for f in (pair.key, pair.crt, pair.csr)}
    res = cert_new(posthorn_bin, "mail.example.test", tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "exists" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert {f: open(f, "rb").read() for f in before} == before
    assert os.stat(pair.key).st_mode & 0o777 == 0o600

    # one of the three left over is enough to refuse; nothing new is written
    os.unlink(pair.key)
    os.unlink(pair.csr)
    res = cert_new(posthorn_bin, "mail.example.test", tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert not os.path.exists(pair.key) and not os.path.exists(pair.csr)
    assert open(pair.crt, "rb").read() == before[pair.crt]


@pytest.mark.parametrize("args", [
    ["--hostname", "../evil.example.test"],
    ["--hostname", "a/b"],
    ["--hostname", "mail.example.test", "--rsa", "512"],
    ["--hostname", "mail.example.test", "--rsa", "lots"],
    [],                                            # no --hostname
], ids=["dotdot", "slash", "rsa-512", "rsa-word", "no-hostname"])
def test_cert_new_bad_usage(posthorn_bin, tmp_path, args):
    out = tmp_path / "out"
    res = run_cli(posthorn_bin, ["cert", "new"] + args + ["--out", str(out)])
    assert res.returncode == 2, res.stdout + res.stderr
    assert "usage" in res.stderr, res.stderr
    written = [os.path.join(d, n) for d, _, names in os.walk(tmp_path) for n in names]
    assert written == [], written


# -- STARTTLS and implicit TLS with real clients ---------------------------------------

@pytest.mark.parametrize("version", ["TLSv1.3", "TLSv1.2"])
def test_smtplib_starttls_then_delivery(tls_mx, certs, version):
    p = tls_mx
    v = getattr(ssl.TLSVersion, version.replace(".", "_"))
    ctx = verifying(certs["mx"], minimum=v, maximum=v)
    mark = p.log_mark()
    s = PinnedSMTP(HOSTNAME, p.port(), local_hostname=CLIENT_HELO, timeout=10)
    p.conns.append(s)
    s.ehlo()
    assert s.has_extn("starttls"), s.esmtp_features
    code, msg = s.starttls(context=ctx)       # the certificate verifies for mx.example.test
    assert code == 220, msg
    name, proto, bits = s.sock.cipher()
    assert proto == version
    s.ehlo()
    assert not s.has_extn("starttls"), s.esmtp_features
    assert s.sendmail(SENDER, ["bob@example.test"],
                      "Subject: over STARTTLS\r\n\r\nsent inside TLS\r\n") == {}
    s.quit()

    [data] = p.wait_messages("bob@example.test", 1)
    desc = desc_of((name, proto, bits))
    assert_tls_received(data, desc)
    assert b"sent inside TLS" in data
    ev = wait_tls_event(p, "tls", since=mark, client="127.0.0.1", server="mx")
    assert ev["tls"] == desc, ev["_line"]
    acc = p.wait_event("accepted", since=mark)
    assert acc["session"] == ev["session"]


def test_smtplib_implicit_tls_delivery(tls_mx, certs):
    p = tls_mx
    mark = p.log_mark()
    s = PinnedSMTP_SSL(HOSTNAME, p.tls_port, local_hostname=CLIENT_HELO,
                       context=verifying(certs["mx"]), timeout=10)
    p.conns.append(s)
    s.ehlo()
    assert not s.has_extn("starttls"), s.esmtp_features
    cipher = s.sock.cipher()
    assert s.sendmail(SENDER, ["carol@example.test"], "Subject: implicit\r\n\r\non 465\r\n") == {}
    s.quit()
    [data] = p.wait_messages("carol@example.test", 1)
    assert_tls_received(data, desc_of(cipher))
    ev = wait_tls_event(p, "tls", since=mark, client="127.0.0.1")
    assert ev["tls"] == desc_of(cipher)
    assert any("tls=implicit" in e["_line"] for e in p.events("connect", mark)), p.log[mark:]


def test_openssl_s_client_starttls(tls_mx, certs):
    sc = s_client(tls_mx.port(), "-CAfile", certs["mx"].crt, "-verify_return_error",
                  "-verify_hostname", HOSTNAME, starttls=True, servername=HOSTNAME,
                  input="EHLO client.example.test\nQUIT\n")
    assert sc.handshake_ok, sc
    assert "Verify return code: 0 (ok)" in sc.out, sc
    assert sc.replies[0] == f"250-{HOSTNAME}", sc
    assert "250-STARTTLS" not in sc.replies, sc        # not offered inside TLS
    assert sc.replies[-1].startswith("221 2.0.0"), sc


def test_openssl_s_client_implicit_tls(tls_mx, certs):
    # with no SNI at all the one certificate is served too
    assert_accepted(s_client(tls_mx.tls_port))
    # what `printf 'EHLO ...\nQUIT\n' | openssl s_client -connect ...` shows,
    # every time (a few runs: the input may reach the server at different
    # moments of the handshake)
    for _ in range(5):
        sc = s_client(tls_mx.tls_port, "-CAfile", certs["mx"].crt, "-verify_return_error",
                      "-verify_hostname", HOSTNAME, servername=HOSTNAME,
                      input="EHLO client.example.test\nQUIT\n")
        assert_accepted(sc)
        assert "Verify return code: 0 (ok)" in sc.out, sc
        assert sc.protocol == "TLSv1.3", sc
        assert f"250-{HOSTNAME}" in sc.replies, f"no EHLO reply inside implicit TLS:\n{sc}"
        assert "250-STARTTLS" not in sc.replies, sc
        assert sc.replies[-1].startswith("221 2.0.0"), f"no reply to QUIT:\n{sc}"


@pytest.mark.parametrize("starttls", [False, True], ids=["implicit", "starttls"])
def test_commands_sent_with_the_clients_finished_are_answered(tls_mx, certs, starttls):
    """TLS 1.3 lets a client send its first command in the same write as its
    Finished message; `openssl s_client` with piped input does.  The server
    must answer it like any other (and not close the connection)."""
    p = tls_mx
    with TLSConn(p.port() if starttls else p.tls_port) as c:
        if starttls:
            c.start()
            c.expect("STARTTLS", 220)
        plain, end = tls_with_first_flight(c.sock, b"EHLO client.example.test\r\nQUIT\r\n",
                                           verifying(certs["mx"]), HOSTNAME)
    if not starttls:
        assert plain.startswith(f"220 {HOSTNAME} ESMTP".encode()), (plain, end)
    assert f"250-{HOSTNAME}\r\n".encode() in plain, (plain, end)
    assert plain.endswith(b"221 2.0.0 Bye\r\n"), (plain, end)


@pytest.mark.parametrize("scheme", ["smtp", "smtps"])
def test_curl_delivers_over_tls(tls_mx, certs, tmp_path, scheme):
    p = tls_mx
    port = p.port() if scheme == "smtp" else p.tls_port
    msg = tmp_path / "msg.txt"
    msg.write_bytes(b"Subject: curl " + scheme.encode() + b"\r\n\r\nsent by curl\r\n")
    mark = p.log_mark()
    res = curl_smtp(scheme, HOSTNAME, port, "--ssl-reqd", "--cacert", certs["mx"].crt,
                    "--mail-from", SENDER, "--mail-rcpt", "dave@example.test",
                    "--upload-file", msg)
    assert res.returncode == 0, res.stdout + res.stderr
    [data] = p.wait_messages("dave@example.test", 1)
    ev = wait_tls_event(p, "tls", since=mark, client="127.0.0.1")
    assert_tls_received(data, ev["tls"])
    assert b"sent by curl" in data


def test_curl_ssl_reqd_fails_without_tls(posthorn):
    """The control: against a server without a certificate, --ssl-reqd
    really refuses to send (so the test above proves TLS was used)."""
    p = posthorn()
    res = curl_smtp("smtp", HOSTNAME, p.port(), "--ssl-reqd", "--mail-from", SENDER,
                    "--mail-rcpt", "dave@example.test", "--upload-file", "/dev/null")
    assert res.returncode != 0, res.stdout + res.stderr
    assert p.messages("dave@example.test") == []


@pytest.mark.parametrize("mode", ["--tls", "--tlsc"])
def test_swaks_delivers_over_tls(tls_mx, mode):
    p = tls_mx
    port = p.port() if mode == "--tls" else p.tls_port
    res = swaks(mode, "--server", f"127.0.0.1:{port}", "--helo", "swaks.example.test",
                "--from", SENDER, "--to", "carol@example.test",
                "--header", "Subject: swaks tls", "--body", "Sent by swaks over TLS.",
                "--timeout", "10")
    assert res.returncode == 0, res.stdout + res.stderr
    m = re.search(r"=== TLS started with cipher (\S+):(\S+):(\d+)", res.stdout)
    assert m, res.stdout
    assert re.search(r"<~\s+250 2\.0\.0 Ok: queued as \S+", res.stdout), res.stdout
    [data] = p.wait_messages("carol@example.test", 1)
    desc = f"{m.group(1)} with cipher {m.group(2)} ({m.group(3)}/{m.group(3)} bits)"
    assert_tls_received(data, desc, helo="swaks.example.test")
    assert b"Sent by swaks over TLS." in data


def test_rsa_certificate(posthorn, certs):
    p = tls_server(posthorn, [certs["rsa"]])
    sc = s_client(p.tls_port, "-tls1_2", "-cipher", "ECDHE-RSA-AES256-GCM-SHA384",
                  "-CAfile", certs["rsa"].crt, "-verify_return_error", servername=HOSTNAME)
    assert_accepted(sc)
    assert sc.cipher == "ECDHE-RSA-AES256-GCM-SHA384", sc
    assert "Server public key is 2048 bit" in sc.out, sc
    assert sc.peer_der() == certs["rsa"].der()
    sc = s_client(p.port(), "-CAfile", certs["rsa"].crt, "-verify_return_error",
                  starttls=True, servername=HOSTNAME)
    assert_accepted(sc, starttls=True)
    assert sc.protocol == "TLSv1.3", sc


# -- STARTTLS rules ---------------------------------------------------------------------

def test_starttls_offered_only_with_a_certificate_and_not_inside_tls(posthorn, certs):
    tls_port = free_port()
    p = posthorn(servers={
        "mx": {"extra": tls_extra([certs["mx"]], tls_port)},
        "bare": {},
    })
    # no certificate: nothing to offer, and the command is not available
    with TLSConn(p.port("bare")) as c:
        c.greeting()
        assert "STARTTLS" not in ehlo_keywords(c.ehlo())
        r = c.cmd("STARTTLS")
        assert r.code == 502 and r.first.startswith("502 5.5.1"), r.raw
        c.expect("NOOP", 250)            # still a working plain session

    with TLSConn(p.port("mx")) as c:
        c.greeting()
        assert "STARTTLS" in ehlo_keywords(c.ehlo())
        r = c.cmd("STARTTLS now")
        assert r.code == 501, r.raw
        c.starttls(verifying(certs["mx"]), HOSTNAME)
        kw = ehlo_keywords(c.ehlo())
        assert "STARTTLS" not in kw, kw
        r = c.cmd("STARTTLS")
        assert r.code == 503 and r.first.startswith("503 5.5.1"), r.raw
        c.expect("NOOP", 250)            # the TLS session goes on
        c.expect("QUIT", 221)

    with tls_connect(tls_port, verifying(certs["mx"]), HOSTNAME) as c:
        c.greeting()
        assert "STARTTLS" not in ehlo_keywords(c.ehlo())
        r = c.cmd("STARTTLS")
        assert r.code == 503 and r.first.startswith("503 5.5.1"), r.raw
        send_message(c, SENDER, ["bob@example.test"], "Subject: x\r\n\r\nafter 503\r\n")
        c.expect("QUIT", 221)
    p.wait_messages("bob@example.test", 1)


def test_starttls_during_a_transaction_is_503(tls_mx):
    with TLSConn(tls_mx.port()) as c:
        c.start()
        c.expect("MAIL FROM:<alice@example.org>", 250)
        r = c.cmd("STARTTLS")
        assert r.code == 503 and r.first.startswith("503 5.5.1"), r.raw
        # still plaintext SMTP, and the transaction is intact
        c.expect("RCPT TO:<bob@example.test>", 250)
        c.expect("DATA", 354)
        c.send(b"Subject: plain\r\n\r\nno TLS here\r\n.\r\n")
        assert c.reply().code == 250
        c.expect("QUIT", 221)
    [data] = tls_mx.wait_messages("bob@example.test", 1)
    assert b"(using " not in data


def test_after_starttls_ehlo_must_be_sent_again(tls_mx, certs):
    with TLSConn(tls_mx.port()) as c:
        c.start()
        c.starttls(verifying(certs["mx"]), HOSTNAME)
        r = c.cmd("MAIL FROM:<alice@example.org>")
        assert r.code == 503 and r.first.startswith("503 5.5.1"), r.raw
        r = c.cmd("RCPT TO:<bob@example.test>")
        assert r.code == 503, r.raw
        c.ehlo()
        send_message(c, SENDER, ["bob@example.test"], "Subject: again\r\n\r\nafter EHLO\r\n")
        c.expect("QUIT", 221)
    tls_mx.wait_messages("bob@example.test", 1)


def test_starttls_forgets_the_helo_name(tls_mx, certs):
    """RFC 3207 §4.2: the name given before TLS is not trusted after it; the
    Received: line names the EHLO sent inside TLS."""
    with TLSConn(tls_mx.port()) as c:
        c.greeting()
        c.ehlo("before-tls.example.test")
        c.starttls(verifying(certs["mx"]), HOSTNAME)
        c.ehlo("inside-tls.example.test")
        send_message(c, SENDER, ["bob@example.test"], "Subject: names\r\n\r\nx\r\n")
        c.expect("QUIT", 221)
    [data] = tls_mx.wait_messages("bob@example.test", 1)
    [rcvd] = received(data)
    assert rcvd.startswith("from inside-tls.example.test "), rcvd
    assert "before-tls" not in data.decode("utf-8", "replace")


# -- STARTTLS command injection (CVE-2011-0411 class) ---------------------------------

def _quiet(conn, seconds):
    """Nothing arrives for `seconds` (returns what did arrive otherwise)."""
    conn.sock.settimeout(seconds)
    try:
        return conn.sock.recv(65536)
    except (socket.timeout, ssl.SSLWantReadError):
        return b""
    finally:
        conn.sock.settimeout(conn.timeout)


@pytest.mark.parametrize("injected", [b"NOOP\r\n", b"MAIL FROM:<evil@remote.example>\r\n",
                                      b"NOOP\r\nNOOP\r\nRSET\r\n"],
                         ids=["noop", "mail", "three"])
def test_starttls_injection_gets_no_answer_inside_tls(tls_mx, certs, injected):
    p = tls_mx
    mark = p.log_mark()
    with TLSConn(p.port()) as c:
        c.start()
        c.send(b"STARTTLS\r\n" + injected)          # one write
        r = c.reply()
        assert r.first.startswith("220 2.0.0"), r.raw
        # no plaintext answer to the injected commands either
        assert c.buf == b"", c.buf
        assert _quiet(c, 0.3) == b""
        c.wrap(verifying(certs["mx"]), HOSTNAME)
        # inside TLS the server says nothing until asked
        leaked = _quiet(c, 0.5)
        assert leaked == b"", f"server answered injected plaintext inside TLS: {leaked!r}"
        c.send(f"EHLO {CLIENT_HELO}\r\n")
        r = c.reply()
        assert r.code == 250 and r.lines[0].split()[0] == HOSTNAME, \
            f"first reply inside TLS is not the EHLO reply: {r.raw!r}"
        # an injected MAIL started no transaction
        r = c.cmd("RCPT TO:<bob@example.test>")
        assert r.code == 503, r.raw
        r = c.cmd("NOOP")
        assert r.first == "250 2.0.0 Ok", r.raw
        r = c.cmd("QUIT")
        assert r.code == 221, f"stray reply inside TLS: {r.raw!r}"
    assert p.wait_event("tls", since=mark)


# -- versions and cipher strength ---------------------------------------------------------

@pytest.mark.parametrize("starttls", [False, True], ids=["implicit", "starttls"])
def test_tls_1_1_refused_by_default(tls_mx, starttls):
    p = tls_mx
    port = p.port() if starttls else p.tls_port
    mark = p.log_mark()
    # OpenSSL 3 only offers TLS 1.1 at security level 0
    sc = s_client(port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", starttls=starttls)
    assert_refused(sc, p, mark)
    # the same client with TLS 1.2 is fine
    sc = s_client(port, "-tls1_2", starttls=starttls)
    assert sc.handshake_ok and sc.protocol == "TLSv1.2", sc


@pytest.mark.parametrize("starttls", [False, True], ids=["implicit", "starttls"])
def test_tls_1_2_refused_with_min_version_1_3(posthorn, certs, starttls):
    p = tls_server(posthorn, [certs["mx"]], min_version="1.3")
    port = p.port() if starttls else p.tls_port
    mark = p.log_mark()
    sc = s_client(port, "-tls1_2", starttls=starttls)
    assert_refused(sc, p, mark)
    sc = s_client(port, "-tls1_3", starttls=starttls)
    assert sc.protocol == "TLSv1.3", sc
    assert_accepted(sc, starttls)


def test_min_bits_256_refuses_aes_128(posthorn, certs):
    strong_port, default_port = free_port(), free_port()
    p = posthorn(servers={
        "mx": {"extra": tls_extra([certs["mx"]], strong_port, min_bits=256)},
        "default": {"extra": tls_extra([certs["mx"]], default_port)},
    })
    weak = [("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"),
            ("-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256")]
    strong = [("-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"),
              ("-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384"),
              ("-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256")]
    for args in weak:
        mark = p.log_mark()
        assert_refused(s_client(strong_port, *args), p, mark)
        # the default (128 bits) takes the same client: the refusal is min-bits'
        sc = s_client(default_port, *args)
        assert_accepted(sc)
        assert sc.cipher == args[2], sc
    for args in strong:
        sc = s_client(strong_port, *args)
        assert_accepted(sc)
        assert sc.cipher == args[2], sc
    # and over STARTTLS
    mark = p.log_mark()
    assert_refused(s_client(p.port(), *weak[1], starttls=True), p, mark)
    sc = s_client(p.port(), *strong[1], starttls=True)
    assert sc.handshake_ok and sc.cipher == "TLS_AES_256_GCM_SHA384", sc
    for ev in tls_events(p, "tls"):
        m = re.search(r"\((\d+)/(\d+) bits\)", ev["tls"])
        assert m, ev["_line"]
        if ev["server"] == "mx":
            assert int(m.group(1)) >= 256, ev["_line"]


# -- require yes ----------------------------------------------------------------------------

def _plain_b64(user, password):
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def test_require_yes_refuses_mail_and_auth_before_starttls(posthorn, certs):
    p = tls_server(posthorn, [certs["mx"]], require="yes")
    with TLSConn(p.port()) as c:
        c.greeting()
        kw = ehlo_keywords(c.ehlo())
        assert "STARTTLS" in kw and "AUTH" not in kw, kw
        r = c.cmd("MAIL FROM:<alice@example.org>")
        assert r.first == NEEDS_TLS, r.raw
        r = c.cmd("AUTH PLAIN " + _plain_b64("bob@example.test", p.passwords["bob@example.test"]))
        assert r.first == NEEDS_TLS, r.raw
        r = c.cmd("MAIL FROM:<alice@example.org>")
        assert r.first == NEEDS_TLS, r.raw
        c.expect("NOOP", 250)
        c.starttls(verifying(certs["mx"]), HOSTNAME)
        kw = ehlo_keywords(c.ehlo())
        assert "AUTH" in kw, kw
        send_message(c, SENDER, ["bob@example.test"], "Subject: required\r\n\r\nvia TLS\r\n")
        desc = desc_of(c.cipher())
        c.expect("QUIT", 221)
    [data] = p.wait_messages("bob@example.test", 1)
    assert_tls_received(data, desc)

    # implicit TLS already is the secure channel
    with tls_connect(p.tls_port, verifying(certs["mx"]), HOSTNAME) as c:
        c.start()
        send_message(c, SENDER, ["carol@example.test"], "Subject: 465\r\n\r\nimplicit\r\n")
        c.expect("QUIT", 221)
    p.wait_messages("carol@example.test", 1)


def test_require_yes_rcpt_and_data_before_starttls_get_530(posthorn, certs):
    """posthorn.conf(5) `tls`: with `require yes`, MAIL, RCPT, DATA and AUTH before TLS all
    get `530 5.7.0 Must issue a STARTTLS command first` (a pipelining client
    sending MAIL, RCPT, DATA in one batch learns why each one failed)."""
    p = tls_server(posthorn, [certs["mx"]], require="yes")
    with TLSConn(p.port()) as c:
        c.start()
        c.send(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
        replies = [c.reply().first for _ in range(3)]
        assert replies == [NEEDS_TLS] * 3, replies
        c.expect("QUIT", 221)


# -- the Network Monitor check ----------------------------------------------------------

AUTH_OPEN = """auth {
    mechanisms plain login scram-sha-256
    anonymous no
    plaintext-requires-tls no
}
"""


@pytest.mark.parametrize("mode", ["plain", "starttls", "implicit"])
def test_network_monitor_sees_nothing_inside_tls(posthorn, certs, mode):
    p = tls_server(posthorn, [certs["mx"]], auth=AUTH_OPEN)
    user = "bob@example.test"
    password = p.passwords[user]
    token = "NetMon-" + uuid.uuid4().hex
    body = (f"Subject: capture {mode}\r\n\r\nThe secret body token is {token}.\r\n"
            + "filler line so the message has some size\r\n" * 20)
    target = p.tls_port if mode == "implicit" else p.port()
    with RecordingProxy(target) as proxy:
        if mode == "implicit":
            c = tls_connect(proxy.port, verifying(certs["mx"]), HOSTNAME)
        else:
            c = TLSConn(proxy.port)
        with c:
            c.greeting()
            kw = ehlo_keywords(c.ehlo())
            if mode == "starttls":
                c.starttls(verifying(certs["mx"]), HOSTNAME)
                kw = ehlo_keywords(c.ehlo())
            assert "PLAIN" in kw.get("AUTH", []), kw
            r = c.cmd("AUTH PLAIN " + _plain_b64(user, password))
            assert r.first.startswith("235 2.7.0"), r.raw
            send_message(c, user, ["carol@example.test"], body)
            c.expect("QUIT", 221)
        [data] = p.wait_messages("carol@example.test", 1)
        assert token.encode() in data
        capture = proxy.capture
        assert proxy.connections == 1 and not proxy.errors, proxy.errors

    if mode == "plain":
        # what a network monitor shows for an unencrypted session
        assert reveals(capture, password), capture[:2000]
        assert token.encode() in capture
        assert b"(using " not in data
    else:
        assert len(capture) > len(body), len(capture)      # the session went through here
        assert not reveals(capture, password), "password visible on the wire"
        assert not reveals(capture, _plain_b64(user, password)), "AUTH PLAIN visible on the wire"
        assert not reveals(capture, token), "message body visible on the wire"
        assert not reveals(capture, user), "user name visible on the wire"
        assert not reveals(capture, "carol@example.test"), "recipient visible on the wire"
        assert b"Subject: capture" not in capture
        [rcvd] = received(data)
        assert "(using TLSv1.3 with cipher " in rcvd and "with ESMTPSA id" in rcvd, rcvd


# -- SNI and ALPN ----------------------------------------------------------------------------

def test_sni_selects_the_certificate(posthorn, certs):
    a, b = certs["a"], certs["b"]
    p = tls_server(posthorn, [a, b])
    for port, starttls in ((p.tls_port, False), (p.port(), True)):
        for name, want in (("b.example.test", b), ("a.example.test", a), (None, a),
                           ("B.Example.Test", b), ("other.example.test", a)):
            args = ["-CAfile", want.crt, "-verify_return_error"]
            if name and name != "other.example.test":
                args += ["-verify_hostname", name.lower()]
            sc = s_client(port, *args, servername=name, starttls=starttls)
            assert_accepted(sc, starttls)
            assert sc.peer_der() == want.der(), f"SNI {name!r}: got {sc.subject}\n{sc}"
            assert re.fullmatch(r"CN ?= ?" + re.escape(want.hostname), sc.subject), sc.subject
            assert "Verify return code: 0 (ok)" in sc.out, sc

    # Python's client, checking the name, likewise
    for want in (a, b):
        with tls_connect(p.tls_port, verifying(want), want.hostname) as c:
            c.start()
            assert c.peer_der() == want.der()
            c.expect("QUIT", 221)


def test_strict_sni_refuses_unknown_names(posthorn, certs):
    a, b = certs["a"], certs["b"]
    p = tls_server(posthorn, [a, b], strict_sni="yes")
    for port, starttls in ((p.tls_port, False), (p.port(), True)):
        mark = p.log_mark()
        sc = s_client(port, servername="other.example.test", starttls=starttls)
        assert_refused(sc, p, mark)
        sc = s_client(port, servername="b.example.test", starttls=starttls)
        assert sc.handshake_ok and sc.peer_der() == b.der(), sc
        # a client that sends no name at all gets the first certificate
        sc = s_client(port, starttls=starttls)
        assert sc.handshake_ok and sc.peer_der() == a.der(), sc


def test_alpn_other_protocols_refused_on_implicit_tls(tls_mx):
    p = tls_mx
    for alpn in ("http/1.1", "h2,http/1.1", "imap"):
        mark = p.log_mark()
        sc = s_client(p.tls_port, "-alpn", alpn, servername=HOSTNAME)
        assert_refused(sc, p, mark)
        assert "no application protocol" in sc.all, sc
    for alpn in ("smtp", "http/1.1,smtp"):
        sc = s_client(p.tls_port, "-alpn", alpn, servername=HOSTNAME)
        assert_accepted(sc)
        assert "ALPN protocol: smtp" in sc.out, sc
    sc = s_client(p.tls_port, servername=HOSTNAME)
    assert_accepted(sc)
    assert "No ALPN negotiated" in sc.out, sc


@pytest.mark.parametrize("starttls", [False, True], ids=["implicit", "starttls"])
def test_refused_handshake_tells_the_client_why(posthorn, certs, starttls):
    """RFC 8446 §6.2: a refused handshake ends with the fatal alert that
    says why, on implicit TLS and after STARTTLS alike, so the user of
    `openssl s_client` reads the reason instead of "unexpected eof"."""
    p = tls_server(posthorn, [certs["a"], certs["b"]], strict_sni="yes")
    port = p.port() if starttls else p.tls_port
    # RFC 8446 §6: protocol_version(70), unrecognized_name(112),
    # no_application_protocol(120)
    cases = [((("-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"), None), 70),
             (((), "other.example.test"), 112)]
    if not starttls:
        cases.append(((("-alpn", "http/1.1"), None), 120))
    for (args, name), alert in cases:
        mark = p.log_mark()
        sc = s_client(port, *args, servername=name, starttls=starttls)
        assert_refused(sc, p, mark)
        assert f"SSL alert number {alert}\n" in sc.all, sc


# -- posthorn check on certificates -----------------------------------------------------------

def _line_of(conf_path, needle):
    with open(conf_path) as f:
        for i, line in enumerate(f, 1):
            if needle in line:
                return i
    raise AssertionError(f"{needle!r} not in {conf_path}")


def _errors(stderr, conf_path):
    """(line, col, message) of every CONF:LINE:COL: message in stderr."""
    return [(int(m.group(1)), int(m.group(2)), m.group(3))
            for m in re.finditer(re.escape(conf_path) + r":(\d+):(\d+): (.+)$", stderr, re.M)]


def test_check_key_not_matching_certificate(posthorn, certs):
    a, b = certs["a"], certs["b"]
    p = tls_server(posthorn, [(a.crt, b.key)], start=False)
    res = p.cli("check")
    assert res.returncode == 1, res.stdout + res.stderr
    errs = _errors(res.stderr, p.conf)
    assert errs, res.stderr
    lines = {_line_of(p.conf, f"certificate {a.crt}"), _line_of(p.conf, f"key {b.key}")}
    assert any(line in lines and col >= 1 and "does not match" in msg and b.key in msg
               for line, col, msg in errs), res.stderr
    # and the daemon refuses to start with it
    res = run_cli(p.bin, ["serve"], conf=p.conf, timeout=30)
    assert res.returncode != 0, res.stderr
    assert "does not match" in res.stderr, res.stderr


@pytest.mark.parametrize("problem", ["missing key", "unreadable mode", "not a key",
                                     "missing certificate"])
def test_check_unusable_key_or_certificate(posthorn, certs, tmp_path, problem):
    mx = certs["mx"]
    crt, key = mx.crt, mx.key
    if problem == "missing key":
        key = str(tmp_path / "nope.key")
    elif problem == "unreadable mode":
        key = str(tmp_path / "open.key")
        shutil.copy(mx.key, key)
        os.chmod(key, 0o644)
    elif problem == "not a key":
        key = str(tmp_path / "garbage.key")
        with open(key, "w") as f:
            f.write("this is not a key\n")
        os.chmod(key, 0o600)
    else:
        crt = str(tmp_path / "nope.crt")
    p = tls_server(posthorn, [(crt, key)], start=False)
    res = p.cli("check")
    assert res.returncode == 1, res.stdout + res.stderr
    errs = _errors(res.stderr, p.conf)
    lines = {_line_of(p.conf, f"certificate {crt}"), _line_of(p.conf, f"key {key}")}
    assert any(line in lines for line, _, _ in errs), res.stderr


@pytest.mark.parametrize("what", ["require", "listen"])
def test_check_tls_without_certificate(posthorn, what):
    port = free_port()
    extra = "tls {\n    require yes\n}\n" if what == "require" else f"listen 127.0.0.1:{port} tls\n"
    p = posthorn(start=False, servers={"mx": {"extra": extra}})
    res = p.cli("check")
    assert res.returncode == 1, res.stdout + res.stderr
    errs = _errors(res.stderr, p.conf)
    line = _line_of(p.conf, "require yes" if what == "require" else f"listen 127.0.0.1:{port} tls")
    assert any(n == line and "certificate" in msg for n, _, msg in errs), res.stderr


def test_check_warns_about_an_expired_certificate(posthorn, certs, tmp_path):
    old = make_cert_with_dates(str(tmp_path / "old"), HOSTNAME, "20200101000000Z",
                               "20200102000000Z")
    assert "Not After : Jan  2 00:00:00 2020 GMT" in x509_text(old.crt)
    p = tls_server(posthorn, [old], start=False)
    res = p.cli("check")
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout + res.stderr
    warnings = [line for line in out.splitlines() if "warning" in line.lower()]
    assert any("expired" in w and old.crt in w and "2020-01-02" in w for w in warnings), out

    # the fresh certificate from cert new draws no such warning
    p2 = tls_server(posthorn, [certs["mx"]], start=False)
    res = p2.cli("check")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "expire" not in (res.stdout + res.stderr).lower(), res.stdout + res.stderr


# -- SIGHUP reloads certificates ---------------------------------------------------------------

def test_sighup_reloads_certificates(posthorn, posthorn_bin, certs, tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    for f in (certs["mx"].key, certs["mx"].crt):
        shutil.copy2(f, live)
    pair = CertPair(HOSTNAME, live)
    old_der = pair.der()
    p = tls_server(posthorn, [pair])

    # sessions opened before the reload: STARTTLS mid-transaction, implicit TLS
    old = TLSConn(p.port())
    old_imp = tls_connect(p.tls_port, verifying(pair), HOSTNAME)
    try:
        old.start()
        old.starttls(verifying(pair), HOSTNAME)
        old.ehlo()
        old.expect("MAIL FROM:<alice@example.org>", 250)
        old_imp.start()

        # renew: a new key and certificate (another serial) put in place
        res = cert_new(posthorn_bin, HOSTNAME, tmp_path / "renewed")
        assert res.returncode == 0, res.stderr
        new = CertPair(HOSTNAME, tmp_path / "renewed")
        assert x509_serial(new.crt) != x509_serial(pair.crt)
        new_der = new.der()
        os.replace(new.key, pair.key)
        os.replace(new.crt, pair.crt)
        p.reload()

        # new connections, on both listeners, get the new certificate
        sc = s_client(p.tls_port, "-CAfile", pair.crt, "-verify_return_error",
                      servername=HOSTNAME)
        assert sc.handshake_ok and sc.peer_der() == new_der, sc
        sc = s_client(p.port(), starttls=True, servername=HOSTNAME)
        assert sc.handshake_ok and sc.peer_der() == new_der, sc

        # the sessions from before go on with theirs and deliver
        assert old.peer_der() == old_der and old_imp.peer_der() == old_der
        old.expect("RCPT TO:<bob@example.test>", 250)
        old.expect("DATA", 354)
        old.send(b"Subject: across reload\r\n\r\nstarted before SIGHUP\r\n.\r\n")
        qid = queue_id(old.reply())
        old.expect("QUIT", 221)
        send_message(old_imp, SENDER, ["carol@example.test"],
                     "Subject: implicit across reload\r\n\r\nstill here\r\n")
        old_imp.expect("QUIT", 221)
    finally:
        old.close()
        old_imp.close()
    [data] = p.wait_messages("bob@example.test", 1)
    assert f"id {qid}".encode() in data and b"(using TLSv1.3" in data
    p.wait_messages("carol@example.test", 1)

    # a broken pair on the next SIGHUP (key of another certificate) is
    # refused; the daemon keeps serving the last good certificate
    shutil.copy2(certs["a"].key, pair.key)
    p.reload(expect="reload-failed")
    assert p.running()
    sc = s_client(p.tls_port, servername=HOSTNAME)
    assert sc.handshake_ok and sc.peer_der() == new_der, sc


# -- failed handshakes -----------------------------------------------------------------------

def test_failed_handshake_logged_and_server_keeps_serving(posthorn, certs):
    p = tls_server(posthorn, [certs["mx"]], limits={"connections-per-ip": 3})
    mark = p.log_mark()
    garbage = [b"EHLO client.example.test\r\n",          # a plaintext client on port 465
               b"GET / HTTP/1.1\r\nHost: mx.example.test\r\n\r\n",
               b"\x00" * 64,
               b"\xff" * 64]
    # more failures than the per-address connection limit: each costs one
    # connection, for as long as it lasts
    for i in range(10):
        with TLSConn(p.tls_port) as c:
            c.send(garbage[i % len(garbage)])
            c.wait_closed(timeout=10)
    deadline = time.monotonic() + 10
    while len(tls_events(p, "tls-failed", mark)) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    failed = tls_events(p, "tls-failed", mark)
    assert len(failed) == 10, p.log[mark:]
    for ev in failed:
        assert ev["client"] == "127.0.0.1" and ev["server"] == "mx", ev["_line"]
        assert ev.get("reason"), ev["_line"]
    # garbage after STARTTLS on the plain port, likewise
    with TLSConn(p.port()) as c:
        c.start()
        c.expect("STARTTLS", 220)
        c.send(b"MAIL FROM:<x@remote.example>\r\n")
        c.wait_closed(timeout=10)
    wait_tls_event(p, "tls-failed", since=mark, client="127.0.0.1")
    assert len(tls_events(p, "tls-failed", mark)) == 11

    # the daemon is alive and serving, on both listeners
    assert p.running()
    with tls_connect(p.tls_port, verifying(certs["mx"]), HOSTNAME) as c:
        c.start()
        send_message(c, SENDER, ["bob@example.test"], "Subject: after garbage\r\n\r\nok\r\n")
        c.expect("QUIT", 221)
    assert_accepted(s_client(p.port(), starttls=True), starttls=True)
    p.wait_messages("bob@example.test", 1)


def test_client_closing_mid_handshake(tls_mx):
    p = tls_mx
    mark = p.log_mark()
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", p.tls_port), timeout=5)
        s.close()
    deadline = time.monotonic() + 10
    while len(p.events("disconnect", mark)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(p.events("disconnect", mark)) == 3, p.log[mark:]
    assert_accepted(s_client(p.tls_port))


# -- ending a TLS session ------------------------------------------------------------------

@pytest.mark.parametrize("starttls", [False, True], ids=["implicit", "starttls"])
def test_quit_inside_tls_sends_close_notify(tls_mx, certs, starttls):
    """RFC 8446 §6.1: each side sends close_notify before closing its write
    side.  Without it the client cannot tell the 221 from a truncation, and
    `openssl s_client` ends with "unexpected eof while reading", status 1."""
    p = tls_mx
    if starttls:
        c = TLSConn(p.port())
        c.start()
        c.starttls(verifying(certs["mx"]), HOSTNAME, suppress_ragged_eofs=False)
    else:
        c = tls_connect(p.tls_port, verifying(certs["mx"]), HOSTNAME, suppress_ragged_eofs=False)
        c.greeting()
    with c:
        c.ehlo()
        c.expect("QUIT", 221)
        assert c.buf == b""
        c.sock.settimeout(10)
        try:
            rest = c.sock.recv(100)
        except ssl.SSLEOFError as e:
            pytest.fail(f"server closed the TCP connection without TLS close_notify: {e}")
        assert rest == b""
    sc = s_client(p.port() if starttls else p.tls_port, starttls=starttls,
                  input="EHLO client.example.test\nQUIT\n")
    assert sc.replies[-1].startswith("221"), sc
    assert "unexpected eof" not in sc.all and sc.rc == 0, sc
