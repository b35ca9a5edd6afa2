"""Mail to an `anonymous yes` server with a `verify` block: SPF (RFC 7208)
at MAIL FROM, DMARC (RFC 7489) on the From domain, and the one
Authentication-Results field (RFC 8601) posthorn puts on top, as a
recipient finds them in the delivered message.  The zones are the test's
own dnsmasq; the client is 127.0.0.1."""

import os
import time

from conftest import HOSTNAME
from helpers import HOST, free_port, maildir_files, send_message, split_message, wait_until
from httputil import http_get, samples
from zonedns import ZoneDNS

SPF_ZONE = [
    ("pass.test", "v=spf1 ip4:127.0.0.0/8 -all"),
    ("fail.test", "v=spf1 ip4:192.0.2.1 -all"),
    ("soft.test", "v=spf1 ~all"),
    ("reject.test", "v=spf1 ip4:192.0.2.1 -all"),
    ("_dmarc.reject.test", "v=DMARC1; p=reject"),
    ("_dmarc.quarantine.test", "v=DMARC1; p=quarantine"),
    ("_dmarc.pass.test", "v=DMARC1; p=reject"),
    ("_dmarc.sub.test", "v=DMARC1; p=reject; sp=none"),
]

VERIFY = "verify {\n    spf yes\n    dmarc enforce\n}"


def start(posthorn, dnsmasq, verify=VERIFY):
    dns = dnsmasq(txt=SPF_ZONE)
    return posthorn(dns=dns.address, servers={"mx": {"extra": verify}}), dns


def message(sender_domain, extra_fields=b""):
    return (b"From: Someone <someone@" + sender_domain.encode() + b">\r\n"
            b"To: bob@example.test\r\nSubject: verify\r\n" + extra_fields +
            b"\r\nHello.\r\n")


def deliver(d, sender, body, expect=250):
    with d.connect() as c:
        c.start()
        return send_message(c, sender, ["bob@example.test"], body, expect=expect)


def authres_fields(d, n=1):
    d.wait_messages("bob@example.test", n)
    fields, _ = split_message(d.messages("bob@example.test")[-1])
    return [v for k, v in fields if k.lower() == "authentication-results"], fields


def test_spf_pass_fail_softfail_in_authres(posthorn, dnsmasq):
    """Each SPF result is in the header field, on top; none refuses mail."""
    d, _ = start(posthorn, dnsmasq, "verify {\n    spf yes\n}")
    for i, (domain, result) in enumerate([("pass.test", b"pass"), ("fail.test", b"fail"),
                                          ("soft.test", b"softfail"), ("none.test", b"none")]):
        deliver(d, f"alice@{domain}", message(domain))
        ar, fields = authres_fields(d, i + 1)
        assert len(ar) == 1, fields
        # on top of what came with the message: right below our Received
        names = [k for k, _ in fields]
        assert names.index("Authentication-Results") == names.index("Received") + 1, names
        assert ar[0].startswith(HOSTNAME.encode() + b";"), ar
        assert b"spf=" + result + b" smtp.mailfrom=alice@" + domain.encode() in ar[0], ar
        assert b"dmarc=" not in ar[0]
    assert d.wait_event("spf", result="fail")


def test_spf_null_sender_checks_helo(posthorn, dnsmasq):
    d, _ = start(posthorn, dnsmasq, "verify {\n    spf yes\n}")
    with d.connect() as c:
        c.greeting()
        c.expect("EHLO pass.test", 250)
        send_message(c, "", ["bob@example.test"], message("pass.test"))
    ar, _ = authres_fields(d)
    assert b"spf=pass smtp.helo=pass.test" in ar[0], ar


def test_spf_temperror_when_dns_is_down(posthorn, dnsmasq):
    """No DNS answer: temperror, and the mail is still accepted."""
    d, dns = start(posthorn, dnsmasq)
    dns.stop()
    deliver(d, "alice@reject.test", message("reject.test"))
    ar, _ = authres_fields(d)
    assert b"spf=temperror" in ar[0], ar
    assert b"dmarc=temperror" in ar[0], ar


def test_dmarc_reject_is_550_at_end_of_data(posthorn, dnsmasq):
    d, _ = start(posthorn, dnsmasq)
    r = deliver(d, "alice@reject.test", message("reject.test"), expect=550)
    assert r.first.startswith("550 5.7.1") and "reject.test" in r.first, r.raw
    assert d.wait_event("reject", reason="dmarc")
    assert d.messages("bob@example.test") == []


def test_dmarc_report_mode_refuses_nothing(posthorn, dnsmasq):
    d, _ = start(posthorn, dnsmasq, "verify {\n    spf yes\n    dmarc report\n}")
    deliver(d, "alice@reject.test", message("reject.test"))
    ar, _ = authres_fields(d)
    assert b"dmarc=fail (p=reject dis=reject) header.from=reject.test" in ar[0], ar
    assert d.wait_event("dmarc-disposition", disposition="reject", applied="no")


def test_dmarc_quarantine_goes_to_junk(posthorn, dnsmasq):
    """p=quarantine under dmarc enforce: delivered into the recipient's Junk
    folder (made with the \\Junk special use), not INBOX; POP3 sees INBOX."""
    d, _ = start(posthorn, dnsmasq)
    deliver(d, "alice@fail.test", message("quarantine.test"))
    assert d.wait_event("dmarc-disposition", disposition="quarantine", applied="yes")
    junk = os.path.join(d.maildir("bob@example.test"), ".Junk")
    wait_until(lambda: len(maildir_files(junk)) == 1, 10, what="a message in Junk")
    assert d.messages("bob@example.test") == []  # not in INBOX
    with open(maildir_files(junk)[0], "rb") as f:
        fields, _ = split_message(f.read().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    ar = [v for k, v in fields if k.lower() == "authentication-results"]
    assert b"dmarc=fail (p=quarantine dis=quarantine) header.from=quarantine.test" in ar[0], ar
    with open(os.path.join(junk, "posthorn-special-use")) as f:
        assert "\\Junk" in f.read()


def test_dmarc_pass_through_aligned_spf(posthorn, dnsmasq):
    d, _ = start(posthorn, dnsmasq)
    deliver(d, "alice@pass.test", message("pass.test"))
    ar, _ = authres_fields(d)
    assert b"spf=pass" in ar[0] and b"dmarc=pass (p=reject dis=none)" in ar[0], ar


def test_dmarc_subdomain_policy(posthorn, dnsmasq):
    """news.sub.test has no record: sub.test's sp=none applies, not p=reject."""
    d, _ = start(posthorn, dnsmasq)
    deliver(d, "alice@fail.test", message("news.sub.test"))
    ar, _ = authres_fields(d)
    assert b"dmarc=fail (p=none dis=none) header.from=news.sub.test" in ar[0], ar


def test_forged_authres_removed_others_kept(posthorn, dnsmasq):
    d, _ = start(posthorn, dnsmasq, "verify {\n    spf yes\n}")
    forged = (b"Authentication-Results: " + HOSTNAME.upper().encode() +
              b";\r\n\tspf=pass smtp.mailfrom=ceo@example.test\r\n"
              b"Authentication-Results: other.example.net; spf=pass\r\n")
    deliver(d, "alice@fail.test", message("fail.test", forged))
    ar, fields = authres_fields(d)
    assert len(ar) == 2, fields
    assert ar[0].startswith(HOSTNAME.encode() + b";") and b"spf=fail" in ar[0], ar
    assert ar[1] == b"other.example.net; spf=pass", ar
    assert d.wait_event("authres-removed", count="1")


def test_message_ending_inside_header_and_pipelining(posthorn, dnsmasq):
    """The whole transaction in one write; a message that is all header."""
    d, _ = start(posthorn, dnsmasq)
    with d.connect() as c:
        c.start()
        c.send(b"MAIL FROM:<alice@pass.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
               b"From: a@pass.test\r\nSubject: only a header\r\n.\r\n")
        codes = [c.reply().code for _ in range(4)]
        assert codes == [250, 250, 354, 250], codes
    d.wait_messages("bob@example.test", 1)
    data = d.messages("bob@example.test")[0]
    assert b"Authentication-Results: " + HOSTNAME.encode() + b";" in data, data
    assert b"dmarc=pass" in data, data
    assert data.endswith(b"From: a@pass.test\r\nSubject: only a header\r\n"), data


def test_verify_needs_anonymous_smtp(posthorn, dnsmasq):
    d = posthorn(start=False, servers={"mx": {"anonymous": False, "extra": VERIFY}})
    res = d.cli("check")
    assert res.returncode == 1
    assert "\"verify\" is for an smtp server with \"anonymous yes\"" in res.stderr
    assert ":" in res.stderr.split("\"verify\"")[0]  # FILE:LINE:COL first


def test_check_prints_verify(posthorn, dnsmasq):
    d = posthorn(start=False, servers={"mx": {"extra": VERIFY}})
    res = d.cli("check")
    assert res.returncode == 0, res.stderr
    assert "verify: spf yes, dkim no, dmarc enforce, arc no" in res.stdout


def test_check_spf_command(posthorn, dnsmasq):
    d, _ = start(posthorn, dnsmasq)
    res = d.cli("check-spf", "127.0.0.1", "alice@pass.test", "client.example")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("pass identity=mailfrom"), res.stdout
    res = d.cli("check-spf", "192.0.2.7", "<>", "fail.test")
    assert res.stdout.startswith("fail identity=helo"), res.stdout
    res = d.cli("check-spf", "not-an-ip", "a@b.test", "c.test")
    assert res.returncode == 2 and "not an IP address" in res.stderr


def test_slow_dns_holds_only_its_session(posthorn):
    """A sender whose DNS answers slowly holds its own MAIL reply, nobody
    else's: the loop never waits for DNS."""
    with ZoneDNS({"slow.test": [("TXT", ("v=spf1 ip4:127.0.0.0/8 -all",))]}, delay=1.5) as dns:
        d = posthorn(dns=dns.address, servers={"mx": {"extra": "verify {\n    spf yes\n}"}})
        with d.connect() as a, d.connect() as b:
            a.start()
            b.start()
            t0 = time.monotonic()
            a.send(b"MAIL FROM:<alice@slow.test>\r\n")
            b.expect("NOOP", 250)
            b.expect("EHLO other.example", 250)
            b.expect("RSET", 250)
            assert time.monotonic() - t0 < 1.0, "the other session waited for DNS"
            r = a.reply(timeout=10)
            assert r.code == 250 and time.monotonic() - t0 >= 1.4, r.raw
    assert d.wait_event("spf", result="pass")


def test_results_are_counted_in_metrics(posthorn, dnsmasq):
    dns = dnsmasq(txt=SPF_ZONE)
    port = free_port()
    d = posthorn(dns=dns.address, global_extra=f"metrics {HOST}:{port}",
                 servers={"mx": {"extra": VERIFY}})
    deliver(d, "alice@pass.test", message("pass.test"))
    deliver(d, "alice@fail.test", message("reject.test"), expect=550)
    got = samples(http_get(port)[2])
    assert got['posthorn_verify_results_total{server="mx",method="spf",result="pass"}'] == 1
    assert got['posthorn_verify_results_total{server="mx",method="spf",result="fail"}'] == 1
    assert got['posthorn_verify_results_total{server="mx",method="dmarc",result="pass"}'] == 1
    assert got['posthorn_verify_results_total{server="mx",method="dmarc",result="fail"}'] == 1
    assert got['posthorn_messages_rejected_total{server="mx",reason="dmarc"}'] == 1


def test_forged_authres_removed_on_servers_that_do_not_verify(posthorn, dnsmasq):
    """Where one server writes Authentication-Results, no message through any
    server may bring one in its name; a server without `verify` adds none."""
    dns = dnsmasq(txt=SPF_ZONE)
    d = posthorn(dns=dns.address, servers={"mx": {"extra": VERIFY}, "other": {}})
    forged = b"Authentication-Results: " + HOSTNAME.encode() + b"; dmarc=pass\r\n"
    with d.connect("other") as c:
        c.start()
        send_message(c, "alice@fail.test", ["bob@example.test"], message("fail.test", forged))
    ar, fields = authres_fields(d)
    assert ar == [], fields
    assert ("Subject", b"verify") in fields
    assert d.wait_event("authres-removed", server="other", count="1")
