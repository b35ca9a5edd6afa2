"""A real HAProxy (Debian's `haproxy`, scripts/install-deps) on loopback in
front of posthorn, for test_proxy.py and the two-node tests: mode tcp, one
frontend on a free loopback port per route, its backend one posthorn
listener or several taken in turn (`balance roundrobin`), each sent the
PROXY protocol header the route names (`send-proxy-v2`, `send-proxy`).
Started in the foreground in a temporary folder (`haproxy -f CFG -db`) and
stopped by PID.
"""

import os
import shutil
import socket
import subprocess

import pytest

from helpers import HOST, free_port, stop_process, wait_until

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
BALANCER = "127.0.0.1"          # HAProxy's source address towards posthorn


class HAProxy:
    """One HAProxy in mode tcp: a frontend on a free loopback port per
    route (key, backends, option); backends is a port on 127.0.0.1 or a
    list of (address, port) taken round-robin."""

    def __init__(self, folder, routes):
        self.folder = str(folder)
        os.makedirs(self.folder, exist_ok=True)
        self.ports = {}
        cfg = ["global", "    maxconn 256", "",
               "defaults", "    mode tcp", "    timeout connect 5s",
               "    timeout client 30s", "    timeout server 30s", ""]
        for i, (key, backends, option) in enumerate(routes):
            port = free_port()
            self.ports[key] = port
            if isinstance(backends, int):
                backends = [(HOST, backends)]
            cfg += [f"frontend f{i}", f"    bind {HOST}:{port}", f"    default_backend b{i}", "",
                    f"backend b{i}", "    balance roundrobin"]
            cfg += [f"    server s{k + 1} {addr}:{bport} source {BALANCER} {option}"
                    for k, (addr, bport) in enumerate(backends)]
            cfg.append("")
        self.cfg = os.path.join(self.folder, "haproxy.cfg")
        with open(self.cfg, "w") as f:
            f.write("\n".join(cfg))
        self.log = open(os.path.join(self.folder, "haproxy.log"), "wb")
        self.proc = subprocess.Popen([HAPROXY, "-f", self.cfg, "-db"], cwd=self.folder,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        for port in self.ports.values():
            wait_until(lambda p=port: self._listening(p), 10, what=f"haproxy on port {port}")

    def _listening(self, port):
        """Is HAProxy bound to port?  Found by failing to bind it, not by
        connecting: a connection would reach posthorn as a client."""
        assert self.proc.poll() is None, f"haproxy exited: {self.output()}"
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            probe.bind((HOST, port))
            return False
        except OSError:
            return True
        finally:
            probe.close()

    def output(self):
        with open(os.path.join(self.folder, "haproxy.log"), "rb") as f:
            return f.read().decode("utf-8", "replace")

    def port(self, key):
        return self.ports[key]

    def stop(self):
        stop_process(self.proc, 10)
        self.log.close()


@pytest.fixture
def haproxy(tmp_path):
    """Factory: haproxy([(key, backends, "send-proxy-v2"), ...]) -> HAProxy."""
    started = []

    def make(routes):
        h = HAProxy(tmp_path / f"haproxy{len(started) + 1}", routes)
        started.append(h)
        return h
    yield make
    for h in started:
        h.stop()
