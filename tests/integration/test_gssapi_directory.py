"""Kerberos logins for users who live in the directory: a real MIT KDC
(kdcutil.py, realm EXAMPLE.TEST) and a real slapd (ldaputil.py, whose
entries carry a userPrincipalName).  The principal is looked up by that
attribute and the login is the entry's mailbox; a principal no entry names
is refused; the directory down is a temporary failure, never "no such
user".  Only loopback; the KDC, slapd and posthorn are stopped by PID (the
fixtures do that)."""

import pytest

import ldaputil
from conftest import HOSTNAME
from kdcutil import Kdc
from test_gssapi import GssClient, ehlo_auth, smtp, smtp_gssapi, tls_block


REALM = "EXAMPLE.TEST"


@pytest.fixture(scope="module")
def kdc(tmp_path_factory):
    d = tmp_path_factory.mktemp("kdc-dir")
    k = Kdc(d / "kdc", realm=REALM, domains=(HOSTNAME,))
    try:
        for name in ("alice", "eve", f"smtp/{HOSTNAME}"):
            k.addprinc(name)
        users = str(d / "users.keytab")
        k.ktadd(users, "alice", "eve")
        k.server_keytab = str(d / "posthorn.keytab")
        k.ktadd(k.server_keytab, f"smtp/{HOSTNAME}")
        k.alice_cache = k.kinit("alice", users, ccache=str(d / "alice.ccache"))
        k.eve_cache = k.kinit("eve", users, ccache=str(d / "eve.ccache"))
        yield k
    finally:
        k.stop()


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return ldaputil.make_ca_and_cert(tmp_path_factory.mktemp("ldap-certs-gss"))


@pytest.fixture
def slapd(tmp_path, certs):
    s = ldaputil.Slapd(tmp_path / "slapd", certs).start()
    yield s
    s.stop()


@pytest.fixture
def daemon(posthorn, tmp_path, kdc, certs, slapd, monkeypatch):
    monkeypatch.setenv("KRB5_CONFIG", kdc.krb5_conf)
    monkeypatch.delenv("KRB5_KTNAME", raising=False)
    lines = tls_block({"crt": certs["crt"], "key": certs["key"]}) + [
        "auth {", "    anonymous no", "    mechanisms gssapi plain",
        f"    keytab {kdc.server_keytab}", f"    realm {REALM} example.test", "}"]
    p = posthorn(servers={"sub": {"anonymous": None, "extra": "\n".join(lines)}}, start=False)
    secret = ldaputil.write_secret(tmp_path)
    p.write_config(p.config_text().replace(
        f"users {p.users_file}",
        ldaputil.users_ldap_block([slapd.ldaps_uri], certs["ca"], secret)))
    p.env["KRB5_CONFIG"] = kdc.krb5_conf
    p.env.pop("KRB5CCNAME", None)
    p.start()
    p.slapd = slapd
    return p


def gss_login(p, kdc, monkeypatch, cache):
    monkeypatch.setenv("KRB5CCNAME", cache)
    c = smtp(p)
    ehlo_auth(c)
    return smtp_gssapi(c, GssClient("smtp"))


def test_principal_logs_in_as_the_directory_entry(daemon, kdc, monkeypatch):
    r = gss_login(daemon, kdc, monkeypatch, kdc.alice_cache)
    assert r.first.startswith("235 2.7.0"), r.raw
    ev = daemon.wait_event("auth", result="ok")
    assert ev["mechanism"] == "GSSAPI" and ev["user"] == "alice@example.test", ev["_line"]


def test_principal_no_entry_names_is_refused(daemon, kdc, monkeypatch):
    r = gss_login(daemon, kdc, monkeypatch, kdc.eve_cache)
    assert r.first.startswith("535 5.7.8"), r.raw
    ev = daemon.wait_event("auth-gssapi", principal=f"eve@{REALM}")
    assert "no user" in ev["_line"], ev["_line"]


def test_directory_down_is_a_temporary_failure(daemon, kdc, monkeypatch):
    daemon.slapd.stop()
    r = gss_login(daemon, kdc, monkeypatch, kdc.alice_cache)
    assert r.first.startswith("454 4.7.0"), r.raw
