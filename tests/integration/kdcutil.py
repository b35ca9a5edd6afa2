"""A real MIT Kerberos KDC for the GSSAPI tests, all inside one folder.

`Kdc(folder)` writes its own krb5.conf and kdc.conf (used through
KRB5_CONFIG and KRB5_KDC_PROFILE: /etc/krb5.conf is never read), makes a
realm database with `kdb5_util create -s`, and starts `krb5kdc -n` on a
free loopback port (TCP and UDP) that it waits for; `stop()` ends it by
its PID.  Clients find the KDC through `kdc = 127.0.0.1:PORT` with
dns_lookup_kdc and dns_lookup_realm off and host names taken as written
(dns_canonicalize_hostname false, rdns false): nothing is asked of the
machine's resolver.

Principals are made with `kadmin.local` (random keys), keytabs with its
`ktadd`, and tickets with `kinit -k -t` into a credential cache of the
folder.  `env()` is the environment for every client and for the daemon.
"""

import os
import socket
import subprocess
import time

from helpers import HOST, free_port, stop_process

REALM = "POSTHORN.TEST"
KDB5_UTIL = "/usr/sbin/kdb5_util"
KADMIN_LOCAL = "/usr/sbin/kadmin.local"
KRB5KDC = "/usr/sbin/krb5kdc"
KINIT = "/usr/bin/kinit"
KDESTROY = "/usr/bin/kdestroy"

START_TIMEOUT = 15.0
CLOCKSKEW = 2          # seconds: an expired ticket is refused soon after it ends


class Kdc:
    def __init__(self, folder, realm=REALM, domains=("mx.example.test",)):
        self.folder = str(folder)
        os.makedirs(self.folder, exist_ok=True)
        self.realm = realm
        self.port = free_port(udp=True)
        self.krb5_conf = os.path.join(self.folder, "krb5.conf")
        self.kdc_conf = os.path.join(self.folder, "kdc.conf")
        self.ccache = os.path.join(self.folder, "ccache")
        self.proc = None
        self._write_confs(domains)
        self._create_database()
        self._start()

    # -- configuration --------------------------------------------------------
    def _write_confs(self, domains):
        mapping = "\n".join(f"    {d} = {self.realm}" for d in domains)
        with open(self.krb5_conf, "w") as f:
            f.write(f"""[libdefaults]
    default_realm = {self.realm}
    dns_lookup_kdc = false
    dns_lookup_realm = false
    dns_canonicalize_hostname = false
    rdns = false
    udp_preference_limit = 1
    clockskew = {CLOCKSKEW}
    default_ccache_name = FILE:{self.ccache}

[realms]
    {self.realm} = {{
        kdc = {HOST}:{self.port}
    }}

[domain_realm]
{mapping}
""")
        with open(self.kdc_conf, "w") as f:
            f.write(f"""[kdcdefaults]
    kdc_listen = {HOST}:{self.port}
    kdc_tcp_listen = {HOST}:{self.port}

[realms]
    {self.realm} = {{
        database_name = {self.folder}/principal
        key_stash_file = {self.folder}/stash
        acl_file = {self.folder}/kadm5.acl
        max_life = 1h
        kdc_listen = {HOST}:{self.port}
        kdc_tcp_listen = {HOST}:{self.port}
    }}

[logging]
    kdc = FILE:{self.folder}/kdc.log
""")
        open(os.path.join(self.folder, "kadm5.acl"), "w").close()

    def env(self, **extra):
        """The environment of a Kerberos client (or the daemon) of this realm."""
        env = dict(os.environ)
        env.update(KRB5_CONFIG=self.krb5_conf, KRB5_KDC_PROFILE=self.kdc_conf,
                   KRB5CCNAME=f"FILE:{self.ccache}")
        env.pop("KRB5_KTNAME", None)
        env.pop("KRB5_CLIENT_KTNAME", None)
        env.update(extra)
        return env

    def _run(self, argv, timeout=30):
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                             env=self.env(), stdin=subprocess.DEVNULL)
        assert res.returncode == 0, f"{argv}: {res.returncode}\n{res.stdout}\n{res.stderr}"
        return res

    def _create_database(self):
        self._run([KDB5_UTIL, "-r", self.realm, "create", "-s", "-P", "posthorn-test-master"])

    def _start(self):
        self.proc = subprocess.Popen([KRB5KDC, "-n", "-r", self.realm],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.folder, "krb5kdc.err"), "w"),
                                     env=self.env(), start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"krb5kdc exited with {self.proc.returncode}: "
                                     + self.log())
            try:
                with socket.create_connection((HOST, self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError(f"krb5kdc not listening on {HOST}:{self.port} after "
                             f"{START_TIMEOUT}s: " + self.log())

    def log(self):
        out = ""
        for name in ("kdc.log", "krb5kdc.err"):
            try:
                with open(os.path.join(self.folder, name)) as f:
                    out += f.read()
            except FileNotFoundError:
                pass
        return out

    def stop(self):
        stop_process(self.proc, 10)

    # -- principals, keytabs, tickets ------------------------------------------
    def kadmin(self, query):
        return self._run([KADMIN_LOCAL, "-r", self.realm, "-q", query])

    def addprinc(self, name, maxlife=None):
        """A principal with a random key (clients get theirs from a keytab)."""
        life = f"-maxlife {maxlife} " if maxlife else ""
        self.kadmin(f"addprinc -randkey {life}{name}")

    def ktadd(self, keytab, *names):
        self.kadmin(f"ktadd -k {keytab} " + " ".join(names))
        os.chmod(keytab, 0o600)

    def kinit(self, name, keytab, lifetime=None, ccache=None):
        """A ticket-granting ticket for name into ccache (a file path; the
        folder's cache by default); returns the cache's name."""
        ccache = ccache or self.ccache
        argv = [KINIT, "-k", "-t", keytab, "-c", f"FILE:{ccache}"]
        if lifetime:
            argv += ["-l", lifetime]
        self._run(argv + [name])
        return f"FILE:{ccache}"

    def kdestroy(self):
        subprocess.run([KDESTROY], env=self.env(), capture_output=True, timeout=10)
