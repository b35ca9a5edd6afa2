"""DNS block lists in the `connection` rules (posthorn.conf(5) `dnsbl`).

A real dnsmasq answers as a block list would (RFC 5782): the client's
reversed address (IPv4 octets, IPv6 nibbles) under the zone has an A record
in 127.0.0.0/8 and, for some, a TXT record saying why.  Its --log-queries
log counts the lookups the daemon made.  Clients bind their source address
to 127.0.0.x or connect from ::1.  No test asks the machine's resolver.
"""

import base64
import ipaddress
import socket
import time

import pytest

from helpers import ConnectionClosed, SMTPConn, free_port, send_message, wait_until

ZONE = "bl.example.test"
# answers may be kept (dnsmasq's own records have TTL 0 unless told)
CACHEABLE = "--local-ttl=300"
DNS_DEADLINE = 4.0      # per try 2 s x 2 tries: the daemon's hard deadline


def v4_query(addr, zone=ZONE):
    return ".".join(reversed(addr.split("."))) + "." + zone


def v6_query(addr, zone=ZONE):
    return ipaddress.ip_address(addr).reverse_pointer[:-len("ip6.arpa")] + zone


def listing(query, answer="127.0.0.2"):
    return f"--host-record={query},{answer}"


def reason(query, text):
    return f"--txt-record={query},{text}"


def connection_block(*lines, names=False):
    """A `connection` block; names=False leaves the client's reverse name
    unasked (dnsmasq's --host-record answers PTR too, which would make
    lookups of the same names as the block list's)."""
    lines = lines if names else ("reverse-lookup no",) + lines
    return "connection {\n" + "".join(f"    {ln}\n" for ln in lines) + "}\n"


def greeting(p, source, name="mx"):
    with SMTPConn(p.port(name), source=source) as c:
        r = c.reply()
        try:
            c.cmd("QUIT")
        except (ConnectionClosed, OSError):
            pass
        return r


def refusal(addr, zone=ZONE):
    return f"554 5.7.1 Service unavailable; client [{addr}] blocked using {zone}"


def list_refusals(p, client, server="mx"):
    return [e for e in p.events("refuse")
            if e.get("client") == client and e.get("server") == server and e.get("reason") == "dnsbl"]


def blocklist(dnsmasq, *records):
    return dnsmasq(extra=(CACHEABLE,) + records)


# -- refused at the greeting where nobody logs in ------------------------------------

def test_listed_ipv4_client_refused_at_greeting(posthorn, dnsmasq):
    d = blocklist(dnsmasq, listing(v4_query("127.0.0.2")))
    # after the client's name, as the domain rules need it
    p = posthorn(dns=d.address, servers={"mx": {"extra": connection_block(
        f"deny dnsbl {ZONE}", names=True)}})
    r = greeting(p, "127.0.0.2")
    assert r.code == 554 and r.first == refusal("127.0.0.2"), f"{r.raw!r}\n{p.log}"
    assert ("PTR", "2.0.0.127.in-addr.arpa") in d.queries(), d.log()
    ev = list_refusals(p, "127.0.0.2")
    assert ev and ev[-1]["zone"] == ZONE and ev[-1]["answer"] == "127.0.0.2", p.log
    assert ev[-1]["stage"] == "greeting", ev[-1]["_line"]
    # a client the list does not name is welcome
    r = greeting(p, "127.0.0.3")
    assert r.code == 220, f"{r.raw!r}\n{p.log}"
    assert not list_refusals(p, "127.0.0.3"), p.log
    assert ("A", v4_query("127.0.0.3")) in d.queries(), d.log()
    # the A record only (RFC 5782 §2.1)
    assert not d.queries("AAAA", v4_query("127.0.0.3")), d.log()


def test_refusal_quotes_the_lists_txt_record(posthorn, dnsmasq):
    q = v4_query("127.0.0.2")
    d = blocklist(dnsmasq, listing(q), reason(q, "Listed for sending spam; see bl.example.test/127.0.0.2"))
    p = posthorn(dns=d.address, servers={"mx": {"extra": connection_block(f"deny dnsbl {ZONE}")}})
    r = greeting(p, "127.0.0.2")
    want = refusal("127.0.0.2") + "; Listed for sending spam; see bl.example.test/127.0.0.2"
    assert r.first == want, f"{r.raw!r}\n{p.log}"
    assert ("TXT", q) in d.queries(), d.log()
    ev = list_refusals(p, "127.0.0.2")[-1]
    assert "Listed for sending spam" in ev["_line"], ev["_line"]
    # a client that is not listed costs no TXT query
    assert greeting(p, "127.0.0.3").code == 220
    assert ("TXT", v4_query("127.0.0.3")) not in d.queries(), d.log()


def test_listed_ipv6_client_refused_by_nibbles(posthorn, dnsmasq):
    d = blocklist(dnsmasq, listing(v6_query("::1")))
    port6 = free_port("::1")
    p = posthorn(dns=d.address, servers={"mx": {
        "extra": f"listen [::1]:{port6}\n" + connection_block(f"deny dnsbl {ZONE}")}})
    s = socket.create_connection(("::1", port6), timeout=10)
    try:
        got = s.recv(512).decode()
    finally:
        s.close()
    assert got.startswith(refusal("::1")), f"{got!r}\n{p.log}"
    assert ("A", v6_query("::1")) in d.queries(), d.log()
    # the IPv4 listener of the same server: 127.0.0.1 is not listed
    assert greeting(p, "127.0.0.1").code == 220, p.log


def test_only_listed_answers_count(posthorn, dnsmasq):
    """`deny dnsbl ZONE 127.0.0.4`: an answer of 127.0.0.2 lists nobody;
    127.0.0.4 does; an answer outside 127.0.0.0/8 never does."""
    d = blocklist(dnsmasq, listing(v4_query("127.0.0.2"), "127.0.0.2"),
                  listing(v4_query("127.0.0.4"), "127.0.0.4"),
                  listing(v4_query("127.0.0.5"), "10.0.0.4"))
    p = posthorn(dns=d.address, servers={
        "mx": {"extra": connection_block(f"deny dnsbl {ZONE} 127.0.0.4 127.0.0.9")},
        "any": {"extra": connection_block(f"deny dnsbl {ZONE}")},
    })
    assert greeting(p, "127.0.0.2").code == 220, p.log
    r = greeting(p, "127.0.0.4")
    assert r.first == refusal("127.0.0.4"), f"{r.raw!r}\n{p.log}"
    assert greeting(p, "127.0.0.5").code == 220, p.log
    # without answers: any in 127/8 lists, 10.0.0.4 still does not
    assert greeting(p, "127.0.0.2", "any").first == refusal("127.0.0.2"), p.log
    assert greeting(p, "127.0.0.5", "any").code == 220, p.log


def test_rules_in_order_earlier_allow_is_never_checked(posthorn, dnsmasq):
    d = blocklist(dnsmasq, listing(v4_query("127.0.0.2")), listing(v4_query("127.0.0.6")))
    p = posthorn(dns=d.address, servers={"mx": {"extra": connection_block(
        "allow 127.0.0.2", f"deny dnsbl {ZONE}", "deny 127.0.0.0/24")}})
    assert greeting(p, "127.0.0.2").code == 220, p.log
    assert not [q for q in d.queries() if q[1].endswith(ZONE)], d.log()
    # listed: the dnsbl rule decides (not the /24 after it)
    assert greeting(p, "127.0.0.6").first == refusal("127.0.0.6"), p.log
    # not listed: the next rule decides
    r = greeting(p, "127.0.0.7")
    assert r.code == 554 and "blocked using" not in r.first, r.raw
    ev = [e for e in p.events("refuse") if e.get("client") == "127.0.0.7"]
    assert ev and ev[-1]["reason"] == "connection-rule", p.log


def test_allow_dnsbl_lets_listed_clients_in(posthorn, dnsmasq):
    d = blocklist(dnsmasq, listing(v4_query("127.0.0.2", "wl.example.test")))
    p = posthorn(dns=d.address, servers={"mx": {"extra": connection_block(
        "default deny", "allow dnsbl wl.example.test")}})
    assert greeting(p, "127.0.0.2").code == 220, p.log
    assert greeting(p, "127.0.0.3").code == 554, p.log


def test_lookup_once_per_client_and_zone_while_cached(posthorn, dnsmasq):
    d = blocklist(dnsmasq, listing(v4_query("127.0.0.2")))
    p = posthorn(dns=d.address, servers={"mx": {"extra": connection_block(f"deny dnsbl {ZONE}")}})
    for _ in range(3):
        assert greeting(p, "127.0.0.2").code == 554, p.log
        assert greeting(p, "127.0.0.3").code == 220, p.log
    assert d.queries("A", v4_query("127.0.0.2")) == [("A", v4_query("127.0.0.2"))], d.log()
    assert d.queries("A", v4_query("127.0.0.3")) == [("A", v4_query("127.0.0.3"))], d.log()


@pytest.fixture
def silent_dns():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    yield s
    s.close()


def test_dns_failure_does_not_refuse(silent_dns, posthorn):
    port = silent_dns.getsockname()[1]
    p = posthorn(dns=f"127.0.0.1:{port}", servers={"mx": {"extra": connection_block(
        f"deny dnsbl {ZONE}")}})
    t0 = time.monotonic()
    with SMTPConn(p.port(), source="127.0.0.2", timeout=DNS_DEADLINE + 5) as c:
        r = c.reply()
    took = time.monotonic() - t0
    assert r.code == 220, f"a list that does not answer lists nobody: {r.raw!r}\n{p.log}"
    assert took <= DNS_DEADLINE + 1, f"greeting took {took:.2f}s"
    ev = [e for e in p.events("dnsbl") if e.get("client") == "127.0.0.2"]
    assert ev and ev[-1]["zone"] == ZONE and ev[-1]["status"] == "timeout", p.log


# -- on a server that offers AUTH: refused at MAIL unless logged in ------------------

AUTH_SERVER = "auth {\n    anonymous yes\n    plaintext-requires-tls no\n}\n"


def plain(user, pw):
    return base64.b64encode(f"\0{user}\0{pw}".encode()).decode()


def test_auth_server_refuses_mail_but_lets_listed_client_log_in(posthorn, dnsmasq):
    d = blocklist(dnsmasq, listing(v4_query("127.0.0.2")))
    p = posthorn(dns=d.address, servers={"mx": {"anonymous": None, "extra": AUTH_SERVER +
                                                connection_block(f"deny dnsbl {ZONE}")}})
    with SMTPConn(p.port(), source="127.0.0.2") as c:
        c.start()
        r = c.cmd("MAIL FROM:<someone@example.net>")
        assert r.code == 554 and r.first == refusal("127.0.0.2"), f"{r.raw!r}\n{p.log}"
        c.expect("AUTH PLAIN " + plain("bob@example.test", p.passwords["bob@example.test"]), 235)
        send_message(c, "bob@example.test", ["carol@example.test"],
                     "Subject: from a listed home line\r\n\r\nhello\r\n")
    ev = list_refusals(p, "127.0.0.2")
    assert [e["stage"] for e in ev] == ["mail-unless-login", "mail"], p.log
    wait_until(lambda: len(p.messages("carol@example.test")) == 1, what="delivery")
    # an unlisted client sends without logging in
    with SMTPConn(p.port(), source="127.0.0.3") as c:
        c.start()
        send_message(c, "someone@example.net", ["carol@example.test"], "Subject: x\r\n\r\nx\r\n")


def test_check_says_where_listed_clients_are_refused(posthorn):
    p = posthorn(start=False, servers={
        "mx": {"extra": connection_block(f"deny dnsbl {ZONE} 127.0.0.2 127.0.0.4")},
        "sub": {"anonymous": None, "extra": AUTH_SERVER + connection_block(f"deny dnsbl {ZONE}")},
    })
    res = p.cli("check")
    assert res.returncode == 0, res.stdout + res.stderr
    mx = res.stdout.split("server mx ", 1)[1].split("\nserver ", 1)[0]
    sub = res.stdout.split("server sub ", 1)[1].split("\nserver ", 1)[0]
    assert f"clients listed in {ZONE} answering 127.0.0.2 or 127.0.0.4" in mx, mx
    assert "refused at the greeting" in mx, mx
    assert "refused at MAIL unless it logged in" in sub, sub


@pytest.mark.parametrize("lines,message", [
    (["deny dnsbl"], '"dnsbl" needs a zone'),
    (["deny dnsbl bl..example"], 'bad block list zone name'),
    ([f"deny dnsbl {ZONE} 10.0.0.2"], 'bad block list answer "10.0.0.2"'),
    (["deny 127.0.0.1 255.0.0.0 extra"], '"deny" needs 1 or 2 arguments'),
])
def test_config_errors_name_the_place(posthorn, lines, message):
    p = posthorn(start=False, servers={"mx": {"extra": connection_block(*lines)}})
    res = p.cli("check")
    assert res.returncode != 0, res.stdout
    assert message in res.stderr, res.stderr
    assert "posthorn.conf:" in res.stderr, res.stderr


def test_dnsbl_in_relay_block_is_an_error(posthorn):
    p = posthorn(start=False, servers={"mx": {"extra": f"relay {{\n    allow dnsbl {ZONE}\n}}\n"}})
    res = p.cli("check")
    assert res.returncode != 0 and "belongs in the connection block" in res.stderr, res.stderr


# -- POP3 and IMAP: refused at the greeting ------------------------------------------

def test_pop3_and_imap_refuse_listed_clients_at_greeting(posthorn, dnsmasq):
    d = blocklist(dnsmasq, listing(v4_query("127.0.0.2")))
    login = "auth {\n    plaintext-requires-tls no\n}\n"
    p = posthorn(dns=d.address, servers={
        "pop": {"anonymous": None, "extra": "protocol pop3\n" + login +
                connection_block(f"deny dnsbl {ZONE}")},
        "imap": {"anonymous": None, "extra": "protocol imap\n" + login +
                 connection_block(f"deny dnsbl {ZONE}")},
    })
    text = f"Service unavailable; client [127.0.0.2] blocked using {ZONE}"
    for name, want in (("pop", f"-ERR [SYS/PERM] {text}"), ("imap", f"* BYE {text}")):
        s = socket.create_connection(("127.0.0.1", p.port(name)), timeout=10,
                                     source_address=("127.0.0.2", 0))
        try:
            got = s.recv(512).decode()
        finally:
            s.close()
        assert got.startswith(want), f"{name}: {got!r}\n{p.log}"
        s = socket.create_connection(("127.0.0.1", p.port(name)), timeout=10,
                                     source_address=("127.0.0.3", 0))
        try:
            got = s.recv(512).decode()
        finally:
            s.close()
        assert got.startswith("+OK" if name == "pop" else "* OK"), f"{name}: {got!r}"


def test_shutdown_while_the_lists_are_asked(silent_dns, posthorn):
    """SIGTERM with a client waiting for a list that never answers: the
    daemon stops at once and cleanly (the sanitizers see nothing left)."""
    port = silent_dns.getsockname()[1]
    p = posthorn(dns=f"127.0.0.1:{port}", servers={"mx": {"extra": connection_block(
        f"deny dnsbl {ZONE}")}})
    with SMTPConn(p.port(), source="127.0.0.2", timeout=10) as c:
        silent_dns.settimeout(5)
        silent_dns.recv(4096)           # the daemon has asked: the client waits
        t0 = time.monotonic()
        assert p.stop() == 0, p.log
        assert time.monotonic() - t0 < DNS_DEADLINE, "shutdown waited for the list"
        assert c.wait_closed(5) == b"", "a waiting client hears nothing before it is closed"
    assert "ERROR: AddressSanitizer" not in p.log and "LeakSanitizer" not in p.log, p.log
