"""Mail filters for tests/integration/test_milter.py, each on a loopback
port of its own and stopped by PID (or, for the in-process ones, by
closing their socket):

- TestFilter: tests/milter/testfilter.c on Debian's libmilter (built by the
  Makefile beside the posthorn binary); what it does is chosen per message.
- SilentMilter: accepts connections and never answers (a filter that hangs).
- GarbageMilter: answers the option negotiation with bytes that are no
  milter reply.
- Rspamd: a real rspamd with a configuration folder of its own (only local
  modules: no DNS lists, no Redis, no network), its proxy worker in milter
  mode on a loopback port, pid file and logs in the test's folder.
"""

import os
import signal
import socket
import subprocess
import threading
import time

from helpers import HOST, free_port, wait_until

STOP_TIMEOUT = 10.0


def _port_open(port):
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _stop_pid(proc):
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)


class TestFilter:
    __test__ = False  # not a pytest class

    def __init__(self, binary, folder):
        self.port = free_port()
        self.log_path = os.path.join(folder, f"testfilter-{self.port}.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([binary, f"inet:{self.port}@{HOST}"], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        wait_until(lambda: _port_open(self.port) or self.proc.poll() is not None, 10,
                   what="the test filter's port")
        assert self.proc.poll() is None, f"testfilter exited: {open(self.log_path).read()}"

    @property
    def socket(self):
        return f"inet:{HOST}:{self.port}"

    def stop(self):
        _stop_pid(self.proc)
        self.log.close()


class _ThreadServer:
    """A listening socket served by a thread; stop() closes everything."""

    def __init__(self):
        self.port = free_port()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, self.port))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.conns = []
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    @property
    def socket(self):
        return f"inet:{HOST}:{self.port}"

    def _loop(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.conns.append(c)
            self.serve(c)

    def serve(self, conn):
        pass

    def stop(self):
        self.stopping = True
        self.thread.join(timeout=5)
        for c in self.conns:
            c.close()
        self.sock.close()


class SilentMilter(_ThreadServer):
    """Reads what comes and never answers."""


class GarbageMilter(_ThreadServer):
    """Answers the first packet with bytes that are no milter reply: a
    length of 2 GiB, then text."""

    def serve(self, conn):
        conn.settimeout(5)
        try:
            conn.recv(4096)
            conn.sendall(b"\x7f\xff\xff\xffHELLO I AM NOT A MILTER\r\n")
        except OSError:
            pass


RSPAMD_BIN = "/usr/bin/rspamd"

# rspamd's own configuration, trimmed to what runs offline: the stock
# rspamd.conf would load every module, and several look things up on the
# network (DNS block lists, URL black lists, fuzzy storage) or want Redis.
RSPAMD_OPTIONS = """
options {{
    pidfile = "{dir}/rspamd.pid";
    dbdir = "{dir}/db";
    tempdir = "{dir}/tmp";
    filters = "";
    dns {{
        nameserver = ["{dns}"];
        timeout = 1s;
        retransmits = 1;
    }}
    local_addrs = [];
    hs_cache_dir = "{dir}/hs";
}}
logging {{
    type = "file";
    filename = "{dir}/rspamd.log";
    level = "info";
}}
worker "normal" {{
    bind_socket = "{host}:{normal}";
    count = 1;
    task_timeout = 8s;
}}
worker "rspamd_proxy" {{
    bind_socket = "{host}:{proxy}";
    milter = yes;
    timeout = 10s;
    count = 1;
    upstream "local" {{
        default = yes;
        self_scan = yes;
    }}
    spam_header = "X-Spam";
    reject_message = "Spam message rejected";
}}
worker "controller" {{
    bind_socket = "{host}:{controller}";
    count = 1;
    password = "";
}}
actions {{
    reject = 15;
    add_header = 6;
    greylist = null;
}}
milter_headers {{
    use = ["x-spamd-result", "x-rspamd-queue-id", "x-spam-level"];
    extended_spam_headers = false;
}}
"""
