"""A real OpenLDAP slapd for the directory tests (test_ldap.py): its own
slapd.conf, database and schema in a temporary folder, the schemas core,
cosine and inetOrgPerson plus a small one of ours (POSTHORN_SCHEMA: a
multi-valued proxyAddresses and a userPrincipalName as Active Directory
has them), TLS with the test certificate, ldap:// (StartTLS) and ldaps://
on free loopback ports, loaded with slapadd, stopped by PID.

Nothing here resolves names: every URI names 127.0.0.1.
"""

import os
import socket
import subprocess
import time

from helpers import HOST, free_port

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SCHEMA_DIR = "/etc/ldap/schema"
MODULE_DIR = "/usr/lib/ldap"
BASE = "dc=example,dc=test"
PEOPLE = "ou=people," + BASE
SERVICE_DN = "cn=posthorn,ou=services," + BASE
SERVICE_PASSWORD = "service-Secret-9"
START_TIMEOUT = 10.0

POSTHORN_SCHEMA = """\
attributetype ( 1.3.6.1.4.1.32473.1.1 NAME 'proxyAddresses'
    DESC 'every address of a user, "SMTP:" for the primary, as Active Directory'
    EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )
attributetype ( 1.3.6.1.4.1.32473.1.2 NAME 'userPrincipalName'
    DESC 'the Kerberos principal of a user, as Active Directory'
    EQUALITY caseIgnoreMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.32473.2.1 NAME 'posthornUser' SUP top AUXILIARY
    MAY ( proxyAddresses $ userPrincipalName ) )
"""

# address -> (uid, password, mail values, proxyAddresses values, principal)
USERS = {
    "alice@example.test": ("alice", "alice-Secret-1", ["alice@example.test"],
                           ["SMTP:alice@example.test", "smtp:al@example.test",
                            "smtp:a.smith@example.org", "x500:/o=Org/cn=alice"],
                           "alice@EXAMPLE.TEST"),
    "dave@example.test": ("dave", "dave-Secret-2", ["dave@example.test"], [],
                          "dave@EXAMPLE.TEST"),
}


def make_ca_and_cert(folder):
    """A test CA and a certificate for 127.0.0.1 (IP subjectAltName) that
    it signs, made with the openssl CLI: {"ca", "crt", "key"} paths.  The
    directory's clients check the server against the CA."""
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    ca_key, ca = os.path.join(folder, "ca.key"), os.path.join(folder, "ca.crt")
    key, csr, crt = (os.path.join(folder, n) for n in ("ldap.key", "ldap.csr", "ldap.crt"))
    ext = os.path.join(folder, "ext.cnf")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n"
                "extendedKeyUsage=serverAuth\n")
    steps = [
        ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=posthorn test directory CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", key, "-out", csr, "-subj", f"/CN={HOST}"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", crt, "-days", "2", "-extfile", ext],
    ]
    for argv in steps:
        res = subprocess.run(["/usr/bin/openssl"] + argv, capture_output=True, text=True,
                             timeout=30)
        assert res.returncode == 0, f"openssl {argv[0]}: {res.stderr}"
    os.chmod(key, 0o600)
    return {"ca": ca, "crt": crt, "key": key}


def _ldif(users):
    out = [f"dn: {BASE}", "objectClass: dcObject", "objectClass: organization",
           "dc: example", "o: Example", "",
           f"dn: {PEOPLE}", "objectClass: organizationalUnit", "ou: people", "",
           f"dn: ou=services,{BASE}", "objectClass: organizationalUnit", "ou: services", "",
           f"dn: {SERVICE_DN}", "objectClass: person", "objectClass: simpleSecurityObject",
           "cn: posthorn", "sn: posthorn", f"userPassword: {SERVICE_PASSWORD}", ""]
    for uid, password, mails, proxies, principal in users.values():
        out += [f"dn: uid={uid},{PEOPLE}", "objectClass: inetOrgPerson",
                "objectClass: posthornUser", f"uid: {uid}", f"cn: {uid}", f"sn: {uid}",
                f"userPassword: {password}", f"userPrincipalName: {principal}"]
        out += [f"mail: {m}" for m in mails] + [f"proxyAddresses: {a}" for a in proxies]
        out.append("")
    return "\n".join(out) + "\n"


class Slapd:
    """slapd on 127.0.0.1: ldap:// on .port (StartTLS), ldaps:// on .tls_port."""

    def __init__(self, folder, cert, users=USERS):
        self.folder = str(folder)
        self.cert = cert
        self.users = users
        self.port = free_port()
        self.tls_port = free_port()
        self.proc = None
        os.makedirs(os.path.join(self.folder, "db"), exist_ok=True)
        self.conf = os.path.join(self.folder, "slapd.conf")
        self._write_config()
        self._load()

    @property
    def ldap_uri(self):
        return f"ldap://{HOST}:{self.port}"

    @property
    def ldaps_uri(self):
        return f"ldaps://{HOST}:{self.tls_port}"

    @property
    def ldapi_uri(self):
        """The local socket (no TLS: nothing crosses a network)."""
        return "ldapi://" + os.path.join(self.folder, "ldapi").replace("/", "%2F")

    def _write_config(self):
        schema = os.path.join(self.folder, "posthorn.schema")
        with open(schema, "w") as f:
            f.write(POSTHORN_SCHEMA)
        lines = [f"include {SCHEMA_DIR}/{s}.schema" for s in ("core", "cosine", "inetorgperson")]
        lines += [f"include {schema}",
                  f"pidfile {self.folder}/slapd.pid",
                  f"argsfile {self.folder}/slapd.args",
                  f"modulepath {MODULE_DIR}", "moduleload back_mdb",
                  f"TLSCACertificateFile {self.cert['ca']}",
                  f"TLSCertificateFile {self.cert['crt']}",
                  f"TLSCertificateKeyFile {self.cert['key']}",
                  "database mdb", f'suffix "{BASE}"', f'rootdn "cn=admin,{BASE}"',
                  "rootpw admin-Secret-0", f"directory {self.folder}/db", "maxsize 10485760",
                  "index mail,proxyAddresses,userPrincipalName,uid eq",
                  "access to attrs=userPassword by anonymous auth by * none",
                  f'access to * by dn.exact="{SERVICE_DN}" read by * none']
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def _load(self):
        res = subprocess.run([SLAPADD, "-f", self.conf, "-q"], input=_ldif(self.users),
                             capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, f"slapadd: {res.stderr}"

    def start(self):
        assert self.proc is None
        urls = f"{self.ldap_uri}/ {self.ldaps_uri}/ {self.ldapi_uri}/"
        log = open(os.path.join(self.folder, "slapd.log"), "ab")
        # -d 0: stays in the foreground (its PID is ours to stop), logs nothing
        self.proc = subprocess.Popen([SLAPD, "-f", self.conf, "-h", urls, "-d", "0"],
                                     stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"slapd exited: {self.log()}"
            if all(_listening(p) for p in (self.port, self.tls_port)):
                return self
            time.sleep(0.05)
        raise AssertionError(f"slapd did not listen within {START_TIMEOUT}s: {self.log()}")

    def stop(self):
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def log(self):
        with open(os.path.join(self.folder, "slapd.log"), "rb") as f:
            return f.read().decode("utf-8", "replace")


def _listening(port):
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def users_ldap_block(uris, ca, secret_file, cache="5m", starttls="yes",
                     filter_="(&(objectClass=inetOrgPerson)(|(mail=%a)(proxyAddresses=smtp:%a)))"):
    """The `users ldap { ... }` block for a posthorn configuration."""
    return "\n".join([
        "users ldap {",
        "    uri " + " ".join(uris),
        f"    starttls {starttls}",
        f"    ca {ca}",
        f'    bind-dn "{SERVICE_DN}"',
        f"    bind-password-file {secret_file}",
        f'    base "{PEOPLE}"',
        f'    filter "{filter_}"',
        "    addresses mail proxyAddresses",
        "    principal userPrincipalName",
        f"    cache {cache}",
        "}",
    ])


def write_secret(folder):
    path = os.path.join(str(folder), "ldap.secret")
    with open(path, "w") as f:
        f.write(SERVICE_PASSWORD + "\n")
    os.chmod(path, 0o600)
    return path
