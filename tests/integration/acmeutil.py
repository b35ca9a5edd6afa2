"""Pebble, the ACME test CA (Debian's `pebble`), on loopback for the tests.

Pebble's own HTTPS gets a certificate from a CA made here (openssl), whose
file posthorn's `acme { ca ... }` trusts.  Its validation asks the tests'
dnsmasq (-dnsserver) for the names and connects to httpPort on what they
resolve to: posthorn's http-01 listener.  Stopped by its PID only.
"""

import json
import os
import ssl
import subprocess
import time
import urllib.request

from helpers import free_port, stop_process, wait_until

PEBBLE = "/usr/bin/pebble"
CA_NAME = "acme-ca.example.test"   # Pebble's own name, in the tests' DNS


def make_https_ca(folder):
    """A CA and a certificate for 127.0.0.1 signed by it: (ca.pem, cert, key)."""
    folder = str(folder)
    ca_key, ca = os.path.join(folder, "ca.key"), os.path.join(folder, "ca.pem")
    key, csr = os.path.join(folder, "pebble.key"), os.path.join(folder, "pebble.csr")
    cert, ext = os.path.join(folder, "pebble.pem"), os.path.join(folder, "ext.cnf")

    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=posthorn test ACME-HTTPS CA")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    with open(ext, "w") as f:
        f.write(f"subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:{CA_NAME}\n")
    openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
            "-out", cert, "-days", "2", "-extfile", ext)
    return ca, cert, key


class Pebble:
    def __init__(self, folder, dns_address, http_port, validity=None, https=None, port=None,
                 tls_port=None):
        self.folder = str(folder)
        os.makedirs(self.folder, exist_ok=True)
        self.ca, cert, key = https or make_https_ca(self.folder)
        self.https = (self.ca, cert, key)
        self.port = port or free_port("127.0.0.1")
        self.mgmt_port = free_port("127.0.0.1")
        cfg = {"pebble": {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{self.mgmt_port}",
            "certificate": cert, "privateKey": key,
            "httpPort": http_port, "tlsPort": tls_port or free_port("127.0.0.1"),
            "ocspResponderURL": "", "externalAccountBindingRequired": False}}
        if validity:
            cfg["pebble"]["certificateValidityPeriod"] = validity
        self.config = os.path.join(self.folder, f"pebble-{self.port}.json")
        with open(self.config, "w") as f:
            json.dump(cfg, f)
        self.dns_address = dns_address
        self.log_path = os.path.join(self.folder, f"pebble-{self.port}.log")
        self.proc = None
        self.start()

    @property
    def directory(self):
        return f"https://127.0.0.1:{self.port}/dir"

    def start(self):
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_VA_ALWAYS_VALID="0",
                   PEBBLE_WFE_NONCEREJECT="0", PEBBLE_AUTHZREUSE="0")
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([PEBBLE, "-config", self.config, "-dnsserver",
                                      self.dns_address], stdin=subprocess.DEVNULL,
                                     stdout=logf, stderr=subprocess.STDOUT, env=env)
        logf.close()
        ctx = ssl.create_default_context(cafile=self.ca)

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"pebble exited: {self.log()}")
            try:
                with urllib.request.urlopen(self.directory, context=ctx, timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False
        wait_until(up, 15, 0.1, "pebble's directory")

    def root_pem(self):
        """Pebble's root certificate (made anew at each start)."""
        ctx = ssl.create_default_context(cafile=self.ca)
        url = f"https://127.0.0.1:{self.mgmt_port}/roots/0"
        with urllib.request.urlopen(url, context=ctx, timeout=5) as r:
            return r.read().decode()

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stop(self):
        stop_process(self.proc, 10)
        self.proc = None
