"""What a field test of the authentication and abuse defences found, each
fixed and checked here as a user would see it:

- probing for recipients: once a session has made `error-delay`'s count
  of errors, each refused recipient is answered only after the delay,
  while the daemon goes on serving everybody else at once; unknown
  recipients are counted per client address across connections
  (`unknown-recipients`), and a client that keeps probing gets 450 at
  RCPT, then 421 at connect, while other addresses are not touched;
- `plaintext-requires-tls yes` (the default) keeps every password-based
  mechanism inside TLS, SCRAM-SHA-256 included: not offered and refused
  like PLAIN before STARTTLS/STLS in SMTP, POP3 and IMAP, working after;
- `posthorn check` says so in words, and names how the lockouts count
  IPv6 clients (`lockout-ipv6-prefix`, a bad value is an error with
  FILE:LINE:COL).

Every client binds its own 127.0.0.x source address, so that one test's
counts and delays touch no other client.
"""

import os
import pwd
import re
import time

import pytest

from authutil import ScramClient, client_context, plain_response, scram_login, starttls
from conftest import DEFAULT_USERS, run_cli
from helpers import HOST, SMTPConn, ehlo_keywords, free_port
from imaputil import connect as imap_connect
from imaputil import imap_spec, make_cert

BOB, BOB_PW = "bob@example.test", DEFAULT_USERS["bob@example.test"]
CAROL = "carol@example.test"
SENDER = "someone@example.net"

NEEDS_TLS_538 = "538 5.7.11 Encryption required for requested authentication mechanism"


@pytest.fixture(scope="module")
def cert(posthorn_bin, tmp_path_factory):
    return make_cert(posthorn_bin, tmp_path_factory.mktemp("cert"))


@pytest.fixture(scope="module")
def ctx(cert):
    return client_context(cert["crt"])


def tls_block(cert):
    return ["tls {", f"    certificate {cert['crt']}", f"    key {cert['key']}", "}"]


def timed(fn, *args):
    """(what fn returned, seconds it took)."""
    t0 = time.monotonic()
    out = fn(*args)
    return out, time.monotonic() - t0


def mail_session(p, source):
    """An SMTP session from source, greeted, past EHLO and MAIL."""
    c = p.connect(source=source)
    c.start()
    c.expect(f"MAIL FROM:<{SENDER}>", 250)
    return c


# -- recipient probing: the error delay ------------------------------------------------

def test_error_delay_slows_refused_recipients_but_not_the_daemon(posthorn):
    p = posthorn(servers={"mx": {"anonymous": True, "limits": {
        "error-delay": "1s after 3", "unknown-recipients": "0 1h 1h"}}})
    c = mail_session(p, "127.0.0.21")
    # the first three errors are answered at once
    for i in range(3):
        r, took = timed(c.cmd, f"RCPT TO:<nobody{i}@example.test>")
        assert r.first.startswith("550 5.1.1"), r.raw
        assert took < 0.5, f"error {i + 1} took {took:.2f}s"

    # the fourth waits a second; meanwhile another client is served at once
    t0 = time.monotonic()
    c.send("RCPT TO:<nobody3@example.test>\r\n")
    time.sleep(0.2)
    other = p.connect(source="127.0.0.22")
    _, greet = timed(other.greeting)
    assert greet < 0.4, f"another client's greeting took {greet:.2f}s during the delay"
    other.ehlo()
    other.expect(f"MAIL FROM:<{SENDER}>", 250)
    _, took = timed(other.cmd, f"RCPT TO:<{BOB}>")
    assert took < 0.4, f"another client's RCPT took {took:.2f}s during the delay"
    assert time.monotonic() - t0 < 0.9, "the other client was not served inside the delay"
    r = c.reply()
    took = time.monotonic() - t0
    assert r.first.startswith("550 5.1.1 <nobody3@example.test>"), r.raw
    assert 0.9 <= took < 3.0, f"the fourth refusal came after {took:.2f}s"

    # so does every further refusal, relaying included
    r, took = timed(c.cmd, "RCPT TO:<someone@elsewhere.example>")
    assert r.first.startswith("550 5.7.1 Unable to relay"), r.raw
    assert 0.9 <= took < 3.0, f"the fifth refusal came after {took:.2f}s"
    # a recipient that exists is accepted at once, and the session works on
    r, took = timed(c.cmd, f"RCPT TO:<{BOB}>")
    assert r.code == 250 and took < 0.5, (r.raw, took)
    c.expect("DATA", 354)
    c.send("Subject: still works\r\n\r\nbody\r\n.\r\n")
    assert c.reply().code == 250
    c.expect("QUIT", 221)
    other.expect("QUIT", 221)
    p.wait_messages(BOB, 1)


def test_error_delay_holds_pipelined_commands_in_order(posthorn):
    p = posthorn(servers={"mx": {"anonymous": True, "limits": {
        "error-delay": "1s after 1", "unknown-recipients": "0 1h 1h"}}})
    c = mail_session(p, "127.0.0.23")
    assert c.cmd("RCPT TO:<nobody@example.test>").first.startswith("550 5.1.1")
    # PIPELINING (RFC 2920): the replies come in order, the NOOP's after the
    # held refusal
    t0 = time.monotonic()
    c.send("RCPT TO:<nobody2@example.test>\r\nNOOP\r\nRCPT TO:<bob@example.test>\r\n")
    first = c.reply()
    took = time.monotonic() - t0
    assert first.first.startswith("550 5.1.1 <nobody2@example.test>"), first.raw
    assert 0.9 <= took < 3.0, took
    assert c.reply().first == "250 2.0.0 Ok"
    assert c.reply().code == 250
    c.expect("QUIT", 221)


# -- recipient probing: the lockout per client address ---------------------------------

def test_unknown_recipients_lock_out_the_client_address(posthorn):
    p = posthorn(servers={"mx": {"anonymous": True, "limits": {
        "error-delay": "0 after 3", "unknown-recipients": "4 1h 1h"}}})
    probe, bystander = "127.0.0.31", "127.0.0.32"

    # before the threshold: a user gets 250, the unknown ones 550
    c = mail_session(p, probe)
    assert c.cmd(f"RCPT TO:<{BOB}>").code == 250
    for i in range(2):
        assert c.cmd(f"RCPT TO:<guess{i}@example.test>").first.startswith("550 5.1.1")
    c.expect("QUIT", 221)

    # a new connection does not start the count afresh: the fourth unknown
    # recipient locks the address out, and the next RCPT gets 450
    c = mail_session(p, probe)
    for i in range(2, 4):
        assert c.cmd(f"RCPT TO:<guess{i}@example.test>").first.startswith("550 5.1.1")
    r = c.cmd(f"RCPT TO:<{CAROL}>")
    assert r.first.startswith("450 4.7.1"), r.raw
    m = re.search(r"try again in (\d+) seconds", r.text)
    assert m and 3500 <= int(m.group(1)) <= 3600, r.raw
    c.expect("QUIT", 221)

    # and the next connection is refused at once
    c = p.connect(source=probe)
    r = c.reply()
    assert r.first.startswith("421 4.7.0"), r.raw
    c.wait_closed()

    # another address is not touched
    c = mail_session(p, bystander)
    assert c.cmd(f"RCPT TO:<{BOB}>").code == 250
    assert c.cmd("RCPT TO:<guess9@example.test>").first.startswith("550 5.1.1")
    c.expect("DATA", 354)
    c.send("Subject: hello\r\n\r\nbody\r\n.\r\n")
    assert c.reply().code == 250
    c.expect("QUIT", 221)
    p.wait_messages(BOB, 1)

    locks = [e for e in p.events("lockout") if e.get("reason") == "unknown-recipients"]
    assert [e["client"] for e in locks] == [probe], p.log
    refused = [e for e in p.events("refuse") if e.get("reason") == "unknown-recipients"]
    assert [e["client"] for e in refused] == [probe], p.log


def test_probing_is_braked_by_default(posthorn):
    """No directive needed: a delay after 3 errors, a lockout after 50
    unknown recipients from one address."""
    p = posthorn(servers={"mx": {"anonymous": True}})
    probe = "127.0.0.33"
    c = mail_session(p, probe)
    for i in range(3):
        r, took = timed(c.cmd, f"RCPT TO:<word{i}@example.test>")
        assert r.first.startswith("550 5.1.1") and took < 0.5, (r.raw, took)
    r, took = timed(c.cmd, "RCPT TO:<word3@example.test>")
    assert r.first.startswith("550 5.1.1"), r.raw
    assert 0.9 <= took < 3.0, f"the fourth refusal came after {took:.2f}s"
    c.expect("QUIT", 221)
    # reconnecting to stay under the delay: 46 more make 50
    tried = 4
    while tried < 50:
        c = mail_session(p, probe)
        for _ in range(min(3, 50 - tried)):
            assert c.cmd(f"RCPT TO:<word{tried}@example.test>").first.startswith("550 5.1.1")
            tried += 1
        if tried == 50:
            assert c.cmd(f"RCPT TO:<{BOB}>").first.startswith("450 4.7.1")
        c.expect("QUIT", 221)
    c = p.connect(source=probe)
    assert c.reply().first.startswith("421 4.7.0")
    c.wait_closed()
    c = mail_session(p, "127.0.0.34")
    assert c.cmd(f"RCPT TO:<{BOB}>").code == 250
    c.expect("QUIT", 221)


# -- SCRAM-SHA-256 only inside TLS -------------------------------------------------------

def test_smtp_scram_only_after_starttls_by_default(posthorn, cert, ctx):
    p = posthorn(servers={
        "sub": {"anonymous": False, "extra": "\n".join(tls_block(cert))},
        "open": {"anonymous": None, "extra": "\n".join(
            tls_block(cert) + ["auth {", "    plaintext-requires-tls no", "}"])},
    })
    c = p.connect("sub", source="127.0.0.41")
    c.greeting()
    kw = ehlo_keywords(c.ehlo())
    assert "STARTTLS" in kw and "AUTH" not in kw, kw
    # SCRAM gets what PLAIN gets, with and without an initial response
    for line in ("AUTH SCRAM-SHA-256 " + ScramClient(BOB, BOB_PW).first(),
                 "AUTH SCRAM-SHA-256", "auth scram-sha-256",
                 "AUTH PLAIN " + plain_response(BOB, BOB_PW)):
        r = c.cmd(line)
        assert r.first == NEEDS_TLS_538, (line, r.raw)
    assert not p.events("auth"), "an attempt before TLS was started"
    # inside TLS it works
    starttls(c, ctx)
    kw = ehlo_keywords(c.ehlo())
    assert sorted(kw.get("AUTH", [])) == ["LOGIN", "PLAIN", "SCRAM-SHA-256"], kw
    assert scram_login(c, BOB, BOB_PW).first == "235 2.7.0 Authentication successful"
    c.expect("QUIT", 221)
    [ev] = p.events("auth")
    assert (ev["result"], ev["mechanism"], ev["tls"]) == ("ok", "SCRAM-SHA-256", "yes"), ev

    # `plaintext-requires-tls no` still means what it says, SCRAM included
    c = p.connect("open", source="127.0.0.42")
    c.greeting()
    kw = ehlo_keywords(c.ehlo())
    assert sorted(kw.get("AUTH", [])) == ["LOGIN", "PLAIN", "SCRAM-SHA-256"], kw
    assert scram_login(c, BOB, BOB_PW).code == 235
    c.expect("QUIT", 221)


class POP3Conn(SMTPConn):
    """Just enough POP3 (RFC 1939, 2449, 5034) for these tests."""

    def line(self):
        raw = self.readline()
        assert raw.endswith(b"\r\n"), raw
        return raw[:-2].decode()

    def cmd(self, text):
        self.send(text + "\r\n")
        return self.line()

    def capa(self):
        assert self.cmd("CAPA").startswith("+OK")
        caps = {}
        while (line := self.line()) != ".":
            caps[line.split()[0].upper()] = line.split()[1:]
        return caps


def test_pop3_scram_only_after_stls_by_default(posthorn, cert, ctx):
    p = posthorn(servers={"pop": {"anonymous": None, "extra": "\n".join(
        ["protocol pop3"] + tls_block(cert))}})
    c = POP3Conn(p.port("pop"), source="127.0.0.43")
    p.conns.append(c)
    assert c.line().startswith("+OK")
    caps = c.capa()
    assert "STLS" in caps and "SASL" not in caps and "USER" not in caps, caps
    assert c.cmd("AUTH") == "+OK Mechanisms follow" and c.line() == ".", \
        "the RFC 1734 mechanism list is not empty before TLS"
    refusal = c.cmd("AUTH PLAIN " + plain_response(BOB, BOB_PW))
    assert refusal.startswith("-ERR [AUTH]"), refusal
    for line in ("AUTH SCRAM-SHA-256 " + ScramClient(BOB, BOB_PW).first(), "AUTH SCRAM-SHA-256"):
        assert c.cmd(line) == refusal, line
    assert c.cmd("STLS").startswith("+OK")
    c.sock = ctx.wrap_socket(c.sock, server_hostname=HOST)
    assert "SCRAM-SHA-256" in c.capa()["SASL"]
    sc = ScramClient(BOB, BOB_PW)
    r = c.cmd("AUTH SCRAM-SHA-256 " + sc.first())
    assert r.startswith("+ "), r
    r = c.cmd(sc.final(r[2:]))
    assert r.startswith("+ "), r
    sc.check_server_final(r[2:])
    assert c.cmd("").startswith("+OK"), "SCRAM-SHA-256 inside TLS"
    assert c.cmd("QUIT").startswith("+OK")


def test_imap_scram_only_after_starttls_by_default(posthorn, cert, ctx):
    p = posthorn(servers={"imap": imap_spec(cert)})
    c = imap_connect(p, source="127.0.0.44")
    caps = c.capabilities()
    assert "STARTTLS" in caps and "LOGINDISABLED" in caps, caps
    assert not [cap for cap in caps if cap.startswith("AUTH=")], caps
    refusal = c.cmd("AUTHENTICATE PLAIN " + plain_response(BOB, BOB_PW)).tagged
    assert refusal.startswith("NO [PRIVACYREQUIRED]"), refusal
    for line in ("AUTHENTICATE SCRAM-SHA-256 " + ScramClient(BOB, BOB_PW).first(),
                 "AUTHENTICATE SCRAM-SHA-256"):
        assert c.cmd(line).tagged == refusal, line
    c.starttls(ctx)
    assert "AUTH=SCRAM-SHA-256" in c.capabilities()
    sc = ScramClient(BOB, BOB_PW)
    tag = c.send_cmd("AUTHENTICATE SCRAM-SHA-256 " + sc.first())
    line = c.line()
    assert line.startswith("+ "), line
    c.send(sc.final(line[2:]) + "\r\n")
    line = c.line()
    assert line.startswith("+ "), line
    sc.check_server_final(line[2:])
    c.send(b"\r\n")
    assert c.collect(tag).ok, "SCRAM-SHA-256 inside TLS"
    c.logout()


# -- what `posthorn check` says ------------------------------------------------------------

def write_conf(folder, body):
    path = os.path.join(str(folder), "posthorn.conf")
    users = os.path.join(str(folder), "users")
    with open(users, "w") as f:
        f.write("")
    os.chmod(users, 0o600)
    if os.geteuid() == 0:
        # the daemon reads it again as the run-as user; check says so
        os.chown(users, pwd.getpwnam("nobody").pw_uid, -1)
    with open(path, "w") as f:
        f.write(f"hostname mx.example.test\ndomains example.test\nrun-as nobody\n"
                f"spool {folder}/spool\nmailboxes {folder}/mail\nusers {users}\n\n{body}")
    return path


def test_check_says_which_mechanisms_need_tls_and_how_clients_are_counted(posthorn_bin,
                                                                           tmp_path):
    conf = write_conf(tmp_path, f"server mx {{\n    listen {HOST}:{free_port()}\n"
                                "    auth { anonymous yes }\n}\n"
                                f"server pop {{\n    protocol pop3\n    listen {HOST}:{free_port()}\n"
                                "    auth { lockout-ipv6-prefix 56 }\n}\n")
    res = run_cli(posthorn_bin, ["check"], conf=conf)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert ("  authentication: PLAIN, LOGIN, SCRAM-SHA-256, only after TLS (each sends the "
            "password or what it can be guessed from); anonymous clients may send mail") in out, out
    assert ("5 failed logins from one address (IPv6: one /64) within 15 minutes lock it out "
            "for 30 minutes") in out, out
    assert ("  recipient probing: refused recipients are answered after 1 second once a "
            "session has made 3 errors; 50 unknown recipients from one address (IPv6: one /64) "
            "within 1 hour refuse it for 1 hour\n") in out, out
    assert ("  authentication: PLAIN, LOGIN, SCRAM-SHA-256 and USER/PASS, only after TLS (each "
            "sends the password or what it can be guessed from); 5 failed logins from one "
            "address (IPv6: one /56)") in out, out


def test_check_refuses_a_bad_ipv6_prefix(posthorn_bin, tmp_path):
    conf = write_conf(tmp_path, f"server mx {{\n    listen {HOST}:{free_port()}\n"
                                "    auth {\n        lockout 5 15m 30m\n"
                                "        lockout-ipv6-prefix 129\n    }\n}\n")
    res = run_cli(posthorn_bin, ["check"], conf=conf)
    assert res.returncode != 0
    assert (f"{conf}:12:29: bad number \"129\" for \"lockout-ipv6-prefix\" (use a whole "
            "number from 32 to 128)") in res.stderr, res.stderr
