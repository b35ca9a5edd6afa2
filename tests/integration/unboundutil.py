"""A real validating resolver for the DANE tests: Debian's unbound on a
loopback port, serving zones of the test's own as auth-zones and
validating them against trust anchors made here.

Each zone is a dict: name, records (zone-file lines relative to the
zone's origin) and how it is signed:
  "secure"   signed with ldns-signzone; its DS is a trust anchor
  "bogus"    signed, but the anchor is the DS of another key: every
             answer fails validation (SERVFAIL, as an attack would)
  "insecure" not signed, no anchor: answers come without the AD bit

Nothing leaves loopback: the root is a stub to a port nobody listens on,
and unbound's built-in refusal of "test." is lifted.  The process is ours,
stopped by PID."""

import os
import socket
import struct
import subprocess
import time

from helpers import free_port, stop_process

UNBOUND = "/usr/sbin/unbound"
KEYGEN = "/usr/bin/ldns-keygen"
SIGNZONE = "/usr/bin/ldns-signzone"


def _run(argv, cwd):
    res = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {res.stderr}")
    return res.stdout.strip()


def _keypair(folder, zone, ksk):
    """ldns-keygen's base name (K<zone>+013+<tag>) of a new ECDSA P-256 key."""
    argv = [KEYGEN, "-a", "ECDSAP256SHA256"] + (["-k"] if ksk else []) + [zone]
    return _run(argv, folder)


class Unbound:
    def __init__(self, folder, zones):
        self.folder = os.path.join(str(folder), f"unbound-{time.monotonic_ns()}")
        os.makedirs(self.folder)
        self.port = free_port("127.0.0.1", udp=True)
        anchors, auth = [], []
        for z in zones:
            path, anchor = self._zone(z)
            if anchor:
                anchors.append(anchor)
            auth.append(f"auth-zone:\n  name: \"{z['name']}.\"\n  zonefile: \"{path}\"\n"
                        "  for-upstream: yes\n  for-downstream: no\n  fallback-enabled: no\n")
        anchor_file = os.path.join(self.folder, "anchors.ds")
        with open(anchor_file, "w") as f:
            f.write("\n".join(anchors) + "\n")
        self.log_path = os.path.join(self.folder, "unbound.log")
        conf = os.path.join(self.folder, "unbound.conf")
        with open(conf, "w") as f:
            f.write(f"""server:
  interface: 127.0.0.1
  port: {self.port}
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "{self.folder}"
  pidfile: ""
  use-syslog: no
  logfile: "{self.log_path}"
  verbosity: 1
  val-log-level: 2
  do-ip6: no
  do-not-query-localhost: no
  module-config: "validator iterator"
  trust-anchor-file: "{anchor_file}"
  local-zone: "test." nodefault
  cache-max-ttl: 1
stub-zone:
  name: "."
  stub-addr: 127.0.0.1@9
remote-control:
  control-enable: no
""" + "".join(auth))
        self.proc = subprocess.Popen([UNBOUND, "-d", "-c", conf], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"unbound did not start: {self.log()}")
            time.sleep(0.1)

    def _zone(self, z):
        name, kind = z["name"], z.get("kind", "secure")
        path = os.path.join(self.folder, f"{name}.zone")
        lines = [f"$ORIGIN {name}.", "$TTL 300",
                 f"@ IN SOA ns.{name}. hostmaster.{name}. 1 3600 600 86400 300",
                 f"@ IN NS ns.{name}.", "ns IN A 127.0.0.1"] + list(z["records"])
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        if kind == "insecure":
            return path, None
        ksk = _keypair(self.folder, name, True)
        zsk = _keypair(self.folder, name, False)
        _run([SIGNZONE, path, ksk, zsk], self.folder)
        with open(os.path.join(self.folder, ksk + ".ds")) as f:
            ds = f.read().strip()
        if kind == "bogus":
            # the anchor names a key the zone was never signed with
            other = _keypair(self.folder, name, True)
            with open(os.path.join(self.folder, other + ".ds")) as f:
                ds = f.read().strip()
        return path + ".signed", ds

    def query(self, name, qtype):
        """(rcode, AD bit, answer count) of one query with AD set (RFC 6840 §5.7)."""
        qid = os.getpid() & 0xFFFF
        head = struct.pack(">HHHHHH", qid, 0x0120, 1, 0, 0, 0)
        qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            s.sendto(head + qname + struct.pack(">HH", qtype, 1), ("127.0.0.1", self.port))
            r = s.recv(4096)
        return r[3] & 0x0F, bool(r[3] & 0x20), struct.unpack(">H", r[6:8])[0]

    def _answers(self):
        try:
            self.query("ns.invalid", 1)
            return True
        except OSError:
            return False

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stop(self):
        stop_process(self.proc, 10)
