"""`posthorn check-dns` against a dnsmasq with the records each case needs:
a name that resolves and points back, a missing name, a mismatching PTR,
and a listen address the name does not resolve to."""

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
    assert "3 problems found" in out
    # every query went to the test's own dnsmasq
    assert ("A", "mx.example.test") in d.queries()
    assert ("PTR", "5.0.0.127.in-addr.arpa") in d.queries()


def test_check_dns_all_good_exits_zero(posthorn, dnsmasq):
    d = dnsmasq(ptr=[("127.0.0.5", "mx.example.test")], hosts=[("mx.example.test", "127.0.0.5")])
    p = posthorn(start=False, dns=d.address)
    _conf(p, [("good", "127.0.0.5:2525", "mx.example.test")])
    res = p.cli("check-dns")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "all names resolve and point back" in res.stdout


def test_server_dns_overrides_global(posthorn, dnsmasq):
    """A server's own `dns` directive is the one asked for its name."""
    glob = dnsmasq()
    own = dnsmasq(ptr=[("127.0.0.5", "mx.example.test")], hosts=[("mx.example.test", "127.0.0.5")])
    p = posthorn(start=False, dns=glob.address)
    text = p.config_text().split("\nserver ", 1)[0] + "\n"
    text += ("server good {\n    listen 127.0.0.5:2525\n    hostname mx.example.test\n"
             f"    dns {own.address}\n    auth {{ anonymous yes }}\n}}\n")
    p.write_config(text)
    res = p.cli("check-dns")
    assert res.returncode == 0, res.stdout + res.stderr
    assert own.queries("A", "mx.example.test")
    assert not glob.queries("A", "mx.example.test")
