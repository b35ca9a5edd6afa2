"""A real dnsmasq on a loopback port, for the tests' DNS.

Every test daemon points its `dns` at one of these: nothing under test may
query the machine's own resolver.  `--local=/#/` makes every name local, so
whatever the records do not name is NXDOMAIN at once (no upstream exists).
Records are given as dnsmasq options: ptr=[("127.0.0.5", "host5.example.test")],
hosts=[("host5.example.test", "127.0.0.5")], mx=[("example.net", "mx.example.net", 10)],
txt=[("_dmarc.example.net", "v=DMARC1; p=reject")].
"""

import os
import subprocess
import time

from helpers import free_port, stop_process

DNSMASQ = "/usr/sbin/dnsmasq"


def ptr_name(addr):
    if ":" in addr:
        import ipaddress
        return ipaddress.ip_address(addr).reverse_pointer
    return ".".join(reversed(addr.split("."))) + ".in-addr.arpa"


def free_dns_port():
    """A port free for both TCP and UDP on 127.0.0.1 (dnsmasq takes both),
    from this test process's own block (see helpers.free_port)."""
    return free_port("127.0.0.1", udp=True)


class Dnsmasq:
    def __init__(self, folder, ptr=(), hosts=(), mx=(), txt=(), extra=()):
        self.port = free_dns_port()
        self.log_path = os.path.join(str(folder), f"dnsmasq-{self.port}.log")
        argv = [DNSMASQ, "--no-daemon", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
                f"--port={self.port}", "--listen-address=127.0.0.1", "--bind-interfaces",
                "--user=root", "--local=/#/", "--log-queries", f"--log-facility={self.log_path}"]
        argv += [f"--ptr-record={ptr_name(a)},{n}" for a, n in ptr]
        argv += [f"--host-record={n},{a}" for n, a in hosts]
        argv += [f"--mx-host={d},{h},{pref}" for d, h, pref in mx]
        argv += [f"--txt-record={n},{t}" for n, t in txt]  # no ',' in t
        argv += list(extra)
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while "started" not in self.log() and self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("dnsmasq did not start")
            time.sleep(0.05)
        if self.proc.poll() is not None:
            raise RuntimeError(f"dnsmasq exited: {self.log()}")

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def queries(self, qtype=None, name=None):
        """Queries dnsmasq received: [(type, name)]."""
        out = []
        for line in self.log().splitlines():
            if "query[" not in line:
                continue
            t = line.split("query[", 1)[1].split("]", 1)[0]
            n = line.split("] ", 1)[1].split(" from ", 1)[0]
            if (qtype is None or t == qtype) and (name is None or n == name):
                out.append((t, n))
        return out

    def stop(self):
        stop_process(self.proc, 5)
