"""Users from an LDAP directory (posthorn.conf(5) `users ldap`) against a
real OpenLDAP slapd (ldaputil.py): password logins by an LDAP bind over
TLS on SMTP AUTH, POP3 and IMAP, refused in clear; wrong passwords and
unknown users; every address of an entry (proxyAddresses, "smtp:"
prefixes) delivers into its one mailbox, and its user may send from any
of them (sender-must-match) but not from another's; LDAP filter
injection in addresses and user names matches nothing; slapd stopped
mid-test gives the protocols' temporary failures, logged once, and
posthorn recovers when slapd comes back; the second URI serves when the
first is down; a directory whose certificate the `ca` does not vouch for
is not used; ldapi:// and a reload work; `posthorn check` and `posthorn
user test` speak of the directory.
"""

import imaplib
import os
import poplib
import smtplib
import ssl

import pytest

import ldaputil
from authutil import b64, plain_response
from conftest import run_cli
from helpers import HOST, free_port

ALICE, ALICE_PW = "alice@example.test", ldaputil.USERS["alice@example.test"][1]
DAVE, DAVE_PW = "dave@example.test", ldaputil.USERS["dave@example.test"][1]
WRONG_PW = "not-Alices-9"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return ldaputil.make_ca_and_cert(tmp_path_factory.mktemp("ldap-certs"))


@pytest.fixture
def slapd(tmp_path, certs):
    s = ldaputil.Slapd(tmp_path / "slapd", certs).start()
    yield s
    s.stop()


def _tls(certs):
    return "\n".join(["tls {", f"    certificate {certs['crt']}", f"    key {certs['key']}",
                      "}"])


def start_daemon(posthorn, tmp_path, certs, uris, **block):
    """posthorn with mx (anonymous SMTP), sub (SMTP, logins), pop and imap,
    its users in the directory at uris."""
    tls = _tls(certs)
    servers = {
        "mx": {"anonymous": True},
        "sub": {"anonymous": False, "extra": tls},
        "pop": {"anonymous": None, "extra": "protocol pop3\n" + tls},
        "imap": {"anonymous": None, "extra": "protocol imap\n" + tls},
    }
    p = posthorn(servers=servers, start=False)
    secret = ldaputil.write_secret(tmp_path)
    text = p.config_text().replace(
        f"users {p.users_file}",
        ldaputil.users_ldap_block(uris, certs["ca"], secret, **block))
    p.write_config(text)
    p.start()
    return p


@pytest.fixture
def daemon(posthorn, tmp_path, certs, slapd):
    return start_daemon(posthorn, tmp_path, certs, [slapd.ldaps_uri])


def ctx_for(certs):
    c = ssl.create_default_context(cafile=certs["ca"])
    return c


_sources = iter(range(2, 250))


def source():
    """A fresh 127.0.x.y client address: each failed login counts against
    its client's address (the lockout), and these tests fail many."""
    return (f"127.0.{40 + os.getpid() % 100}.{next(_sources)}", 0)


def smtp_auth(p, certs, user, password):
    """(code, text) of AUTH PLAIN after STARTTLS on sub."""
    with smtplib.SMTP(HOST, p.port("sub"), timeout=15, source_address=source()) as s:
        s.starttls(context=ctx_for(certs))
        s.ehlo("client.example.net")
        code, text = s.docmd("AUTH", "PLAIN " + plain_response(user, password))
        s.quit()
    return code, text.decode()


def pop_login(p, certs, user, password):
    """The server's answer to PASS (or the error) after STLS."""
    c = poplib.POP3(HOST, p.port("pop"), timeout=15)
    try:
        c.stls(context=ctx_for(certs))
        c.user(user)
        try:
            return c.pass_(password).decode()
        except poplib.error_proto as e:
            return e.args[0].decode()
    finally:
        try:
            c.quit()
        except (poplib.error_proto, OSError):
            c.close()


def imap_login(p, certs, user, password):
    """("OK"|"NO", text) of LOGIN after STARTTLS."""
    c = imaplib.IMAP4(HOST, p.port("imap"), timeout=15)
    try:
        c.starttls(ssl_context=ctx_for(certs))
        try:
            typ, data = c.login(user, password)
            return typ, data[0].decode()
        except imaplib.IMAP4.error as e:
            return "NO", str(e)
    finally:
        try:
            c.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


def rcpt(p, address):
    """(code, text) of RCPT TO on mx, in one transaction."""
    with smtplib.SMTP(HOST, p.port("mx"), timeout=15) as s:
        s.ehlo("client.example.net")
        s.mail("sender@example.net")
        code, text = s.rcpt(address)
        s.quit()
    return code, text.decode()


def auth_events(p, **match):
    return [e for e in p.events("auth") if all(e.get(k) == v for k, v in match.items())]


# -- logins ---------------------------------------------------------------------

def test_directory_user_logs_in_over_tls_on_smtp_pop3_imap(daemon, certs):
    assert smtp_auth(daemon, certs, ALICE, ALICE_PW)[0] == 235
    assert pop_login(daemon, certs, ALICE, ALICE_PW).startswith("+OK")
    assert imap_login(daemon, certs, ALICE, ALICE_PW)[0] == "OK"
    # any address of the entry logs in to the one mailbox (the first mail)
    assert smtp_auth(daemon, certs, "al@example.test", ALICE_PW)[0] == 235
    ok = auth_events(daemon, result="ok")
    assert len(ok) == 4 and {e["user"] for e in ok} == {ALICE}, ok
    assert ALICE_PW not in daemon.log


def test_wrong_password_and_unknown_user_are_refused(daemon, certs):
    assert smtp_auth(daemon, certs, ALICE, WRONG_PW)[0] == 535
    assert smtp_auth(daemon, certs, "nobody@example.test", ALICE_PW)[0] == 535
    assert pop_login(daemon, certs, ALICE, WRONG_PW).startswith("-ERR [AUTH]")
    typ, text = imap_login(daemon, certs, "nobody@example.test", WRONG_PW)
    assert typ == "NO" and "AUTHENTICATIONFAILED" in text
    # an empty password would be an anonymous bind, which slapd grants
    with smtplib.SMTP(HOST, daemon.port("sub"), timeout=15, source_address=source()) as s:
        s.starttls(context=ctx_for(certs))
        s.ehlo("client.example.net")
        code, _ = s.docmd("AUTH", "LOGIN " + b64(ALICE))
        assert code == 334
        code, _ = s.docmd(b64(""))
        assert code in (501, 535)
    assert not auth_events(daemon, result="ok")
    assert WRONG_PW not in daemon.log


def test_refused_in_clear_and_scram_not_offered(daemon, certs):
    with smtplib.SMTP(HOST, daemon.port("sub"), timeout=15) as s:
        s.ehlo("client.example.net")
        code, text = s.docmd("AUTH", "PLAIN " + plain_response(ALICE, ALICE_PW))
        assert code == 538, text
        s.starttls(context=ctx_for(certs))
        s.ehlo("client.example.net")
        mechs = s.esmtp_features.get("auth", "").upper().split()
        assert "PLAIN" in mechs and "SCRAM-SHA-256" not in mechs, mechs
    c = poplib.POP3(HOST, daemon.port("pop"), timeout=15)
    with pytest.raises(poplib.error_proto):
        c.user(ALICE)
        c.pass_(ALICE_PW)
    c.quit()
    assert not auth_events(daemon, result="ok")


def test_injection_in_user_names_and_recipients_matches_nothing(daemon, certs):
    for user in ("*", "*@example.test", "alice@example.test)(uid=*",
                 "*)(objectClass=*", "alice@example.test\\2a"):
        assert smtp_auth(daemon, certs, user, ALICE_PW)[0] == 535, user
    # a NUL inside the name: not base64-decodable into a user at all
    with smtplib.SMTP(HOST, daemon.port("sub"), timeout=15, source_address=source()) as s:
        s.starttls(context=ctx_for(certs))
        s.ehlo("client.example.net")
        code, _ = s.docmd("AUTH", "LOGIN " + b64(ALICE + "\0x"))
        assert code in (501, 535)
    for address in ("*@example.test", '"a*"@example.test', '"alice)(mail=*"@example.test',
                    '"*)(|(mail=*"@example.test'):
        code, text = rcpt(daemon, address)
        assert code == 550 and "5.1.1" in text, (address, code, text)
    assert not auth_events(daemon, result="ok")


# -- recipients -------------------------------------------------------------------

def test_every_address_of_an_entry_delivers_into_its_mailbox(daemon, certs):
    for address in (ALICE, "al@example.test", "A.Smith@example.org"):
        assert rcpt(daemon, address)[0] == 250, address
    code, text = rcpt(daemon, "nobody@example.test")
    assert code == 550 and "5.1.1" in text
    # x500: values are no mail addresses
    assert rcpt(daemon, "o=org@example.test")[0] == 550
    with smtplib.SMTP(HOST, daemon.port("mx"), timeout=15) as s:
        s.sendmail("sender@example.net", ["al@example.test", "a.smith@example.org", DAVE],
                   "Subject: directory\r\n\r\nhello\r\n")
    daemon.wait_messages(ALICE, 1)
    daemon.wait_messages(DAVE, 1)
    assert not os.path.exists(daemon.maildir("al@example.test"))
    assert not os.path.exists(daemon.maildir("a.smith@example.org"))


def test_a_user_sends_from_any_of_the_entrys_addresses_only(daemon, certs):
    with smtplib.SMTP(HOST, daemon.port("sub"), timeout=15, source_address=source()) as s:
        s.starttls(context=ctx_for(certs))
        s.ehlo("client.example.net")
        assert s.docmd("AUTH", "PLAIN " + plain_response(ALICE, ALICE_PW))[0] == 235
        for sender, want in (("al@example.test", 250), ("A.Smith@example.org", 250),
                             (DAVE, 553), ("nobody@example.test", 553), (ALICE, 250)):
            code, text = s.mail(sender)
            assert code == want, (sender, code, text)
            s.rset()
        code, _ = s.mail("al@example.test")
        assert code == 250
        assert s.rcpt("someone@example.net")[0] == 250  # relay for the logged-in user
        s.rset()


# -- the directory goes and comes back ---------------------------------------------------

def test_directory_down_gives_temporary_failures_once_logged_then_recovers(daemon, certs,
                                                                          slapd):
    slapd.stop()
    code, text = smtp_auth(daemon, certs, ALICE, ALICE_PW)
    assert code == 454 and "4.7.0" in text, (code, text)
    assert smtp_auth(daemon, certs, ALICE, WRONG_PW)[0] == 454
    assert pop_login(daemon, certs, ALICE, ALICE_PW).startswith("-ERR [SYS/TEMP]")
    typ, text = imap_login(daemon, certs, ALICE, ALICE_PW)
    assert typ == "NO" and "UNAVAILABLE" in text, text
    code, text = rcpt(daemon, DAVE)
    assert code == 451 and "4.3.0" in text, (code, text)
    assert len(daemon.events("directory-down")) == 1, daemon.events("directory-down")
    assert not auth_events(daemon, result="fail")
    slapd.start()
    assert smtp_auth(daemon, certs, ALICE, ALICE_PW)[0] == 235
    assert rcpt(daemon, DAVE)[0] == 250
    assert len(daemon.events("directory-up")) == 1
    assert len(daemon.events("directory-down")) == 1


def test_second_uri_serves_when_the_first_is_down(posthorn, tmp_path, certs, slapd):
    dead = f"ldaps://{HOST}:{free_port()}"
    p = start_daemon(posthorn, tmp_path, certs, [dead, slapd.ldap_uri])  # StartTLS
    assert smtp_auth(p, certs, DAVE, DAVE_PW)[0] == 235
    assert rcpt(p, DAVE)[0] == 250
    assert not p.events("directory-down")


def test_ldapi_and_a_reload(posthorn, tmp_path, certs, slapd):
    p = start_daemon(posthorn, tmp_path, certs, [slapd.ldapi_uri])
    assert smtp_auth(p, certs, DAVE, DAVE_PW)[0] == 235
    p.reload()  # a new generation: its own directory, cache and workers
    assert smtp_auth(p, certs, DAVE, DAVE_PW)[0] == 235
    assert rcpt(p, "al@example.test")[0] == 250
    assert not p.events("directory-down")


def test_a_directory_certificate_from_another_ca_is_refused(posthorn, tmp_path, certs,
                                                           slapd):
    other = ldaputil.make_ca_and_cert(tmp_path / "other-ca")
    # posthorn trusts only the other CA for the directory; neither ldaps://
    # nor StartTLS may then go on, and nothing is sent in clear
    p = start_daemon(posthorn, tmp_path, {"ca": other["ca"], "crt": certs["crt"],
                                          "key": certs["key"]},
                     [slapd.ldaps_uri, slapd.ldap_uri])
    code, text = smtp_auth(p, certs, ALICE, ALICE_PW)  # the clients trust posthorn's CA
    assert code == 454, (code, text)
    down = p.events("directory-down")
    assert len(down) == 1 and "StartTLS" in down[0]["_line"], down


def test_check_and_user_test_speak_of_the_directory(posthorn, tmp_path, certs, slapd):
    p = start_daemon(posthorn, tmp_path, certs, [slapd.ldaps_uri])
    res = run_cli(p.bin, ["check", "-c", p.conf], env=p.env)
    assert f"users: from the directory at {slapd.ldaps_uri}" in res.stdout, res.stdout
    assert "SCRAM-SHA-256 is not offered to directory users" in res.stdout
    res = p.cli("user", "list")
    assert "directory" in (res.stdout + res.stderr)
    res = p.cli("user", "test", "A.Smith@example.org", input=ALICE_PW + "\n")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"lookup: A.Smith@example.org is the user {ALICE}" in res.stdout
    assert f"login: ok as {ALICE}" in res.stdout
    res = p.cli("user", "test", ALICE, input=WRONG_PW + "\n")
    assert res.returncode == 1 and "login: refused" in res.stdout
    res = p.cli("user", "test", "--principal", "alice@EXAMPLE.TEST")
    assert res.returncode == 0 and f"principal: alice@EXAMPLE.TEST is the user {ALICE}" in \
        res.stdout, res.stdout + res.stderr
    res = p.cli("user", "test", "--principal", "eve@EXAMPLE.TEST")
    assert res.returncode == 1 and "principal: eve@EXAMPLE.TEST is nobody's" in res.stdout
