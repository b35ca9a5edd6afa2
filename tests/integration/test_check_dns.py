"""`posthorn check-dns` against a dnsmasq with the records each case needs:
a name that resolves and points back, a missing name, a mismatching PTR,
a listen address the name does not resolve to, and each local domain's
MX, SPF and DMARC records."""

from conftest import LOCAL_DOMAINS

# every local domain with its mail records in place
MAIL_MX = [(d, "mx.example.test", 10) for d in LOCAL_DOMAINS]
MAIL_TXT = ([(d, "v=spf1 mx -all") for d in LOCAL_DOMAINS] +
            [(f"_dmarc.{d}", "v=DMARC1; p=reject") for d in LOCAL_DOMAINS])

def _conf(p, servers):
    text = p.config_text() .split("\nserver ", 1)[0] + "\n"
    for name, listen, hostname in servers:
        text += (f"server {name} {{\n    listen {listen}\n    hostname {hostname}\n"
                 "    auth { anonymous yes }\n}\n")
    p.write_config(text)


def test_check_dns_reports_each_problem(posthorn, dnsmasq):
    d = dnsmasq(ptr=[("127.0.0.5", "mx.example.test"), ("127.0.0.6", "other.example.test")],
                hosts=[("mx.example.test", "127.0.0.5"), ("smtp.example.test", "127.0.0.6")])
    p = posthorn(start=False, dns=d.address)
    _conf(p, [("good", "127.0.0.5:2525", "mx.example.test"),
              ("ptr", "127.0.0.6:2526", "smtp.example.test"),
              ("elsewhere", "127.0.0.9:2527", "mx.example.test"),
              ("missing", "127.0.0.1:2528", "nowhere.example.test")])
    res = p.cli("check-dns")
    out = res.stdout
    assert res.returncode == 1, out + res.stderr
    good = out.split("server good:", 1)[1].split("server ptr:", 1)[0]
    assert "resolves: yes, to 127.0.0.5" in good
    assert "listen 127.0.0.5:2525: among the addresses" in good
    assert "reverse 127.0.0.5: points back to mx.example.test" in good
    ptr = out.split("server ptr:", 1)[1].split("server elsewhere:", 1)[0]
    assert "points to other.example.test, not to smtp.example.test" in ptr
    elsewhere = out.split("server elsewhere:", 1)[1].split("server missing:", 1)[0]
    assert "listen 127.0.0.9:2527: NOT among the addresses" in elsewhere
    missing = out.split("server missing:", 1)[1]
    assert "resolves: NO (notfound)" in missing
    # and each local domain without mail records: 3 more apiece
    assert f"{3 + 3 * len(LOCAL_DOMAINS)} problems found" in out
    # every query went to the test's own dnsmasq
    assert ("A", "mx.example.test") in d.queries()
    assert ("PTR", "5.0.0.127.in-addr.arpa") in d.queries()


def test_check_dns_all_good_exits_zero(posthorn, dnsmasq):
    d = dnsmasq(ptr=[("127.0.0.5", "mx.example.test")], hosts=[("mx.example.test", "127.0.0.5")],
                mx=MAIL_MX, txt=MAIL_TXT)
    p = posthorn(start=False, dns=d.address)
    _conf(p, [("good", "127.0.0.5:2525", "mx.example.test")])
    res = p.cli("check-dns")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "all names resolve and point back" in res.stdout


def test_server_dns_overrides_global(posthorn, dnsmasq):
    """A server's own `dns` directive is the one asked for its name."""
    glob = dnsmasq()
    own = dnsmasq(ptr=[("127.0.0.5", "mx.example.test")], hosts=[("mx.example.test", "127.0.0.5")])
    glob.stop()
    glob = dnsmasq(mx=MAIL_MX, txt=MAIL_TXT)  # the domains' records: asked of the global servers
    p = posthorn(start=False, dns=glob.address)
    text = p.config_text().split("\nserver ", 1)[0] + "\n"
    text += ("server good {\n    listen 127.0.0.5:2525\n    hostname mx.example.test\n"
             f"    dns {own.address}\n    auth {{ anonymous yes }}\n}}\n")
    p.write_config(text)
    res = p.cli("check-dns")
    assert res.returncode == 0, res.stdout + res.stderr
    assert own.queries("A", "mx.example.test")
    assert not glob.queries("A", "mx.example.test")


def test_check_dns_mail_records_in_words(posthorn, dnsmasq):
    """Each domain's MX, SPF and DMARC: what is there, what is wrong, what
    to publish."""
    d = dnsmasq(ptr=[("127.0.0.5", "mx.example.test")], hosts=[("mx.example.test", "127.0.0.5")],
                mx=[("example.test", "mx.example.test", 10), ("example.org", "mx.elsewhere.net", 10)],
                txt=[("example.test", "v=spf1 mx -all"), ("_dmarc.example.test", "v=DMARC1; p=none"),
                     ("example.org", "v=spf1 mx -all moo"), ("example.org", "v=spf1 +all"),
                     ("_dmarc.example.org", "v=DMARC1; p=bogus")])
    p = posthorn(start=False, dns=d.address)
    _conf(p, [("good", "127.0.0.5:2525", "mx.example.test")])
    res = p.cli("check-dns")
    out = res.stdout
    assert res.returncode == 1, out + res.stderr
    test = out.split("domain example.test:", 1)[1].split("domain example.org:", 1)[0]
    assert "MX: mx.example.test (this server)" in test
    assert "SPF: v=spf1 mx -all\n" in test
    assert "DMARC: v=DMARC1; p=none (policy none: monitoring only" in test
    org = out.split("domain example.org:", 1)[1]
    assert "no MX host is one of this configuration's host names; publish: example.org. MX 10 " \
           "mx.example.test." in org
    assert "SPF: 2 records" in org
    assert "DMARC: no valid p=; receivers ignore it" in org
    assert "3 problems found" in out


def test_check_dns_says_what_to_publish(posthorn, dnsmasq):
    d = dnsmasq(ptr=[("127.0.0.5", "mx.example.test")], hosts=[("mx.example.test", "127.0.0.5")])
    p = posthorn(start=False, dns=d.address)
    _conf(p, [("good", "127.0.0.5:2525", "mx.example.test")])
    out = p.cli("check-dns").stdout
    assert "MX: none; publish: example.test. MX 10 mx.example.test." in out
    assert 'SPF: none; publish: example.test. TXT "v=spf1 mx -all"' in out
    assert ('DMARC: none; publish: _dmarc.example.test. TXT "v=DMARC1; p=quarantine; '
            'rua=mailto:postmaster@example.test"') in out
