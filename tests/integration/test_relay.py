"""The relay decision (posthorn.conf(5) `relay`): mail for other
domains is accepted only from authenticated clients (`authenticated yes`)
or from clients a `relay` entry names (address, CIDR, address + mask,
domain of the verified reverse name); everybody else gets
`550 5.7.1 Unable to relay`, and the old address tricks that route through a
local domain are never relayed.  Nothing refused is ever queued."""

import os
import re

import pytest

from authutil import scram_login
from conftest import DEFAULT_USERS
from helpers import SMTPConn

BOB, BOB_PW = "bob@example.test", DEFAULT_USERS["bob@example.test"]
REMOTE = "someone@external.test"


def queued(p):
    """Files in the spool queue (message files, not .done records)."""
    q = os.path.join(p.spool, "queue")
    if not os.path.isdir(q):
        return []
    return [f for f in os.listdir(q) if not f.endswith(".done") and not f.startswith(".")]


def relay_rules(p):
    """The rule="..." of each event=relay log line, as written in the config."""
    return [m.group(1) for m in re.finditer(r'event=relay .*? rule="([^"]*)"', p.log)]


def enhanced(r):
    return r.lines[0].split(" ", 1)[0] if r.lines else ""


def open_relay_probe(conn, rcpt, sender="someone@example.net"):
    conn.expect(f"MAIL FROM:<{sender}>", 250)
    return conn.cmd(f"RCPT TO:<{rcpt}>")


def relay_server(posthorn, relay_lines=(), anonymous=True, **kw):
    # the tests log in with SCRAM-SHA-256 in the clear (there is no
    # certificate): plaintext-requires-tls no
    auth = (f"auth {{\n    anonymous {'yes' if anonymous else 'no'}\n"
            "    plaintext-requires-tls no\n}\n")
    extra = "relay {\n" + "".join(f"    {l}\n" for l in relay_lines) + "}\n" if relay_lines else ""
    return posthorn(servers={"mx": {"anonymous": None, "extra": auth + extra}}, **kw)


def test_anonymous_client_cannot_relay(posthorn):
    p = relay_server(posthorn)
    with SMTPConn(p.port()) as c:
        c.start()
        r = open_relay_probe(c, REMOTE)
        assert (r.code, enhanced(r)) == (550, "5.7.1"), r.raw
        assert f"Unable to relay for <{REMOTE}>" in r.text
        assert c.cmd("DATA").code == 503
        c.cmd("QUIT")
    assert queued(p) == []
    assert p.events("reject") and p.events("reject")[-1].get("reason") == "relay"


def test_authenticated_client_relays(posthorn):
    p = relay_server(posthorn, anonymous=False)
    with SMTPConn(p.port()) as c:
        c.start()
        assert scram_login(c, BOB, BOB_PW).code == 235
        c.expect(f"MAIL FROM:<{BOB}>", 250)
        r = c.cmd(f"RCPT TO:<{REMOTE}>")
        assert r.code == 250, r.raw
        c.expect("DATA", 354)
        c.send("Subject: out\r\n\r\nbody\r\n.\r\n")
        assert c.reply().code == 250
        c.cmd("QUIT")
    ev = p.events("relay")
    assert ev and ev[-1]["to"] == REMOTE and relay_rules(p)[-1] == "authenticated"
    # accepted for its remote recipient (outbound delivery may already have
    # taken it from the queue: that part is test_outbound.py's business)
    acc = p.events("accepted")
    assert acc and REMOTE in acc[-1]["to"], acc


def test_relay_authenticated_no_refuses_users(posthorn):
    p = relay_server(posthorn, ["authenticated no"], anonymous=False)
    with SMTPConn(p.port()) as c:
        c.start()
        assert scram_login(c, BOB, BOB_PW).code == 235
        c.expect(f"MAIL FROM:<{BOB}>", 250)
        assert c.cmd(f"RCPT TO:<{REMOTE}>").code == 550
        # local delivery still works for the user
        assert c.cmd("RCPT TO:<carol@example.test>").code == 250


@pytest.mark.parametrize("rule,allowed,refused", [
    ("allow 127.0.0.7", "127.0.0.7", "127.0.0.8"),
    ("allow 127.0.0.64/26", "127.0.0.100", "127.0.0.20"),
    ("allow 127.0.0.64 255.255.255.192", "127.0.0.127", "127.0.0.128"),
])
def test_relay_by_address(posthorn, rule, allowed, refused):
    p = relay_server(posthorn, [rule])
    with SMTPConn(p.port(), source=allowed) as c:
        c.start()
        r = open_relay_probe(c, REMOTE)
        assert r.code == 250, r.raw
    with SMTPConn(p.port(), source=refused) as c:
        c.start()
        assert open_relay_probe(c, REMOTE).code == 550
    ev = p.events("relay")
    assert ev and ev[-1]["client"] == allowed
    assert relay_rules(p)[-1] == rule.split(" ", 1)[1]


def test_relay_by_dns_suffix(posthorn, dnsmasq):
    d = dnsmasq(ptr=[("127.0.0.9", "gw.corp.example"), ("127.0.0.10", "gw.badcorp.example")],
                hosts=[("gw.corp.example", "127.0.0.9"), ("gw.badcorp.example", "127.0.0.10")])
    p = relay_server(posthorn, ["allow domain corp.example"], dns=d.address)
    with SMTPConn(p.port(), source="127.0.0.9") as c:
        c.start()
        assert open_relay_probe(c, REMOTE).code == 250
    with SMTPConn(p.port(), source="127.0.0.10") as c:
        c.start()
        assert open_relay_probe(c, REMOTE).code == 550
    assert relay_rules(p)[-1] == "domain corp.example"


@pytest.mark.parametrize("rcpt,code", [
    ("user%external.test@example.test", 550),
    ('"user@external.test"@example.test', 550),
    ("external.test!user@example.test", 550),
    ("@example.test:someone@external.test", 550),
    ("@example.test,@example.org:someone@external.test", 550),
    ("user@external.test@example.test", 501),
    ("external.test!user", 501),
    ("user@", 501),
    ("@", 501),
    ("someone@[192.0.2.1]", 550),
])
def test_address_tricks_never_relayed(posthorn, rcpt, code):
    """Even a client the relay rules trust for nothing gets no route through
    a local domain (the relay-by-IP client below could relay openly, so the
    tricks are tried from an untrusted address)."""
    p = relay_server(posthorn, ["allow 127.0.0.7"])
    with SMTPConn(p.port(), source="127.0.0.8") as c:
        c.start()
        r = open_relay_probe(c, rcpt)
        assert r.code == code, (rcpt, r.raw)
        if code == 550:
            assert enhanced(r) == "5.7.1", r.raw
        c.cmd("RSET")
    assert queued(p) == []


def test_local_domain_check_ignores_case_and_one_trailing_dot(posthorn):
    p = relay_server(posthorn)
    with SMTPConn(p.port()) as c:
        c.start()
        c.expect("MAIL FROM:<someone@example.net>", 250)
        assert c.cmd("RCPT TO:<bob@EXAMPLE.Test.>").code == 250
        assert c.cmd("RCPT TO:<bob@example.test..>").code == 501


def test_own_address_literal_is_local(posthorn):
    p = relay_server(posthorn)
    with SMTPConn(p.port()) as c:
        c.start()
        c.expect("MAIL FROM:<someone@example.net>", 250)
        assert c.cmd("RCPT TO:<bob@[127.0.0.1]>").code == 250
        assert c.cmd("RCPT TO:<bob@[127.0.0.2]>").code == 550
