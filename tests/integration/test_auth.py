"""Authentication (posthorn.conf(5) `auth`; RFC 4954): which mechanisms EHLO offers
before and after TLS, PLAIN and LOGIN through smtplib over STARTTLS and
implicit TLS, SCRAM-SHA-256 through the real gsasl client and through a
client written here (correct, tampered and malformed proofs, the server's
signature checked), curl's SASL, anonymous access, sender binding, the
local-sender rule, authorization identities, cancelled exchanges (RSS
stable), AUTH out of sequence, brute-force throttling and lockout, the
Received: header and the log (never a password).

Every client binds its own 127.0.0.x source address where failures are
involved, so that the growing 535 delays of one test do not slow another.
"""

import os
import smtplib
import ssl
import subprocess
import time

import pytest

from authutil import (SLOW, SLOW_ITERATIONS, SLOW_PW, ScramClient, b64, client_context,
                      is_closed, plain_response, read_until_closed, reply_waiting, scram_login,
                      starttls, unb64, users_line, wrap)
from conftest import DEFAULT_USERS, run_cli
from helpers import (CLIENT_HELO, HOST, SMTPConn, ehlo_keywords, free_port, sanitizer_report,
                     send_message, split_message, vm_rss_kb)

GSASL = "/usr/bin/gsasl"
CURL = "/usr/bin/curl"

BOB, BOB_PW = "bob@example.test", DEFAULT_USERS["bob@example.test"]
CAROL, CAROL_PW = "carol@example.test", DEFAULT_USERS["carol@example.test"]
DAVE, DAVE_PW = "dave@example.test", DEFAULT_USERS["dave@example.test"]
ALICE, ALICE_PW = "alice@example.org", DEFAULT_USERS["alice@example.org"]

# Wrong passwords the tests try; none may ever reach the log either.
WRONG_PWS = ("wrong-Guess-77", "Tr0ub4dor&3-wrong", "zz-not-it-zz", "hunter2-nope")

# The message smtplib sends after logging in.
MSG = ("From: {frm}\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n{body}\r\n")


# -- fixtures and small helpers -----------------------------------------------

@pytest.fixture(scope="session")
def cert(posthorn_bin, tmp_path_factory):
    """A self-signed certificate for the IP address 127.0.0.1 (so that
    Python's ssl, GnuTLS in gsasl and curl all pass their name checks)."""
    d = tmp_path_factory.mktemp("cert")
    res = run_cli(posthorn_bin, ["cert", "new", "--hostname", HOST, "--out", str(d)])
    assert res.returncode == 0, f"cert new: {res.returncode} {res.stderr}"
    crt, key = d / f"{HOST}.crt", d / f"{HOST}.key"
    assert crt.is_file() and key.is_file(), os.listdir(d)
    return {"crt": str(crt), "key": str(key)}


@pytest.fixture(scope="session")
def ctx(cert):
    return client_context(cert["crt"])


def close_sessions(p):
    """QUIT every client connection still open and wait until the server has
    closed it, so that no session is alive when the daemon gets SIGTERM.
    (posthorn's shutdown of a live TLS session is not what these tests are
    about; see the report on the SIGTERM path.)"""
    for c in list(p.conns):
        try:
            if isinstance(c, smtplib.SMTP):
                if c.sock is not None:
                    c.quit()
            elif not c.closed:
                c.send("QUIT\r\n")
                read_until_closed(c, timeout=5)
        except (OSError, AssertionError, smtplib.SMTPException, ssl.SSLError):
            pass
        try:
            c.close()
        except OSError:
            pass


@pytest.fixture
def ph(posthorn):
    """conftest's posthorn factory; at the end every client session is
    closed cleanly before conftest stops the daemons."""
    made = []

    def make(*args, **kw):
        p = posthorn(*args, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        if p.running():
            close_sessions(p)


def submission(cert, tls_port=None, anonymous=False, auth=(), tls=()):
    """Server spec for conftest's factory: TLS configured (STARTTLS on the
    plain port; implicit TLS on tls_port), an auth block with anonymous and
    the extra auth directives given."""
    lines = []
    if tls_port:
        lines.append(f"listen {HOST}:{tls_port} tls")
    lines += ["tls {", f"    certificate {cert['crt']}", f"    key {cert['key']}"]
    lines += ["    " + t for t in tls] + ["}"]
    lines += ["auth {", f"    anonymous {'yes' if anonymous else 'no'}"]
    lines += ["    " + a for a in auth] + ["}"]
    return {"anonymous": None, "extra": "\n".join(lines)}


def start_sub(factory, cert, implicit=False, auth=(), with_mx=False, mx_auth=(), **kw):
    """A daemon with a submission server `sub` (and optionally the anonymous
    `mx`, with the extra auth directives mx_auth); returns (daemon,
    implicit TLS port or None)."""
    tls_port = free_port() if implicit else None
    servers = {}
    if with_mx:
        servers["mx"] = {"anonymous": None, "extra": "\n".join(
            ["auth {", "    anonymous yes"] + ["    " + a for a in mx_auth] + ["}"])}
    servers["sub"] = submission(cert, tls_port, auth=auth)
    return factory(servers=servers, **kw), tls_port


def smtp_client(p, name="sub", source="127.0.0.1", tls_port=None, ctx=None, timeout=15):
    """smtplib client: plain port (SMTP) or implicit TLS (SMTP_SSL)."""
    if tls_port:
        s = smtplib.SMTP_SSL(HOST, tls_port, local_hostname=CLIENT_HELO, timeout=timeout,
                             context=ctx, source_address=(source, 0))
    else:
        s = smtplib.SMTP(HOST, p.port(name), local_hostname=CLIENT_HELO, timeout=timeout,
                         source_address=(source, 0))
    p.conns.append(s)
    return s


def raw(p, name="sub", source=None, ctx=None, tls_port=None, ehlo=True, timeout=15):
    """A raw SMTPConn, greeted and past EHLO; with ctx, inside TLS (STARTTLS,
    or implicit TLS on tls_port), EHLO said there too unless ehlo=False."""
    if tls_port:
        c = SMTPConn(tls_port, source=source, timeout=timeout)
        p.conns.append(c)
        wrap(c, ctx)
        c.start(ehlo=ehlo)
        return c
    c = p.connect(name, source=source, timeout=timeout)
    c.start()
    if ctx is not None:
        starttls(c, ctx)
        if ehlo:
            c.ehlo()
    return c


def login_plain(c, user, pw, authzid=""):
    return c.cmd("AUTH PLAIN " + plain_response(user, pw, authzid))


def received(msg):
    """The newest Received: field (ours) of a delivered message, unfolded."""
    fields, _ = split_message(msg)
    vals = [v for n, v in fields if n.lower() == "received"]
    assert vals, f"no Received: header in {msg[:500]!r}"
    return b" ".join(vals[0].split()).decode()


def auth_events(p, **match):
    return [e for e in p.events("auth") if all(e.get(k) == v for k, v in match.items())]


def secrets_of(passwords, users=(BOB, CAROL, DAVE, ALICE)):
    """Every form of a password a careless server could log: the password,
    its base64 (LOGIN), and the base64 PLAIN message with each user."""
    out = []
    for pw in passwords:
        out += [pw, b64(pw)]
        for u in users:
            out.append(plain_response(u, pw))
    return out


def assert_log_clean(p, extra=()):
    """No password (of the standard users, the wrong ones tried, or extra
    given) and no SASL payload appears anywhere in the daemon's log."""
    log = "".join(r.log() for r in p.runs)
    for s in secrets_of(list(DEFAULT_USERS.values()) + list(WRONG_PWS)) + list(extra):
        assert s not in log, f"secret {s!r} appears in the daemon's log:\n{log}"


def send_mail(s, sender, rcpt, subject):
    s.sendmail(sender, [rcpt], MSG.format(frm=sender, to=rcpt, subject=subject, body="hello"))


# -- what EHLO offers, 538, 504, 530 before TLS -------------------------------

def test_mechanisms_offered_only_when_usable(ph, cert, ctx):
    tls_port = free_port()
    p = ph(servers={
        "sub": submission(cert, tls_port),
        "strict": submission(cert, tls=["require yes"]),
        "open": submission(cert, auth=["plaintext-requires-tls no"]),
        "scramonly": submission(cert, auth=["mechanisms scram-sha-256"]),
    })

    # default policy, before TLS: nothing (every mechanism sends the password
    # or, SCRAM-SHA-256, what an eavesdropper can test guesses against)
    c = raw(p, "sub")
    kw = ehlo_keywords(c.ehlo())
    assert "STARTTLS" in kw
    assert "AUTH" not in kw, kw
    for line in ("AUTH PLAIN " + plain_response(BOB, BOB_PW), "AUTH PLAIN",
                 "AUTH LOGIN " + b64(BOB), "AUTH LOGIN", "auth plain",
                 "AUTH SCRAM-SHA-256 " + ScramClient(BOB, BOB_PW).first(), "AUTH SCRAM-SHA-256"):
        r = c.cmd(line)
        assert r.first == "538 5.7.11 Encryption required for requested authentication mechanism", \
            (line, r.raw)
    assert c.cmd("AUTH CRAM-MD5").first.startswith("504 5.5.4"), "unknown mechanism"
    assert c.cmd("AUTH GSSAPI").first.startswith("504 5.5.4")
    assert c.cmd("AUTH").code == 501
    # nothing of that authenticated anybody
    assert c.cmd(f"MAIL FROM:<{BOB}>").first == "530 5.7.0 Authentication required"
    # after STARTTLS: all three, no STARTTLS
    starttls(c, ctx)
    kw = ehlo_keywords(c.ehlo())
    assert "STARTTLS" not in kw
    assert sorted(kw.get("AUTH", [])) == ["LOGIN", "PLAIN", "SCRAM-SHA-256"], kw
    c.expect("QUIT", 221)

    # implicit TLS: all three at once
    c = raw(p, "sub", ctx=ctx, tls_port=tls_port, ehlo=False)
    kw = ehlo_keywords(c.ehlo())
    assert "STARTTLS" not in kw
    assert sorted(kw.get("AUTH", [])) == ["LOGIN", "PLAIN", "SCRAM-SHA-256"], kw

    # tls require yes: no AUTH at all before TLS
    c = raw(p, "strict")
    kw = ehlo_keywords(c.ehlo())
    assert "STARTTLS" in kw and "AUTH" not in kw, kw
    r = c.cmd("AUTH SCRAM-SHA-256 " + ScramClient(BOB, BOB_PW).first())
    assert r.first == "530 5.7.0 Must issue a STARTTLS command first", r.raw
    starttls(c, ctx)
    kw = ehlo_keywords(c.ehlo())
    assert sorted(kw.get("AUTH", [])) == ["LOGIN", "PLAIN", "SCRAM-SHA-256"], kw
    assert login_plain(c, BOB, BOB_PW).first == "235 2.7.0 Authentication successful"

    # plaintext-requires-tls no: PLAIN and LOGIN offered and usable before TLS
    c = raw(p, "open")
    kw = ehlo_keywords(c.ehlo())
    assert sorted(kw.get("AUTH", [])) == ["LOGIN", "PLAIN", "SCRAM-SHA-256"], kw
    assert login_plain(c, CAROL, CAROL_PW).first == "235 2.7.0 Authentication successful"

    # mechanisms scram-sha-256: PLAIN is not offered even inside TLS
    c = raw(p, "scramonly", ctx=ctx, ehlo=False)
    kw = ehlo_keywords(c.ehlo())
    assert kw.get("AUTH") == ["SCRAM-SHA-256"], kw
    assert login_plain(c, BOB, BOB_PW).first.startswith("504 5.5.4")
    assert scram_login(c, BOB, BOB_PW).first == "235 2.7.0 Authentication successful"

    assert [e["tls"] for e in auth_events(p, result="ok")] == ["yes", "no", "yes"]
    assert_log_clean(p)


# -- smtplib login() with PLAIN and LOGIN over STARTTLS and implicit TLS ------

@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_smtplib_login_over_tls(ph, cert, ctx, mode, mech):
    p, tls_port = start_sub(ph, cert, implicit=(mode == "implicit"))
    s = smtp_client(p, tls_port=tls_port, ctx=ctx)
    if mode == "starttls":
        s.ehlo()
        assert s.has_extn("starttls")
        assert "auth" not in s.esmtp_features, s.esmtp_features
        code, _ = s.starttls(context=ctx)
        assert code == 220
    code, _ = s.ehlo()
    assert code == 250
    offered = s.esmtp_features.get("auth", "").split()
    assert mech in offered, offered
    s.esmtp_features["auth"] = mech           # make login() use this mechanism
    code, text = s.login(BOB, BOB_PW)
    assert (code, text) == (235, b"2.7.0 Authentication successful")
    send_mail(s, BOB, CAROL, f"{mode} {mech}")
    s.quit()

    msg = p.wait_messages(CAROL, 1)[0]
    rcv = received(msg)
    assert f"(authenticated as {BOB})" in rcv, rcv
    assert " with ESMTPSA " in rcv, rcv
    assert "(using TLSv1." in rcv, rcv
    ev = auth_events(p, result="ok")
    assert len(ev) == 1, p.log
    assert ev[0]["mechanism"] == mech and ev[0]["user"] == BOB and ev[0]["tls"] == "yes", ev
    assert ev[0]["client"] == "127.0.0.1"
    assert_log_clean(p)


def test_wrong_password_gets_535(ph, cert, ctx):
    p, tls_port = start_sub(ph, cert, implicit=True)
    for i, mech in enumerate(["PLAIN", "LOGIN"]):
        s = smtp_client(p, source=f"127.0.0.{11 + i}", tls_port=tls_port, ctx=ctx)
        s.ehlo()
        s.esmtp_features["auth"] = mech
        with pytest.raises(smtplib.SMTPAuthenticationError) as ei:
            s.login(DAVE if mech == "PLAIN" else CAROL, WRONG_PWS[i])
        assert ei.value.smtp_code == 535
        assert ei.value.smtp_error == b"5.7.8 Authentication credentials invalid"
        # not authenticated: the submission server still wants a login
        code, text = s.mail(BOB)
        assert (code, text) == (530, b"5.7.0 Authentication required")
        s.quit()
    # an unknown user gets exactly the same answer
    c = raw(p, "sub", source="127.0.0.13", ctx=ctx)
    r = login_plain(c, "nobody@example.test", WRONG_PWS[2])
    assert r.first == "535 5.7.8 Authentication credentials invalid", r.raw
    fails = auth_events(p, result="fail")
    assert [(e["mechanism"], e["user"], e["tls"]) for e in fails] == [
        ("PLAIN", DAVE, "yes"), ("LOGIN", CAROL, "yes"), ("PLAIN", "nobody@example.test", "yes")]
    assert not auth_events(p, result="ok")
    assert_log_clean(p)


# -- SCRAM-SHA-256 with the real client: gsasl --------------------------------

def gsasl(port, user, password, *opts, timeout=60):
    argv = [GSASL, "--smtp", "--mechanism", "SCRAM-SHA-256", "-a", user, "-p", password]
    argv += list(opts) + [HOST, str(port)]
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


def test_gsasl_scram_sha256(ph, cert):
    if not os.access(GSASL, os.X_OK):
        pytest.fail("gsasl is not installed (Debian package gsasl; scripts/install-deps)")
    # plaintext-requires-tls no: SCRAM-SHA-256 before TLS as well
    p, _ = start_sub(ph, cert, auth=["plaintext-requires-tls no"])
    port = p.port("sub")

    # without TLS (as configured here), and it works
    res = gsasl(port, BOB, BOB_PW, "--no-starttls")
    assert res.returncode == 0, f"gsasl failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    assert "235 2.7.0 Authentication successful" in res.stdout, res.stdout
    assert "AUTH SCRAM-SHA-256" in res.stdout
    ev = auth_events(p, result="ok")
    assert [(e["mechanism"], e["user"], e["tls"]) for e in ev] == [("SCRAM-SHA-256", BOB, "no")]

    # a wrong password fails
    res = gsasl(port, BOB, WRONG_PWS[0], "--no-starttls")
    assert res.returncode != 0, res.stdout
    assert "535 5.7.8" in res.stdout, res.stdout
    assert "235 " not in res.stdout
    assert auth_events(p, result="fail", mechanism="SCRAM-SHA-256", user=BOB)

    # over STARTTLS, the certificate checked by GnuTLS.  --no-cb: gsasl 2.2.0
    # with TLS channel-binding data fails on its own side before it sends
    # client-first ("mechanism error: Error authenticating user"; nothing
    # reaches the server) because no -PLUS variant is offered; without
    # channel binding it speaks plain SCRAM-SHA-256 inside TLS.
    res = gsasl(port, CAROL, CAROL_PW, "--starttls", "--no-cb", "--x509-ca-file", cert["crt"])
    assert res.returncode == 0, f"gsasl failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    assert "STARTTLS" in res.stdout and "235 2.7.0 Authentication successful" in res.stdout
    assert "certificate is trusted" in res.stderr, res.stderr
    ev = auth_events(p, result="ok", user=CAROL)
    assert [(e["mechanism"], e["tls"]) for e in ev] == [("SCRAM-SHA-256", "yes")], p.log
    assert_log_clean(p)


# -- SCRAM-SHA-256 by hand: proof, server signature, tampering, channel binding flag ---

def test_scram_by_hand(ph, cert):
    # the exchange itself, in the clear: plaintext-requires-tls no
    p, _ = start_sub(ph, cert, auth=["plaintext-requires-tls no"])

    # the correct proof: 334 v=<ServerSignature> (checked here), then an
    # empty line, then 235
    c = raw(p, source="127.0.0.21")
    sc = ScramClient(BOB, BOB_PW)
    r = c.cmd("AUTH SCRAM-SHA-256 " + sc.first())
    assert r.code == 334, r.raw
    final = sc.final(r.lines[0])
    assert sc.iterations >= 4096 and len(sc.salt) >= 16, sc.server_first
    r = c.cmd(final)
    assert r.code == 334, f"expected the server-final message as a 334 challenge: {r.raw!r}"
    assert unb64(r.lines[0]).startswith(b"v=")
    sc.check_server_final(r.lines[0])
    assert c.cmd("").first == "235 2.7.0 Authentication successful"
    send_message(c, BOB, [CAROL], "Subject: scram\r\n\r\nhi\r\n")
    rcv = received(p.wait_messages(CAROL, 1)[0])
    assert f"(authenticated as {BOB})" in rcv and " with ESMTPA " in rcv, rcv
    assert "(using" not in rcv, rcv

    # without an initial response: 334 with an empty challenge first
    c = raw(p, source="127.0.0.22")
    assert scram_login(c, CAROL, CAROL_PW, initial=False).first.startswith("235 2.7.0")

    # "y,,": the client supports channel binding but thinks the server does
    # not (true: no -PLUS offered) -> accepted (RFC 5802 §6)
    c = raw(p, source="127.0.0.23")
    sc = ScramClient(DAVE, DAVE_PW, cbflag="y")
    r = c.cmd("AUTH SCRAM-SHA-256 " + sc.first())
    assert r.code == 334, r.raw
    r = c.cmd(sc.final(r.lines[0]))
    assert r.code == 334, r.raw
    sc.check_server_final(r.lines[0])
    assert c.cmd("").first.startswith("235 2.7.0")

    # a tampered proof (first byte, last byte): 535
    for i, idx in enumerate((0, 31)):
        c = raw(p, source=f"127.0.0.{24 + i}")
        r = scram_login(c, BOB, BOB_PW, tamper=idx)
        assert r.first == "535 5.7.8 Authentication credentials invalid", r.raw
        assert c.cmd(f"MAIL FROM:<{BOB}>").first == "530 5.7.0 Authentication required"

    # the proof of a wrong password: 535
    c = raw(p, source="127.0.0.26")
    assert scram_login(c, ALICE, WRONG_PWS[1]).first.startswith("535 5.7.8")

    # a right proof over another nonce than the server's: 535
    c = raw(p, source="127.0.0.27")
    sc = ScramClient(CAROL, CAROL_PW)
    r = c.cmd("AUTH SCRAM-SHA-256 " + sc.first())
    r = c.cmd(sc.final(r.lines[0], nonce=sc.cnonce + "forgedServerPart"))
    assert r.first.startswith("535 5.7.8"), r.raw

    # c= that does not repeat the gs2 header of client-first ("n,," -> "y,,")
    c = raw(p, source="127.0.0.28")
    sc = ScramClient(DAVE, DAVE_PW)
    r = c.cmd("AUTH SCRAM-SHA-256 " + sc.first())
    r = c.cmd(sc.final(r.lines[0], cbind_header="y,,"))
    assert r.first.startswith("535 5.7.8"), r.raw

    # "p=tls-unique": channel binding the server never offered -> refused
    c = raw(p, source="127.0.0.29")
    sc = ScramClient(DAVE, DAVE_PW, cbflag="p=tls-unique")
    r = c.cmd("AUTH SCRAM-SHA-256 " + sc.first())
    assert r.code == 535, f"p= without a -PLUS mechanism must fail: {r.raw!r}"

    # anything but an empty line after the server-final message: aborted
    c = raw(p, source="127.0.0.30")
    sc = ScramClient(BOB, BOB_PW)
    r = c.cmd("AUTH SCRAM-SHA-256 " + sc.first())
    r = c.cmd(sc.final(r.lines[0]))
    assert r.code == 334, r.raw
    assert c.cmd(b64("extra")).first.startswith("501 5.7.0"), "non-empty answer to v="
    assert c.cmd(f"MAIL FROM:<{BOB}>").first == "530 5.7.0 Authentication required"

    # an unknown user: server-first looks like a real one (same salt size,
    # iteration count) and stays the same between attempts (no enumeration)
    firsts = []
    for i in range(2):
        c = raw(p, source=f"127.0.0.{31 + i}")
        sc = ScramClient("ghost@example.test", WRONG_PWS[3])
        r = c.cmd("AUTH SCRAM-SHA-256 " + sc.first())
        assert r.code == 334, r.raw
        r = c.cmd(sc.final(r.lines[0]))
        assert r.first.startswith("535 5.7.8"), r.raw
        firsts.append((sc.salt, sc.iterations))
    real = ScramClient(BOB, BOB_PW)
    c = raw(p, source="127.0.0.33")
    r = c.cmd("AUTH SCRAM-SHA-256 " + real.first())
    real.parse_server_first(r.lines[0])
    assert firsts[0] == firsts[1], "an unknown user's salt changes between attempts"
    assert len(firsts[0][0]) == len(real.salt) and firsts[0][1] == real.iterations
    assert c.cmd("*").first == "501 5.7.0 Authentication aborted"

    oks = [(e["user"], e["mechanism"]) for e in auth_events(p, result="ok")]
    assert oks == [(BOB, "SCRAM-SHA-256"), (CAROL, "SCRAM-SHA-256"), (DAVE, "SCRAM-SHA-256")]
    assert len(auth_events(p, result="fail")) >= 7
    assert_log_clean(p)


def test_unknown_user_shows_the_iterations_of_real_ones(posthorn, cert):
    # every user here has 6,000 iterations, none the default 4,096: a name
    # that is nobody's must show the same count (and salt size) in SCRAM's
    # server-first, or the count alone would tell who exists
    p, _ = start_sub(posthorn, cert, auth=["plaintext-requires-tls no"], start=False)
    with open(p.users_file, "w") as f:
        f.write(users_line(BOB, BOB_PW, 6000))
        f.write(users_line("admin@example.test", "admin-Secret-1", 6000))
    p.start()
    shown = []
    for i, name in enumerate(["ghost@example.test", "GHOST@example.test", BOB]):
        c = raw(p, source=f"127.0.0.{34 + i}")
        sc = ScramClient(name, BOB_PW if name == BOB else WRONG_PWS[3])
        r = c.cmd("AUTH SCRAM-SHA-256 " + sc.first())
        assert r.code == 334, r.raw
        r = c.cmd(sc.final(r.lines[0]))
        if name == BOB:
            assert r.code == 334, r.raw
            assert c.cmd("").first.startswith("235 2.7.0")
        else:
            assert r.first.startswith("535 5.7.8"), r.raw
        shown.append((sc.iterations, len(sc.salt), sc.salt))
    assert shown[0] == shown[1], "an unknown user's server-first changes between attempts"
    assert shown[0][:2] == shown[2][:2] == (6000, 16), shown
    assert shown[0][2] != shown[2][2], "an unknown user got a real user's salt"
    assert [e["user"] for e in auth_events(p, result="ok")] == [BOB]
    assert_log_clean(p)


# -- curl's SASL --------------------------------------------------------------

def curl(url, *opts, timeout=60):
    argv = [CURL, "-sS", "--max-time", "30", "--noproxy", "*"] + list(opts) + [url]
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_curl_sasl(ph, cert, tmp_path):
    # Debian 12's curl 7.88 is built without GSASL, so it has no SCRAM;
    # SCRAM-SHA-256 with a real client is covered by gsasl above.  Here:
    # curl's PLAIN over STARTTLS (--ssl-reqd) and LOGIN over implicit TLS.
    p, tls_port = start_sub(ph, cert, implicit=True)
    body = tmp_path / "msg.txt"
    body.write_bytes(b"From: bob@example.test\r\nTo: carol@example.test\r\n"
                     b"Subject: via curl\r\n\r\nhello from curl\r\n")
    common = ["--cacert", cert["crt"], "--mail-from", BOB, "--mail-rcpt", CAROL,
              "--upload-file", str(body)]
    res = curl(f"smtp://{HOST}:{p.port('sub')}/{CLIENT_HELO}", "--ssl-reqd",
               "--interface", "127.0.0.41", "--user", f"{BOB}:{BOB_PW}",
               "--login-options", "AUTH=PLAIN", *common)
    assert res.returncode == 0, f"curl (PLAIN, STARTTLS) failed {res.returncode}: {res.stderr}"
    res = curl(f"smtps://{HOST}:{tls_port}/{CLIENT_HELO}",
               "--interface", "127.0.0.42", "--user", f"{BOB}:{BOB_PW}",
               "--login-options", "AUTH=LOGIN", *common)
    assert res.returncode == 0, f"curl (LOGIN, smtps) failed {res.returncode}: {res.stderr}"
    msgs = p.wait_messages(CAROL, 2)
    for m in msgs:
        rcv = received(m)
        assert f"(authenticated as {BOB})" in rcv and " with ESMTPSA " in rcv, rcv
    # a wrong password: curl's "login denied"
    res = curl(f"smtp://{HOST}:{p.port('sub')}/{CLIENT_HELO}", "--ssl-reqd",
               "--interface", "127.0.0.43", "--user", f"{BOB}:{WRONG_PWS[2]}",
               "--login-options", "AUTH=PLAIN", *common)
    assert res.returncode == 67, f"curl with a wrong password: {res.returncode} {res.stderr}"
    ev = [(e["mechanism"], e["result"], e["tls"], e["client"]) for e in auth_events(p)]
    assert ev == [("PLAIN", "ok", "yes", "127.0.0.41"), ("LOGIN", "ok", "yes", "127.0.0.42"),
                  ("PLAIN", "fail", "yes", "127.0.0.43")], ev
    p.wait_messages(CAROL, 2)
    assert_log_clean(p)


# -- anonymous off / on -------------------------------------------------------

def test_anonymous_off_and_on(ph, cert, ctx):
    p, _ = start_sub(ph, cert, with_mx=True)
    # anonymous no: MAIL needs a login, before and after STARTTLS
    c = raw(p, "sub", source="127.0.0.51")
    assert c.cmd("MAIL FROM:<stranger@remote.example>").first == \
        "530 5.7.0 Authentication required"
    assert c.cmd("MAIL FROM:<>").first == "530 5.7.0 Authentication required"
    starttls(c, ctx)
    c.ehlo()
    assert c.cmd(f"MAIL FROM:<{BOB}>").first == "530 5.7.0 Authentication required"
    assert c.cmd(f"RCPT TO:<{CAROL}>").code == 503
    assert login_plain(c, BOB, BOB_PW).code == 235
    send_message(c, BOB, [CAROL], "Subject: after login\r\n\r\nx\r\n")
    # anonymous yes: mail from outside to a local user needs no login
    c = raw(p, "mx", source="127.0.0.52")
    send_message(c, "stranger@remote.example", [DAVE], "Subject: anon\r\n\r\nx\r\n")
    rcv = received(p.wait_messages(DAVE, 1)[0])
    assert "authenticated" not in rcv and " with ESMTP " in rcv, rcv
    p.wait_messages(CAROL, 1)


# -- sender binding -----------------------------------------------------------

ALIASES = ("info@example.test: bob@example.test\n"
           "sales@example.test: carol@example.test\n"
           "team@example.test: bob@example.test, carol@example.test\n")


def test_sender_binding(ph, cert, ctx):
    p = ph(aliases=ALIASES, servers={
        "sub": submission(cert),
        "loose": submission(cert, auth=["sender-must-match no"]),
    })
    c = raw(p, "sub", source="127.0.0.61", ctx=ctx)
    assert login_plain(c, BOB, BOB_PW).code == 235
    refused = f"553 5.7.1 Sender address rejected: not owned by user {BOB}"
    for sender, ok in [(BOB, True), ("Bob@Example.TEST", True),
                       ("info@example.test", True),         # alias that delivers to bob
                       ("team@example.test", True),         # ... to bob among others
                       ("", True),                          # null sender: bounces
                       (CAROL, False), ("sales@example.test", False), (ALICE, False),
                       ("bob@example.org", False), ("bob@remote.example", False),
                       ("nobody@example.test", False)]:
        r = c.cmd(f"MAIL FROM:<{sender}>")
        if ok:
            assert r.first == "250 2.1.0 Ok", (sender, r.raw)
            c.expect("RSET", 250)
        else:
            assert r.first == refused, (sender, r.raw)
    # the session goes on: a message as the alias is delivered
    send_message(c, "info@example.test", [DAVE], "Subject: as info\r\n\r\nx\r\n")
    msg = p.wait_messages(DAVE, 1)[0]
    assert b"Return-Path: <info@example.test>" in msg, msg[:400]
    rejects = [e for e in p.events("reject") if e.get("reason") == "sender"]
    assert len(rejects) == 6, p.log
    # sender-must-match no: the user may use any sender
    c = raw(p, "loose", source="127.0.0.62", ctx=ctx)
    assert login_plain(c, BOB, BOB_PW).code == 235
    assert c.cmd(f"MAIL FROM:<{CAROL}>").first == "250 2.1.0 Ok"


def test_local_senders_must_authenticate(ph, cert):
    # mx is anonymous, sub requires a login: on mx a local domain's address
    # as sender is forged
    p, _ = start_sub(ph, cert, with_mx=True, mx_auth=["plaintext-requires-tls no"])
    c = raw(p, "mx", source="127.0.0.71")
    msg = "553 5.7.1 Sender address rejected: local senders must authenticate"
    for sender in (BOB, "BOB@EXAMPLE.TEST", ALICE, "nobody@example.test",
                   "postmaster@example.org"):
        assert c.cmd(f"MAIL FROM:<{sender}>").first == msg, sender
    for sender in ("stranger@remote.example", "", "bob@example.test.remote.example"):
        r = c.cmd(f"MAIL FROM:<{sender}>")
        assert r.code == 250, (sender, r.raw)
        c.expect("RSET", 250)
    # a user who logs in on mx (no TLS there, so plaintext-requires-tls no)
    # may send as themselves
    assert scram_login(c, BOB, BOB_PW).code == 235
    send_message(c, BOB, [CAROL], "Subject: auth on mx\r\n\r\nx\r\n")
    p.wait_messages(CAROL, 1)

    # no server requires a login: local senders are fine on the anonymous one
    q = ph(anonymous=True)
    c = raw(q, "mx", source="127.0.0.72")
    send_message(c, BOB, [CAROL], "Subject: local sender\r\n\r\nx\r\n")
    q.wait_messages(CAROL, 1)


# -- authorization identity ---------------------------------------------------

def test_authzid_of_another_user_is_refused(ph, cert, ctx):
    users = dict(DEFAULT_USERS, **{"attacker@example.test": "att-Secret-9",
                                   "victim@example.test": "vic-Secret-8"})
    p, _ = start_sub(ph, cert, users=users)
    att, att_pw = "attacker@example.test", "att-Secret-9"
    for i, authzid in enumerate(["victim", "victim@example.test", "VICTIM@example.test"]):
        c = raw(p, source=f"127.0.0.{81 + i}", ctx=ctx)
        r = login_plain(c, att, att_pw, authzid=authzid)
        assert r.first == "535 5.7.8 Authentication credentials invalid", (authzid, r.raw)
        assert c.cmd("MAIL FROM:<victim@example.test>").first == \
            "530 5.7.0 Authentication required"
    # the same through SCRAM's a=
    c = raw(p, source="127.0.0.84", ctx=ctx)
    sc = ScramClient(att, att_pw, authzid="victim@example.test")
    r = c.cmd("AUTH SCRAM-SHA-256 " + sc.first())
    if r.code == 334:
        r = c.cmd(sc.final(r.lines[0]))
    assert r.first.startswith("535 5.7.8"), r.raw
    fails = auth_events(p, result="fail")
    assert len(fails) == 4, p.log
    assert not auth_events(p, result="ok")
    # an authzid equal to the user's own name is no escalation: accepted,
    # and the user is still only themselves
    c = raw(p, source="127.0.0.85", ctx=ctx)
    assert login_plain(c, att, att_pw, authzid=att).first.startswith("235 2.7.0")
    assert c.cmd("MAIL FROM:<victim@example.test>").first.startswith("553 5.7.1")
    ok = auth_events(p, result="ok")
    assert [e["user"] for e in ok] == [att]
    assert_log_clean(p, extra=secrets_of(["att-Secret-9", "vic-Secret-8"],
                                         users=[att, "victim@example.test"]))


# -- cancelled exchanges, 1000 times: nothing leaks ---------------------------

def test_auth_cancel_and_restart_1000_times(ph, cert, ctx):
    # a small ASan quarantine, so that RSS shows what the daemon keeps
    p, _ = start_sub(ph, cert, asan_options={"quarantine_size_mb": "1"})
    c = raw(p, source="127.0.0.91", ctx=ctx, timeout=30)

    def rounds(n):
        """n rounds, pipelined: SCRAM (with client-first) cancelled at the
        server-first, PLAIN cancelled at its empty challenge, LOGIN cancelled
        at the password prompt."""
        out = []
        for _ in range(n):
            out += ["AUTH SCRAM-SHA-256 " + ScramClient(BOB, BOB_PW).first(), "*",
                    "AUTH PLAIN", "*", "AUTH LOGIN " + b64(BOB), "*"]
        c.send("".join(line + "\r\n" for line in out))
        for _ in range(n):
            r = c.reply()
            assert r.code == 334 and unb64(r.lines[0]).startswith(b"r="), r.raw
            assert c.reply().first == "501 5.7.0 Authentication aborted"
            r = c.reply()
            assert r.code == 334 and r.lines == [""], r.raw
            assert c.reply().first == "501 5.7.0 Authentication aborted"
            r = c.reply()
            assert r.code == 334 and unb64(r.lines[0]) == b"Password:", r.raw
            assert c.reply().first == "501 5.7.0 Authentication aborted"

    rounds(200)                      # warm-up: lazily allocated things exist now,
                                     # and the 1 MB quarantine is full
    time.sleep(0.2)
    before = vm_rss_kb(p.pid)
    for _ in range(20):
        rounds(50)
    time.sleep(0.2)
    after = vm_rss_kb(p.pid)
    # the session is alive and well: cancelling is not an error, and a login works
    assert login_plain(c, BOB, BOB_PW).first == "235 2.7.0 Authentication successful"
    growth = after - before
    print(f"VmRSS before {before} KiB, after 3000 cancelled exchanges {after} KiB")
    assert growth < 512, f"RSS grew by {growth} KiB over 3000 cancelled exchanges " \
                          f"({before} -> {after} KiB)"
    assert not auth_events(p, result="fail")
    assert_log_clean(p)


# -- AUTH out of sequence -----------------------------------------------------

def test_auth_twice_or_during_transaction_503(ph, cert, ctx):
    p, _ = start_sub(ph, cert, with_mx=True, mx_auth=["plaintext-requires-tls no"])
    c = raw(p, "sub", source="127.0.0.101", ctx=ctx)
    assert login_plain(c, BOB, BOB_PW).code == 235
    for line in ("AUTH PLAIN " + plain_response(BOB, BOB_PW), "AUTH LOGIN",
                 "AUTH SCRAM-SHA-256 " + ScramClient(CAROL, CAROL_PW).first()):
        r = c.cmd(line)
        assert r.code == 503 and r.first.startswith("503 5.5.1"), (line, r.raw)
    # still bob, not carol
    assert c.cmd(f"MAIL FROM:<{CAROL}>").first.startswith("553 5.7.1")
    c.expect(f"MAIL FROM:<{BOB}>", 250)
    r = c.cmd("AUTH PLAIN " + plain_response(CAROL, CAROL_PW))
    assert r.code == 503, r.raw

    # during a transaction (anonymous mx: MAIL without login)
    c = raw(p, "mx", source="127.0.0.102")
    c.expect("MAIL FROM:<stranger@remote.example>", 250)
    r = c.cmd("AUTH SCRAM-SHA-256 " + ScramClient(BOB, BOB_PW).first())
    assert r.code == 503 and r.first.startswith("503 5.5.1"), r.raw
    c.expect(f"RCPT TO:<{CAROL}>", 250)
    assert c.cmd("AUTH SCRAM-SHA-256").code == 503
    c.expect("RSET", 250)
    assert scram_login(c, BOB, BOB_PW).code == 235      # allowed again after RSET
    assert [e["user"] for e in auth_events(p, result="ok")] == [BOB, BOB]


# -- brute force: throttling and lockout --------------------------------------

@pytest.mark.exclusive
def test_lockout_and_recovery(ph, cert, ctx):
    p, _ = start_sub(ph, cert, auth=["lockout 5 1m 3s"])
    atk = raw(p, source="127.0.0.7", ctx=ctx, timeout=20)
    delays = []
    for i in range(5):
        t0 = time.monotonic()
        r = login_plain(atk, BOB, f"guess-{i}-{WRONG_PWS[0]}")
        delays.append(time.monotonic() - t0)
        assert r.first == "535 5.7.8 Authentication credentials invalid", (i, r.raw)
    print("delays of the five 535 replies:", ", ".join(f"{d:.3f}s" for d in delays))
    # each failure waits longer than the one before (250 ms x failures, max 3 s)
    assert delays[0] < 0.25, delays
    assert delays[4] >= 1.0, delays
    assert all(b > a for a, b in zip(delays[1:], delays[2:])), delays
    locked_at = time.monotonic()

    # the sixth attempt, even with the right password: 454 and the connection closes
    r = login_plain(atk, BOB, BOB_PW)
    assert r.first.startswith("454 4.7.0 Too many failed authentication attempts; try again in "), \
        r.raw
    secs = int(r.first.split("try again in ")[1].split()[0])
    assert 1 <= secs <= 3, r.raw
    assert is_closed(atk, 5), "connection still open after 454"

    # another address logs in at once, as the same user, with the right password
    ok = raw(p, source="127.0.0.8", ctx=ctx)
    t0 = time.monotonic()
    r = login_plain(ok, BOB, BOB_PW)
    took = time.monotonic() - t0
    assert r.first == "235 2.7.0 Authentication successful", r.raw
    assert took < 0.3, f"127.0.0.8 waited {took:.3f}s for its 235"
    # and a third address's first mistake is not slowed by 127.0.0.7's
    other = raw(p, source="127.0.0.9", ctx=ctx)
    t0 = time.monotonic()
    r = login_plain(other, DAVE, WRONG_PWS[3])
    took = time.monotonic() - t0
    assert r.code == 535 and took < 0.3, (r.raw, took)

    # 127.0.0.7 again while locked: 454 on a new connection too, then closed
    atk2 = raw(p, source="127.0.0.7", ctx=ctx)
    r = atk2.cmd("AUTH SCRAM-SHA-256 " + ScramClient(BOB, BOB_PW).first())
    assert r.first.startswith("454 4.7.0"), r.raw
    assert is_closed(atk2, 5)

    # after the 3 s ban 127.0.0.7 logs in again, without delay
    time.sleep(max(0.0, locked_at + 3.3 - time.monotonic()))
    back = raw(p, source="127.0.0.7", ctx=ctx)
    t0 = time.monotonic()
    r = login_plain(back, BOB, BOB_PW)
    took = time.monotonic() - t0
    assert r.first == "235 2.7.0 Authentication successful", r.raw
    assert took < 0.3, took

    locks = [e for e in p.events("lockout")]
    assert len(locks) == 1 and locks[0]["client"] == "127.0.0.7", p.log
    locked = auth_events(p, result="locked")
    assert [e["client"] for e in locked] == ["127.0.0.7", "127.0.0.7"], p.log
    assert [e["client"] for e in auth_events(p, result="ok")] == ["127.0.0.8", "127.0.0.7"]
    assert_log_clean(p, extra=[f"guess-{i}-{WRONG_PWS[0]}" for i in range(5)])


@pytest.mark.exclusive
def test_failures_per_user_never_lock_the_user_out(ph, cert, ctx):
    # Failures against one user from many addresses slow those attempts
    # down, but lock nobody out: a lockout per name would let anybody lock
    # a user out of their mailbox.
    p, _ = start_sub(ph, cert, auth=["lockout 3 1m 30s"])
    delays = []
    for i in range(4):
        c = raw(p, source=f"127.0.0.{131 + i}", ctx=ctx)
        t0 = time.monotonic()
        r = login_plain(c, DAVE, f"{WRONG_PWS[1]}-{i}")
        delays.append(time.monotonic() - t0)
        assert r.first == "535 5.7.8 Authentication credentials invalid", (i, r.raw)
    print("delays of the four 535 replies:", ", ".join(f"{d:.3f}s" for d in delays))
    assert delays[0] < 0.25 and delays[3] >= 0.9, delays   # the name's count adds delay
    assert not p.events("lockout"), p.log
    # the user, from an address of their own, gets in at once
    c = raw(p, source="127.0.0.135", ctx=ctx)
    t0 = time.monotonic()
    assert login_plain(c, DAVE, DAVE_PW).first == "235 2.7.0 Authentication successful"
    assert time.monotonic() - t0 < 0.3
    assert not auth_events(p, result="locked")
    assert_log_clean(p, extra=[f"{WRONG_PWS[1]}-{i}" for i in range(4)])


# -- the Received: header -----------------------------------------------------

def test_received_auth_no_hides_the_user(ph, cert, ctx):
    p, _ = start_sub(ph, cert, auth=["received-auth no"])
    c = raw(p, source="127.0.0.111", ctx=ctx)
    assert login_plain(c, BOB, BOB_PW).code == 235
    send_message(c, BOB, [CAROL], "Subject: private\r\n\r\nx\r\n")
    rcv = received(p.wait_messages(CAROL, 1)[0])
    assert "authenticated" not in rcv and BOB not in rcv, rcv
    assert " with ESMTPSA " in rcv, rcv          # RFC 3848 still says it was authenticated


# -- SIGTERM while users are logged in ----------------------------------------

def test_sigterm_with_authenticated_sessions(ph, cert, ctx):
    # posthorn(8) SIGNALS: SIGTERM stops cleanly and sessions get 421 4.3.2.  A logged-in
    # user's session, plain (SCRAM, allowed there by plaintext-requires-tls
    # no), after STARTTLS and on implicit TLS, must get it as a proper SMTP
    # reply on its channel (inside TLS where TLS is up), and the daemon must
    # exit 0 with nothing leaked.
    p, tls_port = start_sub(ph, cert, implicit=True, auth=["plaintext-requires-tls no"])
    plain = raw(p, source="127.0.0.141")
    assert scram_login(plain, BOB, BOB_PW).code == 235
    stls = raw(p, source="127.0.0.142", ctx=ctx)
    assert login_plain(stls, CAROL, CAROL_PW).code == 235
    itls = raw(p, source="127.0.0.143", ctx=ctx, tls_port=tls_port)
    assert login_plain(itls, DAVE, DAVE_PW).code == 235
    p.wait_event("auth", result="ok", user=DAVE)

    rc = p.stop()
    got = {}
    for name, c in (("plain", plain), ("starttls", stls), ("implicit", itls)):
        try:
            got[name] = read_until_closed(c, timeout=5)
        except (ssl.SSLError, OSError, AssertionError) as e:
            got[name] = f"{type(e).__name__}: {e}"
    problems = [f"{name} session got {data!r} instead of 421 4.3.2" for name, data in got.items()
                if not (isinstance(data, bytes) and data.startswith(b"421 4.3.2 "))]
    if rc != 0:
        problems.append(f"posthorn exited with status {rc} after SIGTERM")
    report = sanitizer_report(p.log)
    if report:
        problems.append("sanitizer report at exit: " + report[:600])
    assert not problems, "\n".join(problems)


# -- the log: what it says, and never a password ------------------------------

def test_log_never_holds_a_password(ph, cert, ctx):
    p, tls_port = start_sub(ph, cert, implicit=True)
    secret = "Very-Distinctive-Pa55word!"
    p.add_user("eve@example.test", secret)
    p.reload()
    c = raw(p, source="127.0.0.121", ctx=ctx)
    # PLAIN ok; LOGIN step by step ok and wrong; SCRAM wrong; bad base64; cancel
    assert login_plain(c, "eve@example.test", secret).code == 235
    c = raw(p, source="127.0.0.122", ctx=ctx)
    r = c.cmd("AUTH LOGIN")
    assert r.code == 334 and unb64(r.lines[0]) == b"Username:", r.raw
    r = c.cmd(b64("eve@example.test"))
    assert r.code == 334 and unb64(r.lines[0]) == b"Password:", r.raw
    assert c.cmd(b64(secret)).code == 235
    c = raw(p, source="127.0.0.123", tls_port=tls_port, ctx=ctx)
    r = c.cmd("AUTH LOGIN " + b64("eve@example.test"))
    assert c.cmd(b64(secret + "x")).code == 535
    assert c.cmd("AUTH PLAIN !!!notbase64***").first.startswith("501 5.5.2")
    r = c.cmd("AUTH PLAIN")
    assert c.cmd("%%%").first.startswith("501 5.5.2")
    r = c.cmd("AUTH LOGIN")
    assert c.cmd("*").first == "501 5.7.0 Authentication aborted"
    c = raw(p, source="127.0.0.124", ctx=ctx)
    assert scram_login(c, "eve@example.test", secret + "y").code == 535

    # a user name that tries to forge log fields or lines stays inside its value
    c = raw(p, source="127.0.0.125", ctx=ctx)
    forged = "x result=ok user=eve@example.test\r\nevent=auth result=ok"
    assert login_plain(c, forged, secret).first.startswith("535 5.7.8")
    # user names are case-insensitive; the log names the user canonically
    c = raw(p, source="127.0.0.126", ctx=ctx)
    assert login_plain(c, "EVE@Example.TEST", secret).code == 235

    log = p.log
    for s in (secret, secret + "x", secret + "y", b64(secret), b64(secret + "x"),
              plain_response("eve@example.test", secret), "!!!notbase64***", "%%%"):
        assert s not in log, f"{s!r} in the log:\n{log}"
    ev = [(e["result"], e["mechanism"], e["user"], e["tls"]) for e in auth_events(p)
          if e["result"] in ("ok", "fail")]
    assert ev[:4] == [("ok", "PLAIN", "eve@example.test", "yes"),
                      ("ok", "LOGIN", "eve@example.test", "yes"),
                      ("fail", "LOGIN", "eve@example.test", "yes"),
                      ("fail", "SCRAM-SHA-256", "eve@example.test", "yes")], p.log
    assert ev[5] == ("ok", "PLAIN", "eve@example.test", "yes"), p.log
    # the forged name: one line, result=fail, the name escaped in user=
    (line,) = [ln for ln in log.splitlines() if "client=127.0.0.125" in ln and "event=auth" in ln]
    assert line.count("result=") == 1 and " result=fail " in line, line
    assert "\r" not in line and not any(ln.startswith("event=auth") for ln in log.splitlines())
    assert ev[4][0] == "fail" and ev[4][2] != "eve@example.test", ev[4]
    for e in auth_events(p):
        assert e.get("session") and e.get("server") == "sub" and e.get("client"), e["_line"]
    assert_log_clean(p)


# -- the PBKDF2 of PLAIN and LOGIN runs beside the event loop --------------------

@pytest.fixture(scope="module")
def slow_line():
    return users_line(SLOW, SLOW_PW, SLOW_ITERATIONS)


def start_with_slow_user(posthorn, cert, slow_line):
    p, _ = start_sub(posthorn, cert, with_mx=True, start=False)
    with open(p.users_file, "a") as f:
        f.write(slow_line)
    p.start()
    return p


@pytest.mark.exclusive
def test_other_sessions_go_on_while_a_password_is_checked(posthorn, cert, ctx, slow_line):
    p = start_with_slow_user(posthorn, cert, slow_line)
    a = raw(p, ctx=ctx, source="127.0.0.41")
    a.send("AUTH PLAIN " + plain_response(SLOW, SLOW_PW) + "\r\n")
    # while the check runs, the loop greets, answers and takes mail
    b = p.connect("mx", source="127.0.0.42")
    b.start()
    assert b.cmd("NOOP").code == 250
    send_message(b, "someone@elsewhere.test", [BOB], "Subject: meanwhile\r\n\r\nbody\r\n")
    b.expect("QUIT", 221)
    assert not reply_waiting(a), "the other session waited for the password check"
    p.reload()      # the users read again meanwhile: the check has its own copy
    assert a.reply(timeout=60).code == 235
    assert auth_events(p, result="ok", user=SLOW, mechanism="PLAIN")
    # the session goes on where it was: authenticated, mail accepted
    send_message(a, SLOW, [BOB], "Subject: after\r\n\r\nslow but sure\r\n")
    # a wrong password takes the same way (and the same time) to its 535
    c = raw(p, ctx=ctx, source="127.0.0.43")
    assert login_plain(c, SLOW, "zed-wrong", "").code == 535
    assert auth_events(p, result="fail", user=SLOW)
    p.wait_messages(BOB, 2)


@pytest.mark.exclusive
def test_client_gone_during_a_password_check(posthorn, cert, ctx, slow_line):
    p = start_with_slow_user(posthorn, cert, slow_line)
    for i in range(3):
        a = raw(p, ctx=ctx, source="127.0.0.44")
        a.send("AUTH PLAIN " + plain_response(SLOW, SLOW_PW) + "\r\n")
        a.close()
    # the checks finish for nobody; the server goes on, then stops cleanly
    time.sleep(0.2)
    b = raw(p, ctx=ctx, source="127.0.0.45")
    assert login_plain(b, BOB, BOB_PW).code == 235
    a = raw(p, ctx=ctx, source="127.0.0.46")
    a.send("AUTH PLAIN " + plain_response(SLOW, SLOW_PW) + "\r\n")
    assert p.stop() == 0          # SIGTERM with a check under way
    assert not sanitizer_report(p.log), sanitizer_report(p.log)
