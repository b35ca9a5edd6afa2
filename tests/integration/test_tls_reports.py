"""SMTP TLS reporting (RFC 8460) on outbound delivery: the outcome of
each session to a DANE domain counted per policy domain, kept across a
restart, and sent on `posthorn queue tls-report` to both addresses of the
domain's _smtp._tls record — by mail (multipart/report with the gzip'ed
JSON report, DKIM-signed by posthorn) to the outbound tests' SMTP sink,
and by HTTPS POST to a local server under a test CA.  The DNS is the DANE
tests' unbound with signed zones (unboundutil.py).

Only 127.0.0.x addresses; every wait is bounded; unbound and posthorn are
stopped by PID (the fixtures do that), the HTTPS server by its thread."""

import email
import gzip
import json
import re

from helpers import free_port, wait_until
from httputil import PostRecorder
from test_dane import SinkCert, WRONG_TLSA, relay, sinks, submit, unbound  # noqa: F401 (fixtures)
from test_dkim import new_key
from test_mta_sts import LocalCA
from test_outbound import message

MX1, MX2 = "127.0.0.2", "127.0.0.4"
REPORT_MX, REPORT_WEB = "127.0.0.6", "127.0.0.7"
SUBMITTER = "mx.example.test"


def report_of(gz):
    return json.loads(gzip.decompress(gz))


def mailed_report(data):
    """(header fields, report) of a report message (RFC 8460 §5.3)."""
    msg = email.message_from_bytes(data)
    assert msg.get_content_type() == "multipart/report", msg["Content-Type"]
    assert msg.get_param("report-type") == "tlsrpt", msg["Content-Type"]
    parts = [p for p in msg.walk() if p.get_content_type() == "application/tlsrpt+gzip"]
    assert len(parts) == 1, [p.get_content_type() for p in msg.walk()]
    return msg, report_of(parts[0].get_payload(decode=True))


def check_report(rep, mx1_ip):
    """What the domain's administrator reads: DANE (tlsa) for dane.test,
    two sessions that worked (mx2) and two refused at mx1, whose
    certificate matches no TLSA record."""
    assert rep["organization-name"] == SUBMITTER
    assert rep["contact-info"] == "postmaster@example.test"
    assert rep["date-range"]["start-datetime"].endswith("T00:00:00Z")
    [pol] = rep["policies"]
    assert pol["policy"]["policy-type"] == "tlsa"
    assert pol["policy"]["policy-domain"] == "dane.test"
    # the records of the first session's host (mx1, tried first)
    assert pol["policy"]["policy-string"] == [WRONG_TLSA], pol["policy"]
    assert pol["summary"] == {"total-successful-session-count": 2,
                              "total-failure-session-count": 2}, pol
    [fail] = pol["failure-details"]
    assert fail["result-type"] == "validation-failure"
    assert fail["receiving-mx-hostname"] == "mx1.dane.test"
    assert fail["receiving-ip"] == mx1_ip
    assert fail["sending-mta-ip"].startswith("127."), fail
    assert fail["failed-session-count"] == 2


def test_tls_report_by_mail_and_https(posthorn, posthorn_bin, unbound, sinks, tmp_path):  # noqa: F811
    port = free_port(MX1)
    web_port = free_port(REPORT_WEB)
    c1 = SinkCert(posthorn_bin, tmp_path / "c1", "mx1.dane.test")
    c2 = SinkCert(posthorn_bin, tmp_path / "c2", "mx2.dane.test")
    sinks(MX1, port, tls=c1.context(), name="mx1.dane.test")
    good = sinks(MX2, port, tls=c2.context(), name="mx2.dane.test")
    # the report's own delivery goes over TLS too, and is not counted
    c3 = SinkCert(posthorn_bin, tmp_path / "c3", "mx.reports.test")
    reports = sinks(REPORT_MX, port, tls=c3.context(), name="mx.reports.test")
    ca = LocalCA(tmp_path / "ca")
    web = PostRecorder(REPORT_WEB, web_port, ca.server_context("rpt.reports.test"))
    rua = f"mailto:tlsrpt@reports.test,https://rpt.reports.test:{web_port}/tlsrpt"
    ub = unbound([
        {"name": "dane.test", "records": [
            "@ IN MX 10 mx1.dane.test.", "@ IN MX 20 mx2.dane.test.",
            f"mx1 IN A {MX1}", f"mx2 IN A {MX2}",
            f"_{port}._tcp.mx1 IN TLSA {WRONG_TLSA}", c2.tlsa("mx2", port),
            f'_smtp._tls IN TXT "v=TLSRPTv1; rua={rua}"',
            # a domain whose only MX fails: deferred, and no TLSRPT record
            "stuck IN MX 10 mx1.dane.test."]},
        {"name": "reports.test", "kind": "insecure", "records": [
            "@ IN MX 10 mx.reports.test.", f"mx IN A {REPORT_MX}", f"rpt IN A {REPORT_WEB}"]}])
    try:
        # no tls-reports directive: on, because a DKIM key is configured
        p = relay(posthorn, ub, port, start=False,
                  outbound={"retry": "1h", "lifetime": "1h", "extra": [f"ca-file {ca.crt}"]})
        key, _ = new_key(p, "sel1", "ed25519")
        p.global_extra += f"\ndkim {{\n    key example.test sel1 {key}\n}}\n"
        p.write_config()
        p.start()
        for i in range(2):
            submit(p, "someone@dane.test", message(f"counted {i}", to="someone@dane.test"))
        good.wait_delivered(2)
        stuck = submit(p, "someone@stuck.dane.test",
                       message("stuck", to="someone@stuck.dane.test"))
        p.wait_event("outbound", result="deferred", host="mx1.dane.test", to="<someone@stuck.dane.test>")

        # `posthorn queue` says which policy applied and why it was deferred
        listing = p.cli("queue", "list").stdout
        assert "tls-policy=dane tls-result=tlsa-mismatch" in listing, listing
        assert p.cli("queue", "delete", stuck).returncode == 0  # no retry after the restart

        # the counts outlive a restart (SPOOL/tlsrpt/counts)
        p.restart()
        res = p.cli("queue", "tls-report")
        assert res.returncode == 0, res.stderr
        # dane.test, and stuck.dane.test (whose lookup finds no record)
        assert "2 TLS reports being sent" in res.stdout, res.stdout
        p.wait_event("tlsrpt-none", domain="stuck.dane.test")

        got = reports.wait_delivered(1)[0]
        assert got["tls"]
        data = got["data"]
        msg, rep = mailed_report(data)
        check_report(rep, MX1)
        assert msg["TLS-Report-Domain"] == "dane.test"
        assert msg["TLS-Report-Submitter"] == SUBMITTER
        assert re.fullmatch(rf"Report Domain: dane\.test Submitter: {SUBMITTER} "
                            rf"Report-ID: <{re.escape(rep['report-id'])}>", msg["Subject"]), \
            msg["Subject"]
        assert "d=example.test" in msg["DKIM-Signature"] and "s=sel1" in msg["DKIM-Signature"]

        wait_until(lambda: web.posts, 10, what="the HTTPS report")
        path, headers, body = web.posts[0]
        assert path == "/tlsrpt"
        assert headers["Content-Type"] == "application/tlsrpt+gzip"
        posted = report_of(body)
        check_report(posted, MX1)
        assert posted["report-id"] == rep["report-id"]

        # sent, and the report's delivery to reports.test not counted: nothing left
        assert "0 TLS reports" in p.cli("queue", "tls-report").stdout
    finally:
        web.stop()
