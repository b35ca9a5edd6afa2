"""Rules by host name (posthorn.conf(5) `allow host` / `deny host` in the
`connection` and `relay` blocks).

The name's A and AAAA records come from a dnsmasq started for the test
(the daemon's `dns` points at it); a client binds its source address to
127.0.0.x and reads the greeting, or asks to relay.  What an administrator
would check: the rule matches the addresses the name stands for and no
other; a record that changes while the daemon runs is followed once its
TTL has run out; a refresh that fails keeps the addresses in force; a
reload looks the new names up; `posthorn check` prints what each name
stands for and warns about one that does not resolve.
"""

import os
import re
import signal
import time

from helpers import SMTPConn

REMOTE = "someone@external.test"


# -- helpers ------------------------------------------------------------------------

def connection_block(*lines):
    return "connection {\n" + "".join(f"    {ln}\n" for ln in lines) + "}\n"


def relay_block(*lines):
    return "relay {\n" + "".join(f"    {ln}\n" for ln in lines) + "}\n"


def greeting(p, source):
    """Connect from `source`, read the greeting, say QUIT; the greeting."""
    with SMTPConn(p.port(), source=source) as c:
        r = c.reply()
        if r.code == 220:
            c.cmd("QUIT")
        return r


def assert_admission(p, allowed=(), refused=()):
    for src in allowed:
        r = greeting(p, src)
        assert r.code == 220, f"{src} should be allowed, got {r.raw!r}\n{p.log}"
    for src in refused:
        r = greeting(p, src)
        assert r.code == 554 and r.first.startswith("554 5.7.1"), \
            f"{src} should be refused, got {r.raw!r}\n{p.log}"


def refuse_rules(p, client):
    """The rule="..." of each event=refuse line for this client."""
    return [re.search(r'rule="([^"]*)"', e["_line"]).group(1)
            for e in p.events("refuse") if e.get("client") == client]


def wait_addresses(p, host, addresses, since=0, timeout=10.0):
    """The daemon's event=host-addresses for host with these addresses."""
    return p.wait_event("host-addresses", since=since, timeout=timeout, host=host,
                        addresses=addresses)


class HostsFile:
    """A dnsmasq --addn-hosts file: rewritten, then dnsmasq re-reads it on
    SIGHUP (sent by PID to the dnsmasq this test started)."""

    def __init__(self, folder, name, addr):
        self.path = os.path.join(str(folder), f"hosts-{name}")
        self.name = name
        self.write(addr)

    def write(self, addr):
        tmp = self.path + ".new"
        with open(tmp, "w") as f:
            f.write(f"{addr} {self.name}\n")
        os.replace(tmp, self.path)

    def change(self, dns, addr):
        self.write(addr)
        dns.proc.send_signal(signal.SIGHUP)


# -- connection -----------------------------------------------------------------------

def test_allow_host_admits_only_its_addresses(posthorn, dnsmasq):
    d = dnsmasq(hosts=[("mail.isp.example", "127.0.0.2")])
    p = posthorn(dns=d.address, servers={"mx": {"extra": connection_block(
        "default deny", "allow host Mail.ISP.example")}})
    wait_addresses(p, "mail.isp.example", "127.0.0.2")
    assert_admission(p, allowed=["127.0.0.2"], refused=["127.0.0.3", "127.0.0.1"])
    assert refuse_rules(p, "127.0.0.3") == ["default deny"]
    # the name was asked of the test's dnsmasq, both families
    assert d.queries("A", "mail.isp.example") and d.queries("AAAA", "mail.isp.example")


def test_deny_host_refuses_its_addresses(posthorn, dnsmasq):
    d = dnsmasq(hosts=[("spam.example", "127.0.0.2")])
    p = posthorn(dns=d.address, servers={"mx": {"extra": connection_block(
        "deny host spam.example")}})
    wait_addresses(p, "spam.example", "127.0.0.2")
    assert_admission(p, allowed=["127.0.0.3", "127.0.0.1"], refused=["127.0.0.2"])
    assert refuse_rules(p, "127.0.0.2") == ["host spam.example"]


def test_unresolved_name_matches_nothing(posthorn, dnsmasq):
    """A name with no records: `allow host` admits nobody (default deny
    stays closed), `deny host` refuses nobody (default allow stays open)."""
    d = dnsmasq(hosts=[("mail.isp.example", "127.0.0.2")])
    p = posthorn(dns=d.address, servers={
        "closed": {"extra": connection_block("default deny", "allow host gone.example")},
        "open": {"extra": connection_block("deny host gone.example")}})
    p.wait_event("host-addresses", host="gone.example", server="closed", status="notfound",
                 addresses="none")
    p.wait_event("host-addresses", host="gone.example", server="open", status="notfound",
                 addresses="none")
    for src in ("127.0.0.2", "127.0.0.3"):
        with SMTPConn(p.port("closed"), source=src) as c:
            assert c.reply().code == 554
        with SMTPConn(p.port("open"), source=src) as c:
            assert c.reply().code == 220
            c.cmd("QUIT")


# -- relay ----------------------------------------------------------------------------

def relay_probe(p, source):
    with SMTPConn(p.port(), source=source) as c:
        c.start()
        c.expect("MAIL FROM:<someone@example.net>", 250)
        r = c.cmd(f"RCPT TO:<{REMOTE}>")
        c.cmd("RSET")
        c.cmd("QUIT")
        return r


def test_relay_allow_host(posthorn, dnsmasq):
    d = dnsmasq(hosts=[("office.example", "127.0.0.2")])
    p = posthorn(dns=d.address, servers={"mx": {"anonymous": True, "extra": relay_block(
        "allow host office.example")}})
    wait_addresses(p, "office.example", "127.0.0.2")
    r = relay_probe(p, "127.0.0.2")
    assert r.code == 250, r.raw
    r = relay_probe(p, "127.0.0.3")
    assert r.code == 550 and r.lines[0].startswith("5.7.1"), r.raw
    rules = re.findall(r'event=relay .*? rule="([^"]*)"', p.log)
    assert rules == ["host office.example"], p.log


# -- refresh ----------------------------------------------------------------------------

def test_changed_record_is_followed_after_its_ttl(posthorn, dnsmasq, tmp_path):
    hosts = HostsFile(tmp_path, "moving.example", "127.0.0.2")
    d = dnsmasq(extra=(f"--addn-hosts={hosts.path}", "--local-ttl=2"))
    p = posthorn(dns=d.address, global_extra="host-refresh 1s 1d",
                 servers={"mx": {"extra": connection_block("default deny",
                                                           "allow host moving.example")}})
    ev = wait_addresses(p, "moving.example", "127.0.0.2")
    assert ev["ttl"] == "2" and ev["refresh"] == "2s", ev["_line"]
    assert_admission(p, allowed=["127.0.0.2"], refused=["127.0.0.3"])

    mark = p.log_mark()
    changed = time.monotonic()
    hosts.change(d, "127.0.0.3")
    # the old answer may be used for its 2 s, then the new one comes
    wait_addresses(p, "moving.example", "127.0.0.3", since=mark, timeout=10.0)
    # after the record's TTL, far sooner than the default 30 s minimum
    assert time.monotonic() - changed < 8.0
    assert_admission(p, allowed=["127.0.0.3"], refused=["127.0.0.2"])


def test_failed_refresh_keeps_the_addresses(posthorn, dnsmasq):
    d = dnsmasq(hosts=[("mail.isp.example", "127.0.0.2")], extra=("--local-ttl=1",))
    p = posthorn(dns=d.address, global_extra="host-refresh 1s 1d",
                 servers={"mx": {"extra": connection_block(
                     "default deny", "allow host mail.isp.example", "reverse-lookup no")}})
    wait_addresses(p, "mail.isp.example", "127.0.0.2")
    mark = p.log_mark()
    d.stop()
    ev = p.wait_event("host-lookup-failed", since=mark, timeout=15.0, host="mail.isp.example")
    assert ev["kept"] == "127.0.0.2" and ev["retry"].endswith("s"), ev["_line"]
    assert_admission(p, allowed=["127.0.0.2"], refused=["127.0.0.3"])
    assert not p.events("host-addresses", since=mark)


def test_reload_looks_up_the_new_names(posthorn, dnsmasq):
    d = dnsmasq(hosts=[("a.example", "127.0.0.2"), ("b.example", "127.0.0.3")])
    p = posthorn(dns=d.address, servers={"mx": {"extra": connection_block(
        "default deny", "allow host a.example")}})
    wait_addresses(p, "a.example", "127.0.0.2")
    assert_admission(p, allowed=["127.0.0.2"], refused=["127.0.0.3"])
    mark = p.log_mark()
    p.write_config(p.config_text(mx={"extra": connection_block(
        "default deny", "allow host b.example")}))
    p.reload()
    wait_addresses(p, "b.example", "127.0.0.3", since=mark)
    assert_admission(p, allowed=["127.0.0.3"], refused=["127.0.0.2"])


def test_reload_keeps_the_addresses_until_an_answer(posthorn, dnsmasq):
    """A reload while the DNS server is down: the new configuration starts
    from the addresses the running one knew, and keeps them."""
    d = dnsmasq(hosts=[("a.example", "127.0.0.2")])
    p = posthorn(dns=d.address, servers={"mx": {"extra": connection_block(
        "default deny", "allow host a.example", "reverse-lookup no")}})
    wait_addresses(p, "a.example", "127.0.0.2")
    d.stop()
    mark = p.log_mark()
    p.reload()
    ev = p.wait_event("host-lookup-failed", since=mark, timeout=15.0, host="a.example")
    assert ev["kept"] == "127.0.0.2", ev["_line"]
    assert_admission(p, allowed=["127.0.0.2"], refused=["127.0.0.3"])


# -- posthorn check ------------------------------------------------------------------------

def test_check_prints_addresses_and_warns(posthorn, dnsmasq):
    d = dnsmasq(hosts=[("mail.isp.example", "127.0.0.2"), ("v6.isp.example", "2001:db8::25"),
                       ("dual.isp.example", "127.0.0.4"), ("dual.isp.example", "2001:db8::4")])
    p = posthorn(start=False, dns=d.address, servers={"mx": {"anonymous": True, "extra":
        connection_block("allow host mail.isp.example", "deny host gone.example",
                         "allow host dual.isp.example")
        + relay_block("allow host v6.isp.example")}})
    res = p.cli("check")
    out = res.stdout
    assert res.returncode == 0, out + res.stderr
    assert "server mx: mail.isp.example stands for 127.0.0.2\n" in out
    assert "server mx: v6.isp.example stands for 2001:db8::25\n" in out
    assert re.search(r"server mx: dual\.isp\.example stands for (127\.0\.0\.4 2001:db8::4|"
                     r"2001:db8::4 127\.0\.0\.4)\n", out), out
    assert "server mx: gone.example stands for no address (notfound)\n" in out
    assert ("warning: server mx: host gone.example does not resolve (notfound): its rules "
            "match nothing until it does\n") in out
    # the names that resolve are no warning
    assert [ln for ln in out.splitlines() if ln.startswith("warning:") and "host" in ln] == [
        "warning: server mx: host gone.example does not resolve (notfound): its rules match "
        "nothing until it does"], out
    # the rules in plain words
    assert "allow the addresses of mail.isp.example" in out
    assert "also the addresses of v6.isp.example" in out or \
        "only the addresses of v6.isp.example" in out, out
    # asked of the configured DNS server, nothing else
    assert d.queries("A", "gone.example") and d.queries("AAAA", "v6.isp.example")
