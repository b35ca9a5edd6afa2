"""Metrics for Prometheus (posthorn.conf(5) `metrics`, posthorn(8) METRICS):
GET /metrics on the configured addresses only, in the Prometheus text
format, with counters that move when mail flows; `promtool check metrics`
finds nothing in it; a real Prometheus scrapes it and answers a query for
a counter through its HTTP API."""

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from helpers import HOST, SMTPConn, free_port, send_message, wait_until
from httputil import REMOTE, http_get, metered_daemon, samples, submit

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"


@pytest.fixture
def metered(posthorn):
    """A daemon with one SMTP server `mx` and a metrics address."""
    return lambda **kw: metered_daemon(posthorn, **kw)


def test_metrics_counts_connections_and_messages(metered):
    p = metered()
    with p.connect() as c:
        c.start()
        send_message(c, "sender@example.net", ["bob@example.test"], "Subject: m\r\n\r\nhello\r\n")
    p.wait_messages("bob@example.test", 1)
    status, headers, body = http_get(p.metrics_port)
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    got = samples(body)
    assert got['posthorn_connections_total{server="mx",result="accepted"}'] >= 1
    assert got['posthorn_messages_accepted_total{server="mx"}'] == 1
    assert got['posthorn_received_bytes_total{server="mx"}'] > 0
    assert got['posthorn_deliveries_total{result="local"}'] == 1
    assert got['posthorn_delivery_latency_seconds_count{kind="local"}'] == 1
    assert '# TYPE posthorn_connections_total counter' in body
    assert '# HELP posthorn_queue_messages ' in body


def test_metrics_listens_only_where_configured(metered):
    p = metered()
    # the SMTP port does not speak HTTP, and another loopback address of the
    # same port has no listener
    other = "127.0.0.2"
    with pytest.raises(OSError):
        socket.create_connection((other, p.metrics_port), timeout=2).close()
    status, _, _ = http_get(p.metrics_port, "/nothing-here")
    assert status == 404
    # read-only: evhttp answers other methods 501 Not Implemented
    status, _, _ = http_get(p.metrics_port, "/metrics", method="POST")
    assert status == 501


def test_metrics_refuses_oversized_request_headers(metered):
    p = metered()
    status, _, _ = http_get(p.metrics_port, headers={"X-Big": "a" * 20000})
    assert status in (400, 413, 431)
    status, _, _ = http_get(p.metrics_port, "/metrics?" + "a" * 20000)
    assert status in (400, 413, 414, 431)
    # and the listener still answers
    assert http_get(p.metrics_port)[0] == 200


def test_metrics_address_errors_name_the_place(posthorn, tmp_path):
    p = posthorn(start=False, global_extra="metrics 127.0.0.1\nmetrics 127.0.0.1:notaport")
    res = p.cli("check")
    assert res.returncode != 0
    errs = res.stderr.splitlines()
    assert any(re.search(r"posthorn\.conf:\d+:9: missing port in metrics address \"127\.0\.0\.1\"", e)
               for e in errs), res.stderr
    assert any(re.search(r"posthorn\.conf:\d+:9: bad port \"notaport\"", e) for e in errs), res.stderr


def test_metrics_address_may_not_take_a_servers_port(posthorn):
    p = posthorn(start=False)
    p.global_extra = f"metrics {HOST}:{p.port()}"
    p.write_config()
    res = p.cli("check")
    assert res.returncode != 0
    assert re.search(r"metrics address \"[0-9.:]+\" overlaps \"[0-9.:]+\" of server \"mx\"",
                     res.stderr), res.stderr


def test_metrics_on_several_addresses(posthorn):
    a, b = free_port(), free_port()
    p = posthorn(global_extra=f"metrics {HOST}:{a}\nmetrics {HOST}:{b}")
    assert http_get(a)[0] == 200
    assert http_get(b)[0] == 200
    res = p.cli("check")
    assert f"http://{HOST}:{a}/, http://{HOST}:{b}/" in res.stdout, res.stdout


def cert_new(p, hostname, out):
    res = p.cli("cert", "new", "--hostname", hostname, "--out", str(out))
    assert res.returncode == 0, res.stderr
    return os.path.join(str(out), hostname + ".crt"), os.path.join(str(out), hostname + ".key")


def test_metrics_count_tls_logins_refusals_commands_sessions_and_dns(posthorn, tmp_path):
    """One daemon with SMTP (STARTTLS, AUTH, reverse lookups), IMAP and
    POP3: every family of counters moves, with labels from fixed sets."""
    import ssl
    import imaplib
    import poplib
    from authutil import plain_response
    from tlsutil import TLSConn, client_context

    mport = free_port()
    p = posthorn(start=False, global_extra=f"metrics {HOST}:{mport}",
                 servers={"mx": {"anonymous": True}})
    crt, key = cert_new(p, "mx.example.test", tmp_path / "certs")
    os.chmod(key, 0o600)
    tls = f"tls {{\n    certificate {crt}\n    key {key}\n}}\nconnection {{\n    reverse-lookup yes\n}}"
    p.servers["mx"]["extra"] = tls
    p.servers["imap"] = {"anonymous": None, "extra": "protocol imap"}
    p.servers["pop"] = {"anonymous": None, "extra": "protocol pop3\nauth {\n    plaintext-requires-tls no\n}"}
    p.servers["imap"]["extra"] += "\nauth {\n    plaintext-requires-tls no\n}"
    p.ports["imap"] = free_port()
    p.ports["pop"] = free_port()
    p.write_config()
    p.start()

    for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
        with TLSConn(p.port()) as c:
            c.start()
            c.starttls(client_context(minimum=version, maximum=version))
            c.ehlo()
            r = c.cmd("AUTH PLAIN " + plain_response("bob@example.test", "wrong-password"))
            assert r.code == 535, r.raw
            r = c.cmd("AUTH PLAIN " + plain_response("bob@example.test", "bob-Secret-1"))
            assert r.code == 235, r.raw
            c.cmd("FROBNICATE")
    with p.connect() as c:
        c.start()
        c.expect("MAIL FROM:<a@example.net>", 250)
        r = c.cmd("RCPT TO:<nobody@example.test>")
        assert r.code == 550, r.raw
        r = c.cmd("RCPT TO:<someone@elsewhere.example>")
        assert r.code == 550, r.raw
    im = imaplib.IMAP4(HOST, p.port("imap"), timeout=10)
    im.login("bob@example.test", "bob-Secret-1")
    im.select("INBOX")
    im.logout()
    pop = poplib.POP3(HOST, p.port("pop"), timeout=10)
    pop.user("bob@example.test")
    pop.pass_("bob-Secret-1")
    pop.stat()
    pop.quit()

    status, _, body = http_get(mport)
    got = samples(body)
    want = {
        'posthorn_tls_handshakes_total{result="ok",version="TLSv1.3"}': 1,
        'posthorn_tls_handshakes_total{result="ok",version="TLSv1.2"}': 1,
        'posthorn_logins_total{server="mx",mechanism="PLAIN",result="fail"}': 2,
        'posthorn_logins_total{server="mx",mechanism="PLAIN",result="ok"}': 2,
        'posthorn_messages_rejected_total{server="mx",reason="unknown-user"}': 1,
        'posthorn_messages_rejected_total{server="mx",reason="relay"}': 1,
        'posthorn_commands_total{protocol="smtp",command="STARTTLS"}': 2,
        'posthorn_commands_total{protocol="smtp",command="other"}': 2,
        'posthorn_commands_total{protocol="imap",command="SELECT"}': 1,
        'posthorn_commands_total{protocol="pop3",command="STAT"}': 1,
        'posthorn_sessions_total{server="imap",protocol="imap"}': 1,
        'posthorn_sessions_total{server="pop",protocol="pop3"}': 1,
        'posthorn_sessions_total{server="mx",protocol="smtp"}': 3,
    }
    for k, v in want.items():
        assert got.get(k) == v, f"{k}: {got.get(k)}\n{body}"
    # every SMTP connection from 127.0.0.1 asks for its PTR record: only
    # the first question goes to the DNS server, the cache answers the rest
    ptr = got['posthorn_dns_queries_total{type="PTR"}']
    assert ptr >= 3
    assert got["posthorn_dns_cache_hits_total"] == ptr - 1
    # nothing a client sent became a label value
    for secret in ("bob@example.test", "FROBNICATE", "nobody", "elsewhere", "127.0.0.1"):
        assert secret not in body


def test_metrics_queue_gauges_and_deferred_deliveries(metered):
    p = metered(stuck_outbound=True)
    qid = submit(p, [REMOTE])
    p.wait_event("outbound", id=qid, result="deferred")
    time.sleep(1.1)  # the oldest message is at least a second old
    got = samples(http_get(p.metrics_port)[2])
    assert got["posthorn_queue_messages"] == 1
    assert got["posthorn_queue_oldest_message_age_seconds"] >= 1
    assert got['posthorn_deliveries_total{result="deferred"}'] == 1
    assert 'posthorn_deliveries_total{result="remote"}' not in got
    res = p.cli("queue", "delete", qid)
    assert res.returncode == 0, res.stderr
    got = samples(http_get(p.metrics_port)[2])
    assert got["posthorn_queue_messages"] == 0
    assert got["posthorn_queue_oldest_message_age_seconds"] == 0


def test_metrics_count_refusals_by_rule_and_by_limit(metered):
    p = metered(servers={"mx": {"anonymous": True, "limits": {"connections-per-ip": 1},
                                "extra": "connection {\n    deny 127.0.0.5\n}"}})
    with SMTPConn(p.port(), source="127.0.0.5") as c:
        assert c.reply().code == 554
    with SMTPConn(p.port()) as first:
        first.greeting()
        with SMTPConn(p.port()) as second:
            assert second.reply().code == 421
        got = samples(http_get(p.metrics_port)[2])
        assert got['posthorn_connections_open{server="mx"}'] == 1
    assert got['posthorn_connections_total{server="mx",result="refused-rule"}'] == 1
    assert got['posthorn_connections_total{server="mx",result="refused-limit"}'] == 1
    assert got['posthorn_connections_total{server="mx",result="accepted"}'] == 1


def test_metrics_count_lockouts(metered):
    p = metered(servers={"mx": {"anonymous": True,
                                "limits": {"unknown-recipients": "2 1m 1m"}}})
    with SMTPConn(p.port()) as c:
        c.start()
        c.expect("MAIL FROM:<a@example.net>", 250)
        for i in range(2):
            assert c.cmd(f"RCPT TO:<nobody{i}@example.test>").code == 550
        assert c.cmd("RCPT TO:<bob@example.test>").code == 450
    got = samples(http_get(p.metrics_port)[2])
    assert got['posthorn_lockouts_total{server="mx",reason="unknown-recipients"}'] == 1
    assert got['posthorn_messages_rejected_total{server="mx",reason="unknown-recipients-lockout"}'] == 1


# -- promtool and a real Prometheus ------------------------------------------------

def test_promtool_finds_nothing_in_the_exposition(metered):
    p = metered(stuck_outbound=True)
    submit(p, ["bob@example.test"])
    submit(p, [REMOTE])
    p.wait_messages("bob@example.test", 1)
    body = http_get(p.metrics_port)[2]
    assert "posthorn_delivery_latency_seconds_bucket" in body
    res = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == "" and res.stderr.strip() == "", res.stdout + res.stderr


PROMETHEUS_CONFIG = """global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: posthorn
    scrape_interval: 1s
    scrape_timeout: 1s
    static_configs:
      - targets: ["{target}"]
"""


def prometheus_query(port, expr):
    url = f"http://{HOST}:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as r:
        answer = json.load(r)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


@pytest.fixture
def prometheus(tmp_path):
    """start(target) runs /usr/bin/prometheus on loopback scraping target
    every second; stopped by PID at teardown."""
    procs = []

    def start(target):
        port = free_port()
        conf = tmp_path / "prometheus.yml"
        conf.write_text(PROMETHEUS_CONFIG.replace("{target}", target))
        log = open(tmp_path / "prometheus.log", "wb")
        proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={conf}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address={HOST}:{port}", "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        log.close()
        procs.append(proc)

        def ready():
            try:
                with urllib.request.urlopen(f"http://{HOST}:{port}/-/ready", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False
        wait_until(ready, 30, what="prometheus ready")
        return port

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)


def test_prometheus_scrapes_and_answers_a_counter(metered, prometheus, tmp_path):
    p = metered()
    port = prometheus(f"{HOST}:{p.metrics_port}")
    submit(p, ["bob@example.test"])
    submit(p, ["carol@example.test"])
    p.wait_messages("carol@example.test", 1)

    def scraped(expr, want):
        def check():
            result = prometheus_query(port, expr)
            return result and float(result[0]["value"][1]) == want
        return check
    wait_until(scraped('posthorn_messages_accepted_total{server="mx"}', 2), 20,
               what="prometheus to scrape 2 accepted messages")
    [up] = prometheus_query(port, 'up{job="posthorn"}')
    assert up["value"][1] == "1"
    [local] = prometheus_query(port, 'posthorn_deliveries_total{result="local"}')
    assert local["value"][1] == "2"
    assert local["metric"]["job"] == "posthorn"


def test_grafana_dashboard_queries_are_valid_promql(metered, prometheus):
    """Every expression of docs/grafana-dashboard.json, with its variables
    filled in, is accepted by Prometheus and names only metrics posthorn
    exports."""
    p = metered()
    port = prometheus(f"{HOST}:{p.metrics_port}")
    exported = set(re.findall(r"^# TYPE (\S+)", http_get(p.metrics_port)[2], re.M))
    path = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "grafana-dashboard.json")
    with open(path) as f:
        dash = json.load(f)
    exprs = [t["expr"] for panel in dash["panels"] for t in panel["targets"]]
    assert len(exprs) >= 10
    for expr in exprs:
        filled = expr.replace("$job", "posthorn").replace("$__rate_interval", "1m")
        prometheus_query(port, filled)   # status "success", else it fails
        for name in re.findall(r"posthorn_[a-z_]+", filled):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert base in exported, f"{name} in {expr}"


def test_metrics_address_change_waits_for_a_restart(metered):
    p = metered()
    old = p.metrics_port
    new = free_port()
    p.global_extra = p.global_extra.replace(f"{HOST}:{old}", f"{HOST}:{new}")
    p.write_config()
    mark = p.log_mark()
    p.reload()
    assert "new metrics addresses take effect at restart" in p.log[mark:]
    assert http_get(old)[0] == 200
    p.restart()
    assert http_get(new)[0] == 200
    with pytest.raises(OSError):
        http_get(old)
