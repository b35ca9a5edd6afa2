#!/usr/bin/env python3
"""The cost of a login against a directory (`users ldap`), for the closing
note: a real slapd (tests/integration/ldaputil.py) and posthorn on
loopback, SMTP AUTH PLAIN inside TLS, timed from the AUTH line to the 235.

  cold:   the first login after start (a worker thread starts, connects
          to slapd over TLS, binds as the service account, searches, opens
          the user connection over TLS and binds as the user)
  cached: the same user again (the cache knows the entry: one bind on the
          worker's open connection)
  search: a user the cache does not know yet (search + bind, connections open)

Usage: bench/directory-login.py [POSTHORN_BINARY] (default build/release/posthorn).
Everything runs in a temporary folder and is stopped by PID.
"""

import os
import smtplib
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

import ldaputil  # noqa: E402
from authutil import plain_response  # noqa: E402
from helpers import HOST, free_port  # noqa: E402

ROUNDS = 200
USERS = 50


def main():
    binary = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                             os.path.join(HERE, "..", "build", "release", "posthorn"))
    users = {f"u{i}@example.test": (f"u{i}", f"u{i}-Secret", [f"u{i}@example.test"], [],
                                    f"u{i}@EXAMPLE.TEST") for i in range(USERS)}
    with tempfile.TemporaryDirectory() as d:
        certs = ldaputil.make_ca_and_cert(os.path.join(d, "certs"))
        slapd = ldaputil.Slapd(os.path.join(d, "slapd"), certs, users=users).start()
        port = free_port()
        conf = os.path.join(d, "posthorn.conf")
        with open(conf, "w") as f:
            f.write("\n".join([
                "hostname mx.example.test", "domains example.test",
                f"spool {d}/spool", f"mailboxes {d}/mail",
                ldaputil.users_ldap_block([slapd.ldaps_uri], certs["ca"],
                                          ldaputil.write_secret(d)),
                "server sub {", f"    listen {HOST}:{port}",
                f"    tls {{\n        certificate {certs['crt']}\n        key {certs['key']}\n    }}",
                "    auth {\n        anonymous no\n        lockout 1000 1m 1m\n    }", "}", ""]))
        log = open(os.path.join(d, "posthorn.log"), "wb")
        daemon = subprocess.Popen([binary, "serve", "-c", conf], stdout=log, stderr=log)
        try:
            run(port, certs, users)
        finally:
            daemon.terminate()
            daemon.wait(timeout=10)
            slapd.stop()


def login_ms(s, user, password):
    t = time.perf_counter()
    code, text = s.docmd("AUTH", "PLAIN " + plain_response(user, password))
    ms = (time.perf_counter() - t) * 1000
    assert code == 235, (code, text)
    return ms


def session(port, certs):
    for _ in range(100):
        try:
            s = smtplib.SMTP(HOST, port, timeout=15)
            break
        except OSError:
            time.sleep(0.05)
    s.starttls(context=ssl.create_default_context(cafile=certs["ca"]))
    s.ehlo("bench.example.net")
    return s


def run(port, certs, users):
    names = list(users)
    s = session(port, certs)
    cold = login_ms(s, names[0], users[names[0]][1])
    s.quit()
    cached, search = [], []
    # the other users first: by then every worker has its connections open
    for name in names[1:]:
        s = session(port, certs)
        search.append(login_ms(s, name, users[name][1]))
        s.quit()
    for i in range(ROUNDS):
        s = session(port, certs)
        cached.append(login_ms(s, names[0], users[names[0]][1]))
        s.quit()
    print(f"cold login (first after start):  {cold:.2f} ms")
    print(f"cached entry (bind only):        median {statistics.median(cached):.2f} ms, "
          f"p95 {sorted(cached)[int(len(cached) * 0.95)]:.2f} ms over {len(cached)}")
    print(f"uncached entry (search + bind):  median {statistics.median(search):.2f} ms over "
          f"{len(search)}, p95 {sorted(search)[int(len(search) * 0.95)]:.2f} ms")


if __name__ == "__main__":
    main()
