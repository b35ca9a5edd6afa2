"""Integrated Kerberos logins: SASL GSSAPI (RFC 4752) against a real MIT
KDC (kdcutil.py: its own realm POSTHORN.TEST on a loopback port).

curl logs in with GSSAPI on smtp://, imap:// and pop3:// after kinit,
with and without TLS; Python's gssapi module drives the raw exchange for
what curl cannot show: a ticket for another service or for a key the
keytab lacks, an expired ticket, a replayed authenticator, a principal
that is no user or whose realm no `realm` line names, a security layer
or an authorization identity the server must refuse, the lockout after
failures, sender-must-match and relaying for a GSSAPI user, `check`'s
words and keytab warnings, a keytab the server cannot read, and run-as.

The daemon runs confined, as always (the keytab and the replay cache in
the spool are used after privileges and seccomp), and reads the KDC's
own krb5.conf (KRB5_CONFIG), as every client here does: /etc/krb5.conf
and the machine's resolver are never used.
"""

import base64
import os
import subprocess
import time

import pytest

from conftest import HOSTNAME, run_cli
from helpers import CLIENT_HELO, HOST, SMTPConn, free_port
from kdcutil import CLOCKSKEW, Kdc

import gssapi  # python3-gssapi, from scripts/install-deps

CURL = "/usr/bin/curl"
REALM = "POSTHORN.TEST"
BOB, CAROL = "bob@example.test", "carol@example.test"


def b64(data):
    return base64.b64encode(data).decode()


def unb64(text):
    return base64.b64decode(text, validate=True)


# -- the realm and the server's keytab ------------------------------------------------

@pytest.fixture(scope="module")
def kdc(tmp_path_factory):
    d = tmp_path_factory.mktemp("kdc")
    k = Kdc(d / "kdc", realm=REALM, domains=(HOSTNAME,))
    try:
        for name in ("bob", "carol", "nobody", f"smtp/{HOSTNAME}", f"imap/{HOSTNAME}",
                     f"pop/{HOSTNAME}", f"ldap/{HOSTNAME}"):
            k.addprinc(name)
        k.users_keytab = str(d / "users.keytab")
        k.ktadd(k.users_keytab, "bob", "carol", "nobody")
        # the server's keys: not ldap/, whose tickets it cannot read
        k.server_keytab = str(d / "posthorn.keytab")
        k.ktadd(k.server_keytab, f"smtp/{HOSTNAME}", f"imap/{HOSTNAME}", f"pop/{HOSTNAME}")
        k.bob_cache = k.kinit("bob", k.users_keytab, ccache=str(d / "bob.ccache"))
        k.nobody_cache = k.kinit("nobody", k.users_keytab, ccache=str(d / "nobody.ccache"))
        yield k
    finally:
        k.stop()


@pytest.fixture(scope="module")
def cert(posthorn_bin, tmp_path_factory):
    """A certificate for the server's hostname (clients connect by that name)."""
    d = tmp_path_factory.mktemp("cert")
    res = run_cli(posthorn_bin, ["cert", "new", "--hostname", HOSTNAME, "--out", str(d)])
    assert res.returncode == 0, res.stderr
    return {"crt": str(d / f"{HOSTNAME}.crt"), "key": str(d / f"{HOSTNAME}.key")}


@pytest.fixture
def krb_env(kdc, monkeypatch):
    """This process's Kerberos (python-gssapi) uses the test realm, as bob."""
    monkeypatch.setenv("KRB5_CONFIG", kdc.krb5_conf)
    monkeypatch.setenv("KRB5CCNAME", kdc.bob_cache)
    monkeypatch.delenv("KRB5_KTNAME", raising=False)
    return kdc


def auth_block(keytab, realms=(f"{REALM} example.test",), extra=()):
    return (["auth {", "    anonymous no", "    mechanisms gssapi plain", f"    keytab {keytab}"]
            + [f"    realm {r}" for r in realms] + ["    " + e for e in extra] + ["}"])


def tls_block(cert):
    return ["tls {", f"    certificate {cert['crt']}", f"    key {cert['key']}", "}"]


def start(posthorn, kdc, cert, realms=(f"{REALM} example.test",), extra=(), keytab=None,
          krb5_conf=None, **kw):
    """smtp `sub`, imap `imap`, pop3 `pop`, each with STARTTLS and GSSAPI
    (and PLAIN, inside TLS only)."""
    servers = {}
    for name, proto in (("sub", None), ("imap", "imap"), ("pop", "pop3")):
        lines = ([f"protocol {proto}"] if proto else []) + tls_block(cert) + \
            auth_block(keytab or kdc.server_keytab, realms, extra)
        servers[name] = {"anonymous": None, "extra": "\n".join(lines)}
    p = posthorn(servers=servers, start=False, **kw)
    p.env["KRB5_CONFIG"] = krb5_conf or kdc.krb5_conf
    p.env.pop("KRB5CCNAME", None)
    p.env.pop("KRB5_KTNAME", None)
    p.start()
    return p


@pytest.fixture
def ph(posthorn, kdc, cert, krb_env):
    return start(posthorn, kdc, cert)


# -- a GSSAPI client (RFC 4752 section 3.1) ------------------------------------------

class GssClient:
    """The client's side: context tokens, then the answer to the server's
    security-layer offer (layer, max size 0, authzid)."""

    def __init__(self, service, host=HOSTNAME, layer=1, authzid=b"", mutual=True):
        name = gssapi.Name(f"{service}@{host}", gssapi.NameType.hostbased_service)
        flags = [gssapi.RequirementFlag.integrity]
        if mutual:
            flags.append(gssapi.RequirementFlag.mutual_authentication)
        self.ctx = gssapi.SecurityContext(name=name, usage="initiate", flags=flags)
        self.layer = layer
        self.authzid = authzid
        self.offer = None

    def first(self):
        return self.ctx.step()

    def respond(self, challenge):
        if not self.ctx.complete:
            return self.ctx.step(challenge) or b""
        msg = self.ctx.unwrap(challenge).message
        self.offer = msg
        return self.ctx.wrap(bytes([self.layer, 0, 0, 0]) + self.authzid, False).message


def smtp_gssapi(conn, client, token=None):
    """AUTH GSSAPI with an initial response; the final reply."""
    token = client.first() if token is None else token
    r = conn.cmd(f"AUTH GSSAPI {b64(token)}")
    for _ in range(5):
        if r.code != 334:
            return r
        r = conn.cmd(b64(client.respond(unb64(r.lines[0]))))
    raise AssertionError("too many challenges")


def imap_gssapi(conn, client, tag="a1"):
    conn.send(f"{tag} AUTHENTICATE GSSAPI {b64(client.first())}\r\n")
    for _ in range(5):
        line = conn.readline().decode().rstrip("\r\n")
        if line.startswith("+ ") or line == "+":
            conn.send(b64(client.respond(unb64(line[2:]))) + "\r\n")
        elif line.startswith(tag + " "):
            return line
    raise AssertionError("too many challenges")


def pop3_gssapi(conn, client, initial=True):
    """AUTH GSSAPI, with the first token on the line or (RFC 5034) after
    the server's empty challenge."""
    if initial:
        conn.send(f"AUTH GSSAPI {b64(client.first())}\r\n")
    else:
        conn.send("AUTH GSSAPI\r\n")
        assert conn.readline() == b"+ \r\n"
        conn.send(b64(client.first()) + "\r\n")
    for _ in range(5):
        line = conn.readline().decode().rstrip("\r\n")
        if line.startswith("+ ") or line == "+":
            conn.send(b64(client.respond(unb64(line[2:]))) + "\r\n")
        else:
            return line
    raise AssertionError("too many challenges")


def smtp(p, source=None):
    c = SMTPConn(p.port("sub"), source=source)
    p.conns.append(c)
    assert c.reply().code == 220
    return c


def ehlo_auth(c):
    r = c.cmd(f"EHLO {CLIENT_HELO}")
    assert r.code == 250
    return next((line.split()[1:] for line in r.lines if line.startswith("AUTH ")), [])


def starttls(c, cert):
    import ssl
    assert c.cmd("STARTTLS").code == 220
    ctx = ssl.create_default_context(cafile=cert["crt"])
    c.sock = ctx.wrap_socket(c.sock, server_hostname=HOSTNAME)


def last_auth(p, **match):
    return p.wait_event("auth", **match)


def gss_reason(p, principal):
    ev = p.wait_event("auth-gssapi", principal=principal)
    return ev["_line"].split('reason="', 1)[1].rstrip('"')


# -- curl on each protocol ----------------------------------------------------------

def curl(kdc, *args, timeout=60):
    env = kdc.env(KRB5CCNAME=kdc.bob_cache)
    return subprocess.run([CURL, "-sS", "--login-options", "AUTH=GSSAPI", "-u", ":"]
                          + list(args), capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "starttls"])
def test_curl_gssapi_logs_in_on_smtp_imap_and_pop3(ph, kdc, cert, tmp_path, tls):
    p = ph
    extra = ["--ssl-reqd", "--cacert", cert["crt"]] if tls else []
    yes_no = "yes" if tls else "no"
    # IMAP: the folders of bob's mailbox
    res = curl(kdc, "--connect-to", f"{HOSTNAME}:143:{HOST}:{p.port('imap')}",
               f"imap://{HOSTNAME}/", *extra)
    assert res.returncode == 0, res.stderr
    assert "INBOX" in res.stdout
    last_auth(p, server="imap", result="ok", mechanism="GSSAPI", user=BOB, tls=yes_no)
    # SMTP: a message from bob to carol, delivered
    msg = tmp_path / "msg.txt"
    msg.write_bytes(f"From: {BOB}\r\nTo: {CAROL}\r\nSubject: kerberos {tls}\r\n\r\n"
                    "sent with a ticket\r\n".encode())
    res = curl(kdc, "--connect-to", f"{HOSTNAME}:25:{HOST}:{p.port('sub')}",
               "--mail-from", BOB, "--mail-rcpt", CAROL, "-T", str(msg),
               f"smtp://{HOSTNAME}/{CLIENT_HELO}", *extra)
    assert res.returncode == 0, res.stderr
    last_auth(p, server="sub", result="ok", mechanism="GSSAPI", user=BOB, tls=yes_no)
    msgs = p.wait_messages(CAROL, 1)
    assert b"sent with a ticket" in msgs[0]
    assert f"(authenticated as {BOB})".encode() in msgs[0]
    # POP3: bob's maildrop lists (empty)
    res = curl(kdc, "--connect-to", f"{HOSTNAME}:110:{HOST}:{p.port('pop')}",
               f"pop3://{HOSTNAME}/", *extra)
    assert res.returncode == 0, res.stderr
    last_auth(p, server="pop", result="ok", mechanism="GSSAPI", user=BOB, tls=yes_no)
    assert not [e for e in p.events("auth") if e.get("result") != "ok"]


# -- the mechanism list, before and after TLS ----------------------------------------

def test_gssapi_offered_before_tls_password_mechanisms_only_after(ph, cert):
    c = smtp(ph)
    assert ehlo_auth(c) == ["GSSAPI"]
    starttls(c, cert)
    assert ehlo_auth(c) == ["GSSAPI", "PLAIN"]
    # IMAP: AUTH=GSSAPI beside LOGINDISABLED; POP3: SASL GSSAPI, no USER
    c = SMTPConn(ph.port("imap"))
    ph.conns.append(c)
    c.readline()
    c.send("a1 CAPABILITY\r\n")
    caps = c.readline().decode().split()
    assert "AUTH=GSSAPI" in caps and "LOGINDISABLED" in caps and "AUTH=PLAIN" not in caps
    c = SMTPConn(ph.port("pop"))
    ph.conns.append(c)
    c.readline()
    c.send("CAPA\r\n")
    capa = []
    for _ in range(30):
        line = c.readline().decode().strip()
        if line == ".":
            break
        capa.append(line)
    assert "SASL GSSAPI" in capa and "USER" not in capa, capa


# -- raw exchanges -------------------------------------------------------------------

def test_raw_exchange_with_mutual_authentication_on_each_protocol(ph):
    p = ph
    c = smtp(p)
    ehlo_auth(c)
    client = GssClient("smtp")
    r = smtp_gssapi(c, client)
    assert r.first.startswith("235 2.7.0"), r.raw
    assert client.ctx.complete
    # the offer: "no security layer" only, maximum size 0 (RFC 4752 3.1)
    assert client.offer == b"\x01\x00\x00\x00"
    assert c.cmd(f"MAIL FROM:<{BOB}>").code == 250

    c = SMTPConn(p.port("imap"))
    p.conns.append(c)
    assert c.readline().startswith(b"* OK")
    assert imap_gssapi(c, GssClient("imap")).startswith("a1 OK")

    c = SMTPConn(p.port("pop"))
    p.conns.append(c)
    assert c.readline().startswith(b"+OK")
    assert pop3_gssapi(c, GssClient("pop")).startswith("+OK")
    c.send("QUIT\r\n")        # the maildrop is one session's at a time
    assert c.readline().startswith(b"+OK")
    c = SMTPConn(p.port("pop"))
    p.conns.append(c)
    assert c.readline().startswith(b"+OK")
    assert pop3_gssapi(c, GssClient("pop"), initial=False).startswith("+OK")
    ok = [e["server"] for e in p.events("auth") if e.get("result") == "ok"]
    assert sorted(ok) == ["imap", "pop", "pop", "sub"]


def test_ticket_for_another_service_is_refused(ph):
    p = ph
    c = smtp(p, source="127.0.0.21")
    ehlo_auth(c)
    # a good ticket, but for IMAP: its key is in the keytab, yet this is SMTP
    r = smtp_gssapi(c, GssClient("imap"))
    assert r.first.startswith("535 5.7.8"), r.raw
    reason = gss_reason(p, f"bob@{REALM}")
    assert "imap/" + HOSTNAME in reason and "not for smtp/" + HOSTNAME in reason
    # a ticket for a key the keytab does not hold
    c = smtp(p, source="127.0.0.21")
    ehlo_auth(c)
    r = smtp_gssapi(c, GssClient("ldap"))
    assert r.first.startswith("535 5.7.8"), r.raw
    assert not [e for e in p.events("auth") if e.get("result") == "ok"]


def test_replayed_authenticator_is_refused(ph):
    p = ph
    c = smtp(p, source="127.0.0.22")
    ehlo_auth(c)
    client = GssClient("smtp", mutual=False)
    first = client.first()
    r = smtp_gssapi(c, client, token=first)
    assert r.first.startswith("235"), r.raw
    # the very same AP-REQ on another connection: the replay cache knows it
    c2 = smtp(p, source="127.0.0.22")
    ehlo_auth(c2)
    r2 = c2.cmd(f"AUTH GSSAPI {b64(first)}")
    assert r2.first.startswith("535 5.7.8"), r2.raw
    assert "replay" in gss_reason(p, "").lower()


def test_expired_ticket_is_refused(ph, kdc, tmp_path, monkeypatch):
    p = ph
    cache = kdc.kinit("carol", kdc.users_keytab, lifetime="2s",
                      ccache=str(tmp_path / "carol.ccache"))
    monkeypatch.setenv("KRB5CCNAME", cache)
    client = GssClient("smtp", mutual=False)
    token = client.first()
    # the ticket ends 2s after kinit, and the server forgives CLOCKSKEW
    time.sleep(2 + CLOCKSKEW + 1.5)
    c = smtp(p, source="127.0.0.23")
    ehlo_auth(c)
    r = c.cmd(f"AUTH GSSAPI {b64(token)}")
    assert r.first.startswith("535 5.7.8"), r.raw
    assert "expired" in gss_reason(p, "").lower()


def test_principal_that_is_no_user_is_refused(ph, kdc, monkeypatch):
    p = ph
    monkeypatch.setenv("KRB5CCNAME", kdc.nobody_cache)
    c = smtp(p, source="127.0.0.24")
    ehlo_auth(c)
    r = smtp_gssapi(c, GssClient("smtp"))
    assert r.first.startswith("535 5.7.8"), r.raw
    assert gss_reason(p, f"nobody@{REALM}") == "the principal is no user of this server"
    ev = p.wait_event("auth", result="fail")
    assert ev["user"] == f"nobody@{REALM}" and ev["mechanism"] == "GSSAPI"


def test_principal_of_a_realm_no_realm_line_names_is_refused(posthorn, kdc, cert, krb_env):
    p = start(posthorn, kdc, cert, realms=("OTHER.TEST example.test",))
    c = smtp(p, source="127.0.0.25")
    ehlo_auth(c)
    r = smtp_gssapi(c, GssClient("smtp"))
    assert r.first.startswith("535 5.7.8"), r.raw
    assert gss_reason(p, f"bob@{REALM}") == "the principal is no user of this server"
    # the same ticket on IMAP: NO, and nobody logged in
    c = SMTPConn(p.port("imap"))
    p.conns.append(c)
    c.readline()
    assert imap_gssapi(c, GssClient("imap")).startswith("a1 NO")
    assert not [e for e in p.events("auth") if e.get("result") == "ok"]


def test_security_layer_and_authzid_are_checked(ph):
    p = ph
    # a layer the server did not offer (integrity, 2)
    c = smtp(p, source="127.0.0.26")
    ehlo_auth(c)
    assert smtp_gssapi(c, GssClient("smtp", layer=2)).first.startswith("535"), "layer 2"
    assert gss_reason(p, f"bob@{REALM}") == "a security layer we did not offer"
    # acting for somebody else
    c = smtp(p, source="127.0.0.26")
    ehlo_auth(c)
    r = smtp_gssapi(c, GssClient("smtp", authzid=CAROL.encode()))
    assert r.first.startswith("535"), r.raw
    # the user's own address, or the principal, as authzid is fine
    for authzid in (BOB, f"bob@{REALM}"):
        c = smtp(p, source="127.0.0.26")
        ehlo_auth(c)
        r = smtp_gssapi(c, GssClient("smtp", authzid=authzid.encode()))
        assert r.first.startswith("235"), (authzid, r.raw)


def test_sender_must_match_and_relay_for_a_gssapi_user(ph):
    c = smtp(ph)
    ehlo_auth(c)
    assert smtp_gssapi(c, GssClient("smtp")).code == 235
    r = c.cmd(f"MAIL FROM:<{CAROL}>")
    assert r.first.startswith("553 5.7.1"), r.raw
    assert c.cmd(f"MAIL FROM:<{BOB}>").code == 250
    # and, logged in, bob may relay (relay { authenticated yes }, the default)
    assert c.cmd("RCPT TO:<someone@remote.example>").code == 250
    assert c.cmd("RSET").code == 250
    # without a login, neither
    c = smtp(ph)
    ehlo_auth(c)
    assert c.cmd(f"MAIL FROM:<{BOB}>").first.startswith("530 5.7.0")


def test_failures_lock_the_address_out(posthorn, kdc, cert, krb_env):
    p = start(posthorn, kdc, cert, extra=("lockout 3 1m 1m",))
    source = "127.0.0.27"
    for _ in range(3):
        c = smtp(p, source=source)
        ehlo_auth(c)
        r = c.cmd(f"AUTH GSSAPI {b64(b'not a token at all')}", timeout=15)
        assert r.first.startswith("535 5.7.8"), r.raw
    # locked: even a good ticket is refused, on IMAP too (one table)
    c = smtp(p, source=source)
    ehlo_auth(c)
    r = c.cmd(f"AUTH GSSAPI {b64(GssClient('smtp').first())}")
    assert r.first.startswith("454 4.7.0"), r.raw
    p.wait_event("lockout", client=source)
    # another address is not locked
    c = smtp(p, source="127.0.0.28")
    ehlo_auth(c)
    assert smtp_gssapi(c, GssClient("smtp")).code == 235


def test_check_explains_and_warns_about_the_keytab(posthorn, kdc, cert, krb_env, tmp_path):
    p = start(posthorn, kdc, cert)
    res = run_cli(p.bin, ["check", "-c", p.conf], env=p.env)
    assert res.returncode == 0, res.stderr
    assert (f"integrated Kerberos logins for principals of {REALM} (users of example.test), "
            f"also without TLS (no password crosses), with the key of imap/{HOSTNAME} from "
            f"{kdc.server_keytab}") in res.stdout
    assert "keytab" not in "".join(l for l in res.stdout.splitlines() if "warning" in l)
    # a keytab without the pop/ key, readable by others
    partial = str(tmp_path / "partial.keytab")
    kdc.ktadd(partial, f"smtp/{HOSTNAME}", f"imap/{HOSTNAME}")
    os.chmod(partial, 0o644)
    p.write_config(p.config_text().replace(kdc.server_keytab, partial))
    res = run_cli(p.bin, ["check", "-c", p.conf], env=p.env)
    assert res.returncode == 0, res.stderr
    assert (f"warning: server pop: keytab {partial} has no key of pop/{HOSTNAME}: GSSAPI logins "
            "will fail") in res.stdout
    assert f"warning: server sub: secret file {partial} may be read by group or others" \
        in res.stdout
    assert "server sub: keytab" not in res.stdout


def test_unreadable_keytab_is_a_temporary_failure_not_the_clients(posthorn, kdc, cert,
                                                                   krb_env, tmp_path):
    p = start(posthorn, kdc, cert)
    moved = kdc.server_keytab + ".away"
    os.rename(kdc.server_keytab, moved)
    try:
        for _ in range(4):
            c = smtp(p, source="127.0.0.29")
            ehlo_auth(c)
            r = smtp_gssapi(c, GssClient("smtp"))
            assert r.first == "454 4.7.0 Temporary authentication failure", r.raw
        c = SMTPConn(p.port("imap"))
        p.conns.append(c)
        c.readline()
        assert imap_gssapi(c, GssClient("imap")) == \
            "a1 NO [UNAVAILABLE] Temporary authentication failure"
        c = SMTPConn(p.port("pop"))
        p.conns.append(c)
        c.readline()
        assert pop3_gssapi(c, GssClient("pop")) == \
            "-ERR [SYS/TEMP] Temporary authentication failure"
    finally:
        os.rename(moved, kdc.server_keytab)
    assert p.wait_event("gssapi-error", server="sub")
    assert not p.events("lockout")
    c = smtp(p, source="127.0.0.29")
    ehlo_auth(c)
    assert smtp_gssapi(c, GssClient("smtp")).code == 235


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_run_as_reads_the_keytab_and_keeps_the_replay_cache_after_the_drop(posthorn, kdc,
                                                                            krb_env,
                                                                            posthorn_bin):
    """Started as root with run-as nobody: the keytab is read, and the
    replay cache written, by nobody, confined, at each login."""
    import pwd
    import shutil
    nobody = pwd.getpwnam("nobody")
    root = posthorn.world_dir()
    keytab, krb5_conf = os.path.join(root, "posthorn.keytab"), os.path.join(root, "krb5.conf")
    shutil.copy(kdc.server_keytab, keytab)
    os.chown(keytab, nobody.pw_uid, nobody.pw_gid)
    os.chmod(keytab, 0o600)
    shutil.copy(kdc.krb5_conf, krb5_conf)
    os.chmod(krb5_conf, 0o644)
    # the certificate too must be the run-as user's to read
    res = run_cli(posthorn_bin, ["cert", "new", "--hostname", HOSTNAME, "--out", root])
    assert res.returncode == 0, res.stderr
    own = {"crt": os.path.join(root, f"{HOSTNAME}.crt"),
           "key": os.path.join(root, f"{HOSTNAME}.key")}
    os.chown(own["key"], nobody.pw_uid, nobody.pw_gid)
    p = start(posthorn, kdc, own, keytab=keytab, krb5_conf=krb5_conf, root=root,
              run_as="nobody", asan_options={"detect_leaks": "0"})
    c = SMTPConn(p.port("imap"))
    p.conns.append(c)
    assert c.readline().startswith(b"* OK")
    assert imap_gssapi(c, GssClient("imap")).startswith("a1 OK")
    last_auth(p, server="imap", result="ok", mechanism="GSSAPI", user=BOB)
    rc = os.path.join(p.spool, "gssapi-replay")
    assert os.stat(rc).st_uid == nobody.pw_uid
    assert not p.events("gssapi-error")
    # a keytab that nobody cannot read is refused before serving
    os.chown(keytab, 0, 0)
    res = run_cli(posthorn_bin, ["check", "-c", p.conf], env=p.env)
    assert res.returncode == 1
    assert (f"keytab {keytab} cannot be read by the run-as user nobody") in res.stderr


def test_client_gone_during_a_gssapi_step(ph):
    """The worker's step finishes for nobody and is freed; the server goes
    on (the fixture's teardown checks a clean stop and the sanitizers)."""
    p = ph
    for _ in range(5):
        c = smtp(p, source="127.0.0.30")
        ehlo_auth(c)
        c.send(f"AUTH GSSAPI {b64(GssClient('smtp').first())}\r\n")
        c.sock.close()
    c = smtp(p, source="127.0.0.31")
    ehlo_auth(c)
    assert smtp_gssapi(c, GssClient("smtp")).code == 235
    assert p.stop() == 0
