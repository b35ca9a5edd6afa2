"""Who may connect (posthorn.conf(5) `connection`; refused clients).

Each test is what an administrator would check from outside: a client
binds its source address to 127.0.0.x (or connects from ::1) and reads the
greeting; the log says which rule decided; the records of the client's
reverse name come from a real dnsmasq started for the test (its
--log-queries log counts the lookups the daemon made), or from a UDP socket
that never answers.  No test asks the machine's own resolver.
"""

import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import HOSTNAME
from dnsutil import ptr_name
from helpers import (CLIENT_HELO, ConnectionClosed, SMTPConn, free_port, send_message,
                     split_message, wait_until)

# dnsmasq answers its --ptr-record/--host-record entries with TTL 0 ("do not
# cache") unless told otherwise; the cache tests need answers that may be kept.
CACHEABLE = ("--local-ttl=300",)

DNS_DEADLINE = 4.0      # per try 2 s x 2 tries: the daemon's hard deadline


# -- helpers ------------------------------------------------------------------------

def connection_block(*lines):
    """A `connection { ... }` block for server_block(extra=...)."""
    return "connection {\n" + "".join(f"    {ln}\n" for ln in lines) + "}\n"


class SMTPConn6(SMTPConn):
    """SMTPConn over IPv6 (from ::1 to [::1]:port)."""

    def __init__(self, port, host="::1", timeout=10.0):
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.connect((host, port, 0, 0))
        self.buf = b""
        self.closed = False


def greeting_code(p, source, name="mx"):
    """Connect from `source`, read the greeting, say QUIT; return the greeting."""
    with SMTPConn(p.port(name), source=source) as c:
        r = c.reply()
        try:
            c.cmd("QUIT")
        except (ConnectionClosed, OSError):
            pass
        return r


def assert_admission(p, allowed=(), refused=(), name="mx"):
    """Every `allowed` source gets 220, every `refused` one 554 5.7.1."""
    for src in allowed:
        r = greeting_code(p, src, name)
        assert r.code == 220, f"{src} on {name} should be allowed, got {r.raw!r}\n{p.log}"
    for src in refused:
        r = greeting_code(p, src, name)
        assert r.code == 554 and r.first.startswith("554 5.7.1"), \
            f"{src} on {name} should be refused, got {r.raw!r}\n{p.log}"


def refuse_events(p, client, server="mx"):
    return [e for e in p.events("refuse") if e.get("client") == client and e.get("server") == server]


def connect_events(p, client, server="mx"):
    return [e for e in p.events("connect") if e.get("client") == client and e.get("server") == server]


def rule_of(ev):
    m = re.search(r'rule="([^"]*)"', ev["_line"])
    assert m, f"refuse line without rule=\"...\": {ev['_line']}"
    return m.group(1)


def received_header(msg):
    fields, _ = split_message(msg)
    rec = [v for k, v in fields if k.lower() == "received"]
    assert rec, f"no Received: header in {msg[:400]!r}"
    return rec[0].decode("utf-8", "replace")


def deliver_from(p, source, subject, name="mx"):
    with SMTPConn(p.port(name), source=source) as c:
        c.start()
        send_message(c, "alice@example.org", ["bob@example.test"],
                     f"Subject: {subject}\r\n\r\nfrom {source}\r\n")
        c.cmd("QUIT")


def message_with_subject(msgs, subject):
    found = [m for m in msgs if f"Subject: {subject}\r\n".encode() in m]
    assert len(found) == 1, f"expected one message with Subject {subject}, found {len(found)}"
    return found[0]


def settle_count(fn, at_least=1, timeout=5.0, settle=0.3):
    """Wait (bounded) until fn() returns >= at_least, then let it settle; return it."""
    wait_until(lambda: fn() >= at_least, timeout, what=f"at least {at_least}")
    time.sleep(settle)
    return fn()


# -- single address, network, address + mask -----------------------------------------

# (rule, inside, outside): each rule kind covers `inside` and not `outside`
ADDRESS_RULES = [
    ("127.0.0.7", ["127.0.0.7"], ["127.0.0.8", "127.0.0.6"]),
    ("127.0.0.16/28", ["127.0.0.16", "127.0.0.17", "127.0.0.31"], ["127.0.0.15", "127.0.0.32"]),
    ("127.0.0.16 255.255.255.240", ["127.0.0.16", "127.0.0.30"], ["127.0.0.15", "127.0.0.32"]),
]


@pytest.mark.parametrize("rule,inside,outside", ADDRESS_RULES,
                         ids=["single", "cidr", "mask"])
def test_address_rules_in_both_default_modes(posthorn, rule, inside, outside):
    """`default deny` + allow RULE: only the covered clients may connect;
    `default allow` + deny RULE: everybody except them."""
    p = posthorn(servers={
        "only": {"extra": connection_block("default deny", f"allow {rule}")},
        "except": {"extra": connection_block("default allow", f"deny {rule}")},
    })
    assert_admission(p, allowed=inside, refused=outside, name="only")
    assert_admission(p, allowed=outside, refused=inside, name="except")
    # the refusals name the rule that decided
    for src in outside:
        evs = refuse_events(p, src, "only")
        assert evs and rule_of(evs[-1]) == "default deny", p.log
    for src in inside:
        evs = refuse_events(p, src, "except")
        assert evs and rule_of(evs[-1]) == rule, p.log
    # nobody who was let in has a refuse line
    for src in inside:
        assert not refuse_events(p, src, "only"), p.log
    for src in outside:
        assert not refuse_events(p, src, "except"), p.log


def test_first_match_decides(posthorn):
    """Rules are tried in order: allow .7 before deny the /24 lets .7 in; the
    same rules the other way round keep it out."""
    p = posthorn(servers={
        "mx": {"extra": connection_block("allow 127.0.0.7", "deny 127.0.0.0/24")},
        "rev": {"extra": connection_block("deny 127.0.0.0/24", "allow 127.0.0.7")},
    })
    assert_admission(p, allowed=["127.0.0.7"], refused=["127.0.0.8"], name="mx")
    assert rule_of(refuse_events(p, "127.0.0.8")[-1]) == "127.0.0.0/24"
    assert_admission(p, refused=["127.0.0.7", "127.0.0.8"], name="rev")
    assert rule_of(refuse_events(p, "127.0.0.7", "rev")[-1]) == "127.0.0.0/24"


def test_ipv6_rules_on_loopback(posthorn):
    """`allow ::1` under default deny lets ::1 in (and an IPv6 rule does not
    cover IPv4 clients); `deny ::1/128` under default allow keeps ::1 out."""
    p6a, p6b = free_port(), free_port()
    p = posthorn(servers={
        "only6": {"extra": f"listen [::1]:{p6a}\n" + connection_block("default deny", "allow ::1")},
        "not6": {"extra": f"listen [::1]:{p6b}\n" + connection_block("default allow", "deny ::1/128")},
    })
    with SMTPConn6(p6a) as c:
        r = c.reply()
        assert r.code == 220, f"::1 under `allow ::1`: {r.raw!r}\n{p.log}"
        c.expect("QUIT", 221)
    assert connect_events(p, "::1", "only6"), p.log
    assert_admission(p, refused=["127.0.0.1"], name="only6")
    with SMTPConn6(p6b) as c:
        r = c.reply()
        assert r.code == 554 and r.first.startswith("554 5.7.1"), f"::1 under deny ::1/128: {r.raw!r}"
    evs = refuse_events(p, "::1", "not6")
    assert evs and rule_of(evs[-1]) == "::1/128", p.log
    assert_admission(p, allowed=["127.0.0.1"], name="not6")


# -- the refused client's view ------------------------------------------------------------

def test_refused_client_exact_replies_and_log(posthorn):
    p = posthorn(servers={"mx": {"extra": connection_block("default allow", "deny 127.0.0.8")}})
    with SMTPConn(p.port(), source="127.0.0.8") as c:
        g = c.reply()
        assert g.raw == f"554 5.7.1 {HOSTNAME} Access denied\r\n".encode(), g.raw
        for cmd in ("EHLO client.example.test", "HELO client.example.test",
                    "MAIL FROM:<alice@example.org>", "RCPT TO:<bob@example.test>",
                    "DATA", "NOOP", "RSET", "STARTTLS", "AUTH PLAIN AGJvYgBib2I="):
            r = c.cmd(cmd)
            assert r.raw == b"503 5.7.1 Error: access denied\r\n", f"{cmd}: {r.raw!r}"
        r = c.cmd("QUIT")
        assert r.code == 221 and r.first.startswith("221 2.0.0"), r.raw
        assert c.wait_closed(5) == b""
    ev = p.wait_event("refuse", client="127.0.0.8")
    line = ev["_line"]
    assert "server=mx" in line and "name=-" in line and "reason=connection-rule" in line, line
    assert 'rule="127.0.0.8"' in line, line
    assert "dns=" not in line, line    # the lookup answered (NXDOMAIN): nothing to explain
    # nothing was accepted from the refused client
    assert not p.events("accepted")
    # a client the rule does not cover is served normally
    with SMTPConn(p.port(), source="127.0.0.7") as c:
        c.start()


def test_refused_by_default_deny_logs_default(posthorn):
    p = posthorn(servers={"mx": {"extra": connection_block("default deny", "allow 127.0.0.7")}})
    assert greeting_code(p, "127.0.0.9").raw == f"554 5.7.1 {HOSTNAME} Access denied\r\n".encode()
    ev = p.wait_event("refuse", client="127.0.0.9")
    assert rule_of(ev) == "default deny", ev["_line"]
    assert ev.get("reason") == "connection-rule", ev["_line"]


# -- domain rules: forward-confirmed reverse names ---------------------------------------------

def isp_dns(dnsmasq, extra=()):
    """Reverse names for a few clients:
    .5  host5.isp.example, resolves back              -> in isp.example
    .6  ghost.isp.example, the name does not resolve   -> not confirmed
    .7  other.isp.example, resolves to 127.0.0.99      -> not confirmed
    .8  host8.badisp.example, resolves back            -> not in isp.example (label boundary)
    .9  isp.example itself, resolves back              -> equal to the domain
    .10 GW.ISP.Example (upper case), resolves back     -> in isp.example (case-insensitive)
    .11 no PTR at all                                  -> no name
    """
    return dnsmasq(
        ptr=[("127.0.0.5", "host5.isp.example"), ("127.0.0.6", "ghost.isp.example"),
             ("127.0.0.7", "other.isp.example"), ("127.0.0.8", "host8.badisp.example"),
             ("127.0.0.9", "isp.example"), ("127.0.0.10", "GW.ISP.Example")],
        hosts=[("host5.isp.example", "127.0.0.5"), ("other.isp.example", "127.0.0.99"),
               ("host8.badisp.example", "127.0.0.8"), ("isp.example", "127.0.0.9"),
               ("GW.ISP.Example", "127.0.0.10")],
        extra=extra)


IN_DOMAIN = ["127.0.0.5", "127.0.0.9", "127.0.0.10"]
NOT_IN_DOMAIN = ["127.0.0.6", "127.0.0.7", "127.0.0.8", "127.0.0.11"]


def test_domain_rule_default_deny_allow_list(posthorn, dnsmasq):
    d = isp_dns(dnsmasq)
    p = posthorn(dns=d.address,
                 servers={"mx": {"extra": connection_block("default deny", "allow domain isp.example")}})
    assert_admission(p, allowed=IN_DOMAIN, refused=NOT_IN_DOMAIN)
    assert connect_events(p, "127.0.0.5")[-1]["name"] == "host5.isp.example"
    # the unconfirmed names are not believed: they appear nowhere as the client's name
    for src in ("127.0.0.6", "127.0.0.7"):
        ev = refuse_events(p, src)[-1]
        assert ev["name"] == "-" and rule_of(ev) == "default deny", ev["_line"]
    ev = refuse_events(p, "127.0.0.8")[-1]
    assert ev["name"] == "host8.badisp.example" and rule_of(ev) == "default deny", ev["_line"]
    # the daemon did check the forward records (that is what "confirmed" means)
    assert d.queries("A", "other.isp.example"), d.log()
    assert d.queries("PTR", ptr_name("127.0.0.6")), d.log()


def test_domain_rule_default_allow_deny_list(posthorn, dnsmasq):
    d = isp_dns(dnsmasq)
    p = posthorn(dns=d.address,
                 servers={"mx": {"extra": connection_block("default allow", "deny domain isp.example")}})
    assert_admission(p, allowed=NOT_IN_DOMAIN, refused=IN_DOMAIN)
    ev = refuse_events(p, "127.0.0.5")[-1]
    assert ev["name"] == "host5.isp.example" and rule_of(ev) == "domain isp.example", ev["_line"]
    assert connect_events(p, "127.0.0.7")[-1]["name"] == "-"
    assert connect_events(p, "127.0.0.8")[-1]["name"] == "host8.badisp.example"


# -- an unresponsive DNS server ------------------------------------------------------------------

@pytest.fixture
def silent_dns():
    """A UDP socket on 127.0.0.1 that receives queries and never answers."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    yield s
    s.close()


def test_unresponsive_dns_greets_within_deadline(silent_dns, posthorn):
    port = silent_dns.getsockname()[1]
    p = posthorn(dns=f"127.0.0.1:{port}", servers={
        "open": {"extra": connection_block("default allow", "deny domain isp.example")},
        "closed": {"extra": connection_block("default deny", "allow domain isp.example")},
    })

    def timed(name, src):
        t0 = time.monotonic()
        with SMTPConn(p.port(name), source=src, timeout=DNS_DEADLINE + 5) as c:
            r = c.reply()
        return r, time.monotonic() - t0

    with ThreadPoolExecutor(2) as ex:
        f_open = ex.submit(timed, "open", "127.0.0.41")
        f_closed = ex.submit(timed, "closed", "127.0.0.42")
        (r_open, t_open), (r_closed, t_closed) = f_open.result(15), f_closed.result(15)

    assert r_open.code == 220, f"default allow, DNS silent: {r_open.raw!r}\n{p.log}"
    assert t_open <= DNS_DEADLINE + 1, f"greeting took {t_open:.2f}s"
    assert r_closed.code == 554 and r_closed.first.startswith("554 5.7.1"), r_closed.raw
    assert t_closed <= DNS_DEADLINE + 1, f"greeting took {t_closed:.2f}s"

    lk = [e for e in p.events("dns-lookup") if e.get("client") == "127.0.0.41"]
    assert lk and lk[-1]["status"] == "timeout", p.log
    ev = refuse_events(p, "127.0.0.42", "closed")[-1]
    assert ev["name"] == "-" and rule_of(ev) == "default deny", ev["_line"]
    assert ev.get("dns") == "timeout", ev["_line"]
    # and the queries did go to the configured (silent) server
    silent_dns.setblocking(False)
    got = []
    for _ in range(100):
        try:
            got.append(silent_dns.recv(4096))
        except BlockingIOError:
            break
    assert got, "the silent DNS server received no query"


# -- lookups are coalesced and cached ----------------------------------------------------------------

def crowd_dns(dnsmasq, addrs):
    return dnsmasq(ptr=[(a, f"h{a.rsplit('.', 1)[1]}.isp.example") for a in addrs],
                   hosts=[(f"h{a.rsplit('.', 1)[1]}.isp.example", a) for a in addrs],
                   extra=CACHEABLE)


def open_concurrently(port, sources):
    """Open one connection per entry of sources at once (threads behind a
    barrier), each reads its greeting; all stay open until every greeting is
    in.  Returns the greeting codes."""
    n = len(sources)
    barrier = threading.Barrier(n, timeout=20)
    conns = [None] * n

    def one(i):
        barrier.wait()
        c = SMTPConn(port, source=sources[i], timeout=15)
        conns[i] = c
        return c.reply().code

    try:
        with ThreadPoolExecutor(n) as ex:
            futs = [ex.submit(one, i) for i in range(n)]
            return [f.result(30) for f in futs]
    finally:
        for c in conns:
            if c is not None:
                c.close()


@pytest.mark.parametrize("addrs", [["127.0.0.20"],
                                   ["127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.24"]],
                         ids=["one-address", "four-addresses"])
def test_hundred_concurrent_connections_one_lookup_per_address(posthorn, dnsmasq, addrs):
    d = crowd_dns(dnsmasq, addrs)
    p = posthorn(dns=d.address, servers={"mx": {
        "limits": {"connections-per-ip": 200, "connections": 500},
        "extra": connection_block("default deny", "allow domain isp.example")}})
    sources = [addrs[i % len(addrs)] for i in range(100)]
    codes = open_concurrently(p.port(), sources)
    assert codes == [220] * 100, f"greetings: {sorted(set(codes))}\n{p.log[-3000:]}"
    for a in addrs:
        n = settle_count(lambda: len(d.queries("PTR", ptr_name(a))))
        assert n == 1, f"{a}: {n} PTR queries for {sum(s == a for s in sources)} connections"
        name = f"h{a.rsplit('.', 1)[1]}.isp.example"
        assert len(d.queries("A", name)) == 1, d.queries()
    assert len(p.events("connect")) == 100


def test_cached_answer_causes_no_new_query(posthorn, dnsmasq):
    d = crowd_dns(dnsmasq, ["127.0.0.25"])
    p = posthorn(dns=d.address,
                 servers={"mx": {"extra": connection_block("default deny", "allow domain isp.example")}})
    q = lambda: len(d.queries("PTR", ptr_name("127.0.0.25")))  # noqa: E731
    assert greeting_code(p, "127.0.0.25").code == 220
    assert settle_count(q) == 1
    time.sleep(0.5)
    assert greeting_code(p, "127.0.0.25").code == 220
    time.sleep(0.3)
    assert q() == 1, d.log()
    assert len(d.queries("A", "h25.isp.example")) == 1, d.log()
    assert [e["name"] for e in connect_events(p, "127.0.0.25")] == ["h25.isp.example"] * 2


# -- the client's name in the Received: header -----------------------------------------------------

def host5_dns(dnsmasq):
    return dnsmasq(ptr=[("127.0.0.5", "host5.example.test"), ("127.0.0.6", "liar.example.test")],
                   hosts=[("host5.example.test", "127.0.0.5")])


def test_verified_name_in_received_header(posthorn, dnsmasq):
    d = host5_dns(dnsmasq)
    p = posthorn(dns=d.address)          # reverse-lookup is on by default
    deliver_from(p, "127.0.0.5", "five")
    deliver_from(p, "127.0.0.6", "six")
    msgs = p.wait_messages("bob@example.test", 2)
    rec5 = received_header(message_with_subject(msgs, "five"))
    assert rec5.startswith(f"from {CLIENT_HELO} (host5.example.test [127.0.0.5])"), rec5
    # a PTR whose name does not resolve back is not believed
    rec6 = received_header(message_with_subject(msgs, "six"))
    assert rec6.startswith(f"from {CLIENT_HELO} (unknown [127.0.0.6])"), rec6
    assert "liar" not in rec6
    assert connect_events(p, "127.0.0.5")[-1]["name"] == "host5.example.test"


def test_reverse_lookup_no_makes_no_query(posthorn, dnsmasq):
    d = host5_dns(dnsmasq)
    p = posthorn(dns=d.address, servers={"mx": {"extra": connection_block("reverse-lookup no")}})
    deliver_from(p, "127.0.0.5", "nolookup")
    msg = p.wait_messages("bob@example.test", 1)[0]
    rec = received_header(msg)
    assert rec.startswith(f"from {CLIENT_HELO} (unknown [127.0.0.5])"), rec
    time.sleep(0.3)
    assert d.queries() == [], d.log()
    assert connect_events(p, "127.0.0.5")[-1]["name"] == "-"


def test_server_dns_overrides_global_dns(posthorn, dnsmasq):
    """Two dnsmasqs name 127.0.0.5 differently: the server with its own `dns`
    shows its own dnsmasq's name, the other one the global dnsmasq's."""
    glob = dnsmasq(ptr=[("127.0.0.5", "host5.global.test")], hosts=[("host5.global.test", "127.0.0.5")])
    own = dnsmasq(ptr=[("127.0.0.5", "host5.own.test")], hosts=[("host5.own.test", "127.0.0.5")])
    p = posthorn(dns=glob.address, servers={"mx": {}, "own": {"extra": f"dns {own.address}"}})
    deliver_from(p, "127.0.0.5", "via-global", name="mx")
    deliver_from(p, "127.0.0.5", "via-own", name="own")
    msgs = p.wait_messages("bob@example.test", 2)
    rg = received_header(message_with_subject(msgs, "via-global"))
    ro = received_header(message_with_subject(msgs, "via-own"))
    assert rg.startswith(f"from {CLIENT_HELO} (host5.global.test [127.0.0.5])"), rg
    assert ro.startswith(f"from {CLIENT_HELO} (host5.own.test [127.0.0.5])"), ro
    assert len(glob.queries("PTR", ptr_name("127.0.0.5"))) == 1, glob.log()
    assert len(own.queries("PTR", ptr_name("127.0.0.5"))) == 1, own.log()


# -- connection limits ---------------------------------------------------------------------------------

def test_connections_per_ip(posthorn):
    p = posthorn(limits={"connections-per-ip": 3, "connections": 50})
    held = []
    try:
        for _ in range(3):
            c = SMTPConn(p.port(), source="127.0.0.7")
            held.append(c)
            c.greeting()
        with SMTPConn(p.port(), source="127.0.0.7") as c:
            r = c.reply()
            assert r.code == 421 and r.first.startswith("421 4.7.0"), r.raw
            assert "too many connections from your address" in r.text, r.raw
            assert c.wait_closed(5) == b""
        ev = p.wait_event("refuse", client="127.0.0.7")
        assert ev.get("reason") == "connection-limit", ev["_line"]
        # another address is not affected
        with SMTPConn(p.port(), source="127.0.0.8") as c:
            c.greeting()
        # a slot freed is a slot again (bounded wait for the daemon to see the close)
        held.pop().close()

        def try_again():
            with SMTPConn(p.port(), source="127.0.0.7") as c:
                return c.reply().code == 220
        wait_until(try_again, 5, interval=0.1, what="a fourth connection after one closed")
    finally:
        for c in held:
            c.close()


# -- posthorn check -------------------------------------------------------------------------------------

def test_check_rejects_non_contiguous_mask(posthorn):
    p = posthorn(start=False, servers={"mx": {
        "extra": connection_block("default deny", "allow 203.0.113.0 255.0.255.0")}})
    text = open(p.conf).read()
    lines = text.splitlines()
    lineno = next(i for i, ln in enumerate(lines, 1) if "255.0.255.0" in ln)
    res = p.cli("check")
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    m = re.search(r"^(\S+):(\d+):(\d+): (.*)$", res.stderr, re.M)
    assert m, f"no FILE:LINE:COL: in {res.stderr!r}"
    assert m.group(1).endswith("posthorn.conf"), res.stderr
    assert int(m.group(2)) == lineno, (lineno, res.stderr)
    col = int(m.group(3))
    line = lines[lineno - 1]
    assert col == line.index("255.0.255.0") + 1, (col, line, res.stderr)   # at the mask
    assert "255.0.255.0" in m.group(4) and "contiguous" in m.group(4), res.stderr
    assert "configuration is valid" not in res.stdout


def test_check_prints_connection_policy(posthorn):
    p = posthorn(start=False, servers={
        "mx": {"extra": connection_block("default deny", "allow 127.0.0.7", "allow 127.0.0.16/28",
                                         "allow domain isp.example")},
        "open": {"extra": connection_block("reverse-lookup no")},
    })
    res = p.cli("check")
    assert res.returncode == 0, res.stdout + res.stderr
    mx = res.stdout.split("server mx ", 1)[1].split("\nserver ", 1)[0]
    op = res.stdout.split("server open ", 1)[1].split("\nserver ", 1)[0]
    who = re.search(r"who may connect: (.*)", mx).group(1)
    assert who.startswith("only "), who
    for part in ("127.0.0.7", "127.0.0.16/28", "isp.example"):
        assert part in who, who
    assert "client names: looked up for every connection" in mx, mx
    assert "who may connect: everybody" in op, op
    assert "client names: not looked up (reverse-lookup no)" in op, op
