"""Mail filters for tests/integration/test_milter.py, each on a loopback
port of its own and stopped by PID (or, for the in-process ones, by
closing their socket):

- TestFilter: tests/milter/testfilter.c on Debian's libmilter (built by the
  Makefile beside the posthorn binary); what it does is chosen per message.
- SilentMilter: accepts connections and never answers (a filter that hangs).
- GarbageMilter: answers the option negotiation with bytes that are no
  milter reply.
- ScriptedMilter: speaks just enough of the protocol to send a chosen
  reply at a chosen step (a smuggled header field, a change it never
  negotiated, a change before the end of the message).
- Rspamd: a real rspamd with a configuration folder of its own (only local
  modules: no DNS lists, no Redis, no network), its proxy worker in milter
  mode on a loopback port, pid file and logs in the test's folder.
"""

import os
import struct
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

    def __init__(self, binary, folder, unix=False, env=None):
        """On a loopback port, or (unix) on a Unix socket in folder; env:
        more environment (TESTFILTER_CONNECT, TESTFILTER_EVENTS)."""
        self.port = free_port()
        self.path = os.path.join(folder, f"testfilter-{self.port}.sock") if unix else None
        self.log_path = os.path.join(folder, f"testfilter-{self.port}.log")
        self.log = open(self.log_path, "wb")
        conn = f"unix:{self.path}" if unix else f"inet:{self.port}@{HOST}"
        self.proc = subprocess.Popen([binary, conn], stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        wait_until(lambda: self._listening() or self.proc.poll() is not None, 10,
                   what="the test filter's socket")
        assert self.proc.poll() is None, f"testfilter exited: {open(self.log_path).read()}"

    def _listening(self):
        if not self.path:
            return _port_open(self.port)
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(self.path)
                return True
        except OSError:
            return False

    @property
    def socket(self):
        return f"unix:{self.path}" if self.path else f"inet:{HOST}:{self.port}"

    def stop(self):
        # SIGKILL, by PID: on SIGTERM libmilter waits about 5 s for its
        # idle worker threads, and the filter keeps nothing worth a clean exit
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)
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
RSPAMD_SHARE = "/usr/share/rspamd"
READY_TIMEOUT = 60.0

# rspamd's configuration, written whole (the stock rspamd.conf loads every
# module; several look things up on the network or want Redis): the rules
# and the Lua plugins of the package, but only milter_headers configured,
# so only it runs among the plugins; no C filters (filters = ""), DNS only
# to the tests' dnsmasq, a tiny public-suffix list (the full one takes
# half a minute to compile).
RSPAMD_CONF = """
options {{
    pidfile = "{dir}/rspamd.pid";
    dbdir = "{dir}/db";
    tempdir = "{dir}/tmp";
    hs_cache_dir = "{dir}/hs";
    filters = "";
    url_tld = "{dir}/tld.dat";
    enable_test_patterns = true;  # GTUBE's variants: YJS... is "add header"
    dns {{ nameserver = ["{dns}"]; timeout = 1s; retransmits = 1; }}
}}
logging {{ type = "file"; filename = "{dir}/rspamd.log"; level = "info"; }}
worker "normal" {{ bind_socket = "{host}:{normal}"; count = 1; }}
worker "rspamd_proxy" {{
    bind_socket = "{host}:{proxy}";
    milter = yes;
    timeout = 10s;
    count = 1;
    upstream "local" {{ default = yes; self_scan = yes; }}
    spam_header = "X-Spam";
}}
lua = "{share}/rules/rspamd.lua";
modules {{ path = "{share}/plugins"; }}
actions {{ reject = 15; add_header = 6; greylist = null; }}
milter_headers {{
    use = ["x-spamd-result", "x-rspamd-queue-id", "x-spam-status"];
    skip_local = false;          # the tests send from 127.0.0.1
    skip_authenticated = false;
}}
"""


class Rspamd:
    def __init__(self, folder, dns):
        self.dir = os.path.join(folder, "rspamd")
        for sub in ("db", "tmp", "hs"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        with open(os.path.join(self.dir, "tld.dat"), "w") as f:
            f.write("com\nnet\norg\ntest\n")
        self.port = free_port()
        self.normal = free_port()
        self.conf = os.path.join(self.dir, "rspamd.conf")
        with open(self.conf, "w") as f:
            f.write(RSPAMD_CONF.format(dir=self.dir, dns=dns, host=HOST, normal=self.normal,
                                       proxy=self.port, share=RSPAMD_SHARE))
        self.out = open(os.path.join(self.dir, "stdout.log"), "wb")
        self.proc = None
        self.start()

    @property
    def socket(self):
        return f"inet:{HOST}:{self.port}"

    def _ready(self):
        if self.proc.poll() is not None:
            return True
        try:
            with socket.create_connection((HOST, self.normal), timeout=1) as s:
                s.sendall(b"GET /ping HTTP/1.0\r\n\r\n")
                return b"pong" in s.recv(4096)
        except OSError:
            return False

    def start(self):
        # -f: stay in the foreground (its PID is the main process's); -i:
        # the tests run as root, and rspamd refuses that without it
        self.proc = subprocess.Popen([RSPAMD_BIN, "-f", "-i", "-c", self.conf],
                                     stdout=self.out, stderr=subprocess.STDOUT)
        wait_until(self._ready, READY_TIMEOUT, what="rspamd answering /ping")
        assert self.proc.poll() is None, f"rspamd exited; see {self.dir}/rspamd.log"
        wait_until(lambda: _port_open(self.port), 10, what="rspamd's milter port")

    def stop(self):
        """SIGTERM to the main process, which stops its workers."""
        _stop_pid(self.proc)
        wait_until(lambda: not _port_open(self.port), 10, what="rspamd's milter port closed")

    def close(self):
        self.stop()
        self.out.close()


def _packet(cmd, data=b""):
    return struct.pack(">I", len(data) + 1) + cmd + data


class ScriptedMilter(_ThreadServer):
    """Speaks the protocol just enough: negotiates version 6 with the
    actions given and every step sent and answered, answers each step with
    `step` (SMFIR_CONTINUE unless given), and at the end of the message
    sends the packets of `eom` (raw bytes) in place of a verdict."""

    def __init__(self, eom, actions=0x1ff, step=None):
        self.eom = eom
        self.actions = actions
        self.step = step or _packet(b"c")
        super().__init__()

    def _read_packet(self, conn):
        head = b""
        while len(head) < 4:
            chunk = conn.recv(4 - len(head))
            if not chunk:
                return None, None
            head += chunk
        n = struct.unpack(">I", head)[0]
        data = b""
        while len(data) < n:
            chunk = conn.recv(min(65536, n - len(data)))
            if not chunk:
                return None, None
            data += chunk
        return data[:1], data[1:]

    def serve(self, conn):
        conn.settimeout(10)
        try:
            while True:
                cmd, _ = self._read_packet(conn)
                if cmd is None or cmd in (b"Q", b"K"):
                    return
                if cmd == b"O":
                    conn.sendall(_packet(b"O", struct.pack(">III", 6, self.actions, 0)))
                elif cmd == b"E":
                    conn.sendall(self.eom)
                elif cmd not in (b"D", b"A"):
                    conn.sendall(self.step)
        except OSError:
            return
