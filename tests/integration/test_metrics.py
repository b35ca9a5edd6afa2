"""Metrics for Prometheus (posthorn.conf(5) `metrics`, posthorn(8) METRICS):
GET /metrics on the configured addresses only, in the Prometheus text
format, with counters that move when mail flows; `promtool check metrics`
finds nothing in it; a real Prometheus scrapes it and answers a query for
a counter through its HTTP API."""

import http.client
import os
import re
import signal
import socket
import subprocess
import time
import urllib.parse
import json

import pytest

from helpers import HOST, free_port, send_message, wait_until

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"


def http_get(port, path="/metrics", host=HOST, method="GET", headers=None, timeout=10):
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read().decode("utf-8", "replace")
    finally:
        c.close()


def samples(text):
    """{'name{labels}': value} of an exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, value = line.rsplit(" ", 1)
        out[key] = float(value)
    return out


@pytest.fixture
def metered(posthorn):
    """A daemon with one SMTP server `mx` and a metrics address."""
    def make(**kw):
        port = free_port()
        extra = kw.pop("global_extra", "")
        p = posthorn(global_extra=f"metrics {HOST}:{port}\n{extra}", **kw)
        p.metrics_port = port
        return p
    return make


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
