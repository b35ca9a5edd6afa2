"""DKIM (posthorn.conf(5) dkim, posthorn(8) dkim): keys made by `posthorn
dkim new`, checked by `posthorn check`; mail relayed to the outside signed
with rsa-sha256 and ed25519-sha256 and verified by two independent
implementations (dkimpy, OpenDKIM); posthorn's verifier (`posthorn dkim
verify`) on mail signed by dkimpy and OpenDKIM; `posthorn check-dns`.

Every key record is served by the tests' own dnsmasq (TXT); OpenDKIM,
whose resolver cannot be given a port, reads the same records from its
TestDNSData file.  Only 127.0.0.x; every wait bounded."""

import contextlib
import os
import re
import socket
import stat
import struct
import subprocess
import time

import dkim
import dns.message
import dns.query
import dns.rdatatype
import pytest

from conftest import HOSTNAME, run_cli
from helpers import free_port, send_message, split_message
from test_outbound import (SINK_HOST, outbound_block, sinks, submit,  # noqa: F401 (fixture)
                           wait_spool_empty)
from milters import ScriptedMilter
from zonedns import ZoneDNS

DOMAIN = "example.test"
REMOTE = "someone@external.test"
BOB = "bob@example.test"
OPENDKIM = "/usr/sbin/opendkim"
OPENDKIM_TESTMSG = "/usr/sbin/opendkim-testmsg"


# -- helpers -------------------------------------------------------------------------

def new_key(p, selector, kind, domain=DOMAIN):
    """`posthorn dkim new`: (key path, TXT text) from what it prints."""
    res = p.cli("dkim", "new", domain, selector, kind)
    assert res.returncode == 0, res.stderr
    path = re.search(r"^wrote (\S+) ", res.stdout, re.M).group(1)
    m = re.search(r"^(\S+)\._domainkey\.(\S+)\. IN TXT \( (.*) \)$", res.stdout, re.M)
    assert m and m.group(1) == selector and m.group(2) == domain, res.stdout
    strings = re.findall(r'"([^"]*)"', m.group(3))
    assert all(len(s) <= 255 for s in strings)
    assert f"    key {domain} {selector} {path}" in res.stdout
    return path, strings


def txt_args(records):
    """dnsmasq options serving {name: [character-strings]} as TXT."""
    return [f"--txt-record={name}," + ",".join(strings) for name, strings in records.items()]


def dnsfunc_for(server):
    """dkimpy's key lookup, asking the tests' dnsmasq (not the system's resolver)."""
    host, port = server.rsplit(":", 1)

    def lookup(name, timeout=5):
        q = dns.message.make_query(name.decode() if isinstance(name, bytes) else name, "TXT")
        r = dns.query.udp(q, host, port=int(port), timeout=timeout)
        for rrset in r.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                return b"".join(rrset[0].strings)
        return b""
    return lookup


def opendkim_verify(tmp_path, records, data):
    """OpenDKIM's verifier (`opendkim -t`) on data: its Authentication-Results."""
    keys = tmp_path / "opendkim-keys.txt"
    keys.write_text("".join(f"{n} {''.join(s)}\n" for n, s in records.items()))
    conf = tmp_path / "opendkim.conf"
    conf.write_text(f"Syslog no\nTestDNSData file:{keys}\n")
    msg = tmp_path / "opendkim-in.eml"
    msg.write_bytes(data)
    res = subprocess.run([OPENDKIM, "-x", str(conf), "-vvv", "-t", str(msg)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    m = re.search(r"hname='Authentication-Results' hvalue='(.*?)'", res.stderr + res.stdout, re.S)
    assert m, res.stderr
    return m.group(1)


class OpenDkimSigner:
    """OpenDKIM as a signing milter (rsa-sha256, relaxed/simple) on a
    loopback port, spoken to by a small milter client: opendkim-testmsg
    signs with rsa-sha1 only, which RFC 8301 verifiers refuse."""

    def __init__(self, folder, domain, selector, key):
        self.port = free_port("127.0.0.1")
        conf = folder / f"opendkim-sign-{self.port}.conf"
        conf.write_text(f"Syslog no\nMode s\nDomain {domain}\nSelector {selector}\n"
                        f"KeyFile {key}\nRequireSafeKeys false\nCanonicalization relaxed/simple\n"
                        f"SignatureAlgorithm rsa-sha256\nSocket inet:{self.port}@127.0.0.1\n"
                        "Background no\nInternalHosts 127.0.0.1\n")
        self.proc = subprocess.Popen([OPENDKIM, "-f", "-x", str(conf)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("opendkim did not start: " + self.proc.stderr.read().decode())
                time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:  # libmilter takes seconds to notice; nothing of it is kept
                self.proc.wait(0.5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    @staticmethod
    def _packet(cmd, data=b""):
        return struct.pack("!I", len(data) + 1) + cmd + data

    @staticmethod
    def _read(sock):
        def exactly(n):
            out = b""
            while len(out) < n:
                chunk = sock.recv(n - len(out))
                if not chunk:
                    raise EOFError("milter closed")
                out += chunk
            return out
        body = exactly(struct.unpack("!I", exactly(4))[0])
        return body[:1], body[1:]

    def sign(self, message):
        """The message with OpenDKIM's DKIM-Signature on top."""
        head, _, body = message.partition(b"\r\n\r\n")
        fields = []
        for line in head.split(b"\r\n"):
            if line[:1] in (b" ", b"\t"):
                fields[-1][1] += b"\r\n" + line
            else:
                name, _, value = line.partition(b":")
                fields.append([name, value[1:] if value.startswith(b" ") else value])
        added = []
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            def step(cmd, data=b""):
                s.sendall(self._packet(cmd, data))
                return self._read(s)
            assert step(b"O", struct.pack("!III", 6, 0x1FF, 0))[0] == b"O"
            steps = [(b"C", b"localhost\x004" + struct.pack("!H", 25) + b"127.0.0.1\x00"),
                     (b"H", b"localhost\x00"), (b"M", b"<carol@example.org>\x00"),
                     (b"R", b"<bob@example.test>\x00")]
            steps += [(b"L", n + b"\x00" + v + b"\x00") for n, v in fields]
            steps += [(b"N", b""), (b"B", body)]
            for cmd, data in steps:
                assert step(cmd, data)[0] == b"c", cmd
            s.sendall(self._packet(b"E"))
            while True:
                cmd, data = self._read(s)
                if cmd in (b"h", b"i"):
                    name, value, _ = (data[4:] if cmd == b"i" else data).split(b"\x00")
                    added.append(name + b": " + value.replace(b"\n", b"\r\n") + b"\r\n")
                elif cmd in (b"a", b"c"):
                    break
            s.sendall(self._packet(b"Q"))
        assert len(added) == 1 and added[0].startswith(b"DKIM-Signature: v=1; a=rsa-sha256;")
        return added[0] + message


def signatures(data):
    head = data.split(b"\r\n\r\n", 1)[0]
    return re.findall(rb"^DKIM-Signature:.*?(?=^\S)", head + b"\r\nX", re.M | re.S)


def tag(sig, name):
    flat = re.sub(rb"\s+", b"", sig.split(b":", 1)[1])
    return dict(kv.split(b"=", 1) for kv in flat.split(b";") if kv)[name.encode()]


@pytest.fixture
def signing(posthorn, dnsmasq, sinks):  # noqa: F811 (fixture)
    """A daemon that relays for 127.0.0.1 to the sink, with an RSA and an
    Ed25519 key of example.test whose records dnsmasq serves."""
    sink = sinks()
    p = posthorn(start=False, servers={"mx": {"anonymous": True,
                                              "extra": "relay {\n    allow 127.0.0.1\n}\n"}})
    rsa_path, rsa_txt = new_key(p, "sel2026", "rsa")
    ed_path, ed_txt = new_key(p, "ed2026", "ed25519")
    records = {f"sel2026._domainkey.{DOMAIN}": rsa_txt, f"ed2026._domainkey.{DOMAIN}": ed_txt}
    d = dnsmasq(mx=[("external.test", "mx1.external.test", 10)],
                hosts=[("mx1.external.test", SINK_HOST)], extra=txt_args(records))
    p.dns = d.address
    p.global_extra = outbound_block(sink.port) + (
        f"\ndkim {{\n    key {DOMAIN} sel2026 {rsa_path}\n    key {DOMAIN} ed2026 {ed_path}\n}}\n")
    p.write_config()
    p.start()
    return p, sink, d, records


# -- keys -------------------------------------------------------------------------------

def test_dkim_new_writes_a_private_key_once_and_prints_its_record(posthorn):
    p = posthorn(start=False)
    path, txt = new_key(p, "sel1", "rsa")
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert path == os.path.join(p.root, "dkim", "example.test.sel1.rsa.key")
    assert "".join(txt).startswith("v=DKIM1; k=rsa; p=MII")
    assert b"PRIVATE KEY" in open(path, "rb").read()
    # never over an existing key
    again = p.cli("dkim", "new", DOMAIN, "sel1", "rsa")
    assert again.returncode == 1 and "File exists" in again.stderr
    _, ed = new_key(p, "ed1", "ed25519")
    assert re.fullmatch(r"v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=", "".join(ed))
    # only for the server's own domains
    other = p.cli("dkim", "new", "elsewhere.test", "sel1", "rsa")
    assert other.returncode == 1 and "not a local domain" in other.stderr


def test_check_names_the_directive_of_a_missing_short_or_open_key(posthorn, tmp_path):
    p = posthorn(start=False)
    short = tmp_path / "short.key"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024",
                    "-out", str(short)], check=True, capture_output=True)
    os.chmod(short, 0o600)
    good, _ = new_key(p, "good", "ed25519")
    os.chmod(good, 0o640)
    p.global_extra = (f"dkim {{\n    key {DOMAIN} gone {tmp_path}/nothing.key\n"
                      f"    key {DOMAIN} short {short}\n    key {DOMAIN} good {good}\n"
                      f"    key other.invalid sel {good}\n}}\n")
    text = p.write_config()
    lines = text.splitlines()
    res = p.cli("check")
    assert res.returncode == 1
    line_of = {w: lines.index(next(l for l in lines if f" {w} " in l)) + 1
               for w in ("gone", "short", "good", "other.invalid")}
    # the configuration error first (it stops the check before any key is read)
    assert f"posthorn.conf:{line_of['other.invalid']}:5: dkim key for other.invalid, which is not " \
           "a local domain" in res.stderr, res.stderr
    p.global_extra = p.global_extra.replace(f"    key other.invalid sel {good}\n", "")
    p.write_config()
    res = p.cli("check")
    assert res.returncode == 1
    assert re.search(rf"posthorn.conf:{line_of['gone']}:5: dkim key: cannot open .*nothing.key: "
                     "No such file", res.stderr), res.stderr
    assert f"posthorn.conf:{line_of['short']}:5: dkim key: {short}: RSA key of 1024 bits " \
           "(use 2048 to 8192)" in res.stderr, res.stderr
    assert f"posthorn.conf:{line_of['good']}:5: dkim key {good} is readable by group or others" \
           in res.stderr, res.stderr


# -- signing ----------------------------------------------------------------------------

MESSAGE = ("From: Bob <bob@example.test>\r\nTo: <someone@external.test>\r\n"
           "Subject: a folded\r\n  subject with  spaces\r\nMessage-ID: <dkim-1@example.test>\r\n"
           "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
           "Content-Transfer-Encoding: 8bit\r\n\r\n"
           "Gr\u00fc\u00dfe aus Z\u00fcrich  \r\n" + "long line " * 90 + "\r\n\r\n\r\n")


def test_relayed_mail_is_signed_twice_and_verifies_with_dkimpy_and_opendkim(signing, tmp_path):
    p, sink, d, records = signing
    submit(p, [REMOTE], MESSAGE)
    got = sink.wait_delivered(1)[0]["data"]
    sigs = signatures(got)
    assert len(sigs) == 2, got[:2000]
    assert {tag(s, "a") for s in sigs} == {b"rsa-sha256", b"ed25519-sha256"}
    for s in sigs:
        assert tag(s, "c") == b"relaxed/relaxed" and tag(s, "d") == DOMAIN.encode()
        # From over-signed: named once more than it appears
        h = tag(s, "h").split(b":")
        assert h.count(b"from") == 2 and b"subject" in h and b"message-id" in h
    # dkimpy, with its keys from the tests' dnsmasq
    for i in range(2):
        assert dkim.DKIM(got).verify(idx=i, dnsfunc=dnsfunc_for(d.address)), f"signature {i}"
    # OpenDKIM
    ar = opendkim_verify(tmp_path, records, got)
    assert re.search(r"dkim=pass \(2048-bit key\) header\.d=example\.test .*header\.a=rsa-sha256",
                     ar), ar
    assert re.search(r"dkim=pass header\.d=example\.test .*header\.a=ed25519-sha256", ar), ar
    ev = p.wait_event("dkim-sign")
    assert ev["domain"] == DOMAIN
    wait_spool_empty(p)


def test_mail_an_alias_forwards_is_not_signed(posthorn, dnsmasq, sinks, tmp_path):  # noqa: F811
    """An outsider writing to a local alias that forwards outside gets no
    signature of ours, whatever its From says."""
    sink = sinks()
    p = posthorn(start=False, aliases="fwd@example.test: someone@external.test\n")
    path, _ = new_key(p, "sel1", "ed25519")
    d = dnsmasq(mx=[("external.test", "mx1.external.test", 10)],
                hosts=[("mx1.external.test", SINK_HOST)])
    p.dns = d.address
    p.global_extra = outbound_block(sink.port) + f"\ndkim {{\n    key {DOMAIN} sel1 {path}\n}}\n"
    p.write_config()
    p.start()
    submit(p, ["fwd@example.test"], "From: <bob@example.test>\r\nSubject: forged\r\n\r\nhi\r\n")
    got = sink.wait_delivered(1)[0]["data"]
    assert signatures(got) == []
    assert not p.events("dkim-sign")


def test_sighup_loads_a_new_key(signing):
    p, sink, d, records = signing
    submit(p, [REMOTE], MESSAGE)
    first = sink.wait_delivered(1)[0]["data"]
    assert {tag(s, "s") for s in signatures(first)} == {b"sel2026", b"ed2026"}
    path, _ = new_key(p, "next", "ed25519")
    p.global_extra = re.sub(r"dkim \{.*\}", f"dkim {{\n    key {DOMAIN} next {path}\n}}",
                            p.global_extra, flags=re.S)
    p.write_config()
    p.reload()
    submit(p, [REMOTE], MESSAGE)
    second = sink.wait_delivered(2)[1]["data"]
    assert [tag(s, "s") for s in signatures(second)] == [b"next"]
    # a key that may not be used is refused at the reload; the running keys stay
    bad, _ = new_key(p, "open", "ed25519")
    os.chmod(bad, 0o644)
    p.global_extra = p.global_extra.replace(f"key {DOMAIN} next {path}", f"key {DOMAIN} open {bad}")
    p.write_config()
    p.reload(expect="reload-failed")
    assert "dkim key " + bad + " is readable by group or others" in p.log
    submit(p, [REMOTE], MESSAGE)
    third = sink.wait_delivered(3)[2]["data"]
    assert [tag(s, "s") for s in signatures(third)] == [b"next"]


# -- verifying --------------------------------------------------------------------------

def rsa_pem(tmp_path, name, bits):
    path = tmp_path / name
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    f"rsa_keygen_bits:{bits}", "-out", str(path)], check=True, capture_output=True)
    pub = subprocess.run(["openssl", "pkey", "-in", str(path), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    import base64
    return path, "v=DKIM1; k=rsa; p=" + base64.b64encode(pub).decode()


def ed25519_seed(tmp_path):
    """An Ed25519 key as dkimpy takes it (base64 of the seed) and its record."""
    from nacl.signing import SigningKey
    import base64
    sk = SigningKey.generate()
    return (base64.b64encode(bytes(sk)),
            "v=DKIM1; k=ed25519; p=" + base64.b64encode(bytes(sk.verify_key)).decode())


def split255(text):
    return [text[i:i + 255] for i in range(0, len(text), 255)]


def test_posthorn_verifies_mail_signed_by_dkimpy_and_opendkim(posthorn, dnsmasq, tmp_path):
    rsa_path, rsa_rec = rsa_pem(tmp_path, "rsa.key", 2048)
    weak_path, weak_rec = rsa_pem(tmp_path, "weak.key", 768)
    seed, ed_rec = ed25519_seed(tmp_path)
    records = {"py._domainkey.example.org": split255(rsa_rec),
               "od._domainkey.example.org": split255(rsa_rec),
               "ed._domainkey.example.org": split255(ed_rec),
               "weak._domainkey.example.org": split255(weak_rec)}
    d = dnsmasq(extra=txt_args(records))
    p = posthorn(start=False, dns=d.address)
    msg = (b"From: Carol <carol@example.org>\r\nTo: bob@example.test\r\n"
           b"Subject: folded\r\n\tacross\r\n   lines\r\nDate: Mon, 7 Dec 2026 10:00:00 +0000\r\n"
           b"\r\n" + "8-bit: \u00e9\u00e8\u00ea \u2603\r\n".encode() + b"x" * 990 + b"\r\n"
           b"trailing   spaces   \r\n\r\n\r\n")
    # OpenDKIM signs first: opendkim-testmsg (simple/simple and rsa-sha1, its
    # library's defaults), then the opendkim milter (rsa-sha256,
    # relaxed/simple); then dkimpy twice
    od = subprocess.run([OPENDKIM_TESTMSG, "-C", "-d", "example.org", "-s", "py", "-k",
                         str(rsa_path)], input=msg, capture_output=True, timeout=30)
    assert od.returncode == 0, od.stderr
    signed = od.stdout
    assert signed.startswith(b"DKIM-Signature:"), signed[:200]
    milter = OpenDkimSigner(tmp_path, "example.org", "od", rsa_path)
    try:
        signed = milter.sign(signed)
    finally:
        milter.stop()
    key = open(rsa_path, "rb").read()
    signed = dkim.sign(signed, b"py", b"example.org", key,
                       canonicalize=(b"relaxed", b"relaxed")) + signed
    signed = dkim.sign(signed, b"ed", b"example.org", seed, signature_algorithm=b"ed25519-sha256",
                       canonicalize=(b"relaxed", b"simple")) + signed
    f = tmp_path / "signed.eml"
    f.write_bytes(signed)
    res = p.cli("dkim", "verify", str(f))
    lines = res.stdout.splitlines()
    assert len(lines) == 4, res.stdout + res.stderr
    assert lines[0].startswith("dkim=pass header.d=example.org header.s=ed "
                               "header.a=ed25519-sha256 header.b="), lines
    assert lines[1].startswith("dkim=pass header.d=example.org header.s=py header.a=rsa-sha256 "
                               "header.b="), lines
    assert lines[1].endswith(" bits=2048"), lines
    assert lines[2].startswith("dkim=pass header.d=example.org header.s=od header.a=rsa-sha256 "
                               "header.b="), lines
    # RFC 8301: OpenDKIM's rsa-sha1 signature is not accepted
    assert lines[3].startswith("dkim=fail header.d=example.org header.s=py header.a=rsa-sha1 "), lines
    assert lines[3].endswith("(rsa-sha1 is not accepted (RFC 8301))"), lines
    assert res.returncode == 1
    # dkimpy agrees on each (its key lookups through the same dnsmasq)
    for i, ok in enumerate((True, True, True)):
        assert dkim.DKIM(signed).verify(idx=i, dnsfunc=dnsfunc_for(d.address)) == ok, i
    # a changed body breaks the three good signatures
    f.write_bytes(signed.replace(b"trailing", b"Trailing"))
    res = p.cli("dkim", "verify", str(f))
    assert res.returncode == 1
    assert res.stdout.count("(body hash did not verify)") == 3, res.stdout
    # a key under 1024 bits fails; a signature without a key record is a permerror
    weak = dkim.sign(msg, b"weak", b"example.org", open(weak_path, "rb").read()) + msg
    missing = dkim.sign(msg, b"nokey", b"example.org", key) + msg
    for data, want in ((weak, "dkim=fail .*bits=768 \\(RSA key of 768 bits, less than 1024"),
                       (missing, "dkim=permerror header.d=example.org header.s=nokey .*"
                                 "\\(no key record\\)")):
        f.write_bytes(data)
        res = p.cli("dkim", "verify", str(f))
        assert res.returncode == 1 and re.search(want, res.stdout), res.stdout
    f.write_bytes(msg)
    res = p.cli("dkim", "verify", str(f))
    assert res.returncode == 1 and res.stdout == "dkim=none (no signature)\n"


# -- verifying inbound mail (verify { dkim yes }) -----------------------------------------

VERIFY_ALL = "verify {\n    spf yes\n    dkim yes\n    dmarc enforce\n}"


def authres_of(d, n):
    """The Authentication-Results fields of bob's n-th message (unfolded)."""
    d.wait_messages(BOB, n)
    fields, _ = split_message(d.messages(BOB)[n - 1])
    names = [k for k, _ in fields]
    ar = [re.sub(rb"\r\n[ \t]+", b" ", v) for k, v in fields
          if k.lower() == "authentication-results"]
    return ar, names


def smtp_send(d, sender, data, expect=250):
    stuffed = re.sub(rb"(?m)^\.", b"..", data)
    with d.connect() as c:
        c.start()
        return send_message(c, sender, [BOB], stuffed, expect=expect)


class HeaderRecorder(ScriptedMilter):
    """A milter that lets every message through and keeps the header
    fields it was shown (name, value)."""

    def __init__(self):
        self.fields = []
        super().__init__(eom=struct.pack(">I", 1) + b"c")

    def close(self):
        self.stop()

    def _read_packet(self, conn):
        cmd, data = super()._read_packet(conn)
        if cmd == b"L":
            name, value, _ = data.split(b"\0")
            self.fields.append((name, value))
        return cmd, data


def test_mx_verifies_dkim_at_end_of_data(posthorn, tmp_path):
    """An MX with spf, dkim and dmarc enforce: mail signed by OpenDKIM
    (rsa-sha256) and dkimpy (rsa-sha256, ed25519-sha256), with folded
    fields, a long line and an 8-bit body, gets dkim=pass for each
    signature in posthorn's one Authentication-Results field, and DMARC
    passes through DKIM alignment although SPF fails; the same message
    changed on the way is refused (p=reject), or with a From of a domain
    without DMARC accepted with dkim=fail for each; a key whose lookup fails
    (SERVFAIL) is a temperror and the mail is accepted; a message over the
    bound that is held for DKIM is accepted unverified (neutral).  A milter
    sees the message with posthorn's field (verification first)."""
    rsa_path, rsa_rec = rsa_pem(tmp_path, "rsa.key", 2048)
    seed, ed_rec = ed25519_seed(tmp_path)
    zone = {"py._domainkey.signed.test": [("TXT", tuple(split255(rsa_rec)))],
            "od._domainkey.signed.test": [("TXT", tuple(split255(rsa_rec)))],
            "ed._domainkey.signed.test": [("TXT", tuple(split255(ed_rec)))],
            "broken._domainkey.signed.test": [("TXT", "TIMEOUT")],
            "signed.test": [("TXT", ("v=spf1 ip4:192.0.2.1 -all",))],
            "_dmarc.signed.test": [("TXT", ("v=DMARC1; p=reject",))]}
    msg = (b"From: Carol <carol@signed.test>\r\nTo: bob@example.test\r\n"
           b"Subject: folded\r\n\tacross\r\n   lines\r\nDate: Mon, 7 Dec 2026 10:00:00 +0000\r\n"
           b"\r\n" + "8-bit: \u00e9\u00e8\u00ea \u2603\r\n".encode() + b"x" * 990 + b"\r\n"
           b".a line that is dot-stuffed on the wire\r\ntrailing   spaces   \r\n\r\n")
    key = open(rsa_path, "rb").read()
    milter = OpenDkimSigner(tmp_path, "signed.test", "od", rsa_path)
    try:
        signed = milter.sign(msg)
    finally:
        milter.stop()
    signed = dkim.sign(signed, b"py", b"signed.test", key,
                       canonicalize=(b"relaxed", b"relaxed")) + signed
    signed = dkim.sign(signed, b"ed", b"signed.test", seed, signature_algorithm=b"ed25519-sha256",
                       canonicalize=(b"relaxed", b"simple")) + signed
    sigs = signatures(signed)
    recorder = HeaderRecorder()
    milter = (f"milter rec {{\n    socket {recorder.socket}\n    timeout 5s\n"
              "    on-failure tempfail\n}")
    with ZoneDNS(zone) as dns, contextlib.closing(recorder):
        d = posthorn(dns=dns.address, servers={"mx": {"extra": VERIFY_ALL + "\n" + milter}})
        smtp_send(d, "carol@signed.test", signed)
        ar, names = authres_of(d, 1)
        seen = [v for k, v in recorder.fields if k == b"Authentication-Results"]
        assert len(seen) == 1 and re.sub(rb"\s+", b" ", seen[0]) == ar[0].lstrip(), seen
        assert len(ar) == 1, names
        assert names.index("Authentication-Results") == names.index("Received") + 1, names
        assert ar[0].startswith(HOSTNAME.encode() + b"; spf=fail smtp.mailfrom=carol@signed.test;"), ar
        for sig in sigs:  # in the message's order: ed, py, od
            want = (b"dkim=pass header.d=signed.test header.s=" + re.escape(tag(sig, "s")) +
                    b" header.a=" + re.escape(tag(sig, "a")) + b' header.b="?' +
                    re.escape(tag(sig, "b")[:8]) + b'"?;')
            assert re.search(want, ar[0]), (want, ar)
        assert ar[0].endswith(b"dmarc=pass (p=reject dis=none) header.from=signed.test"), ar
        assert d.wait_event("dmarc", result="pass", dkim_aligned="yes", spf_aligned="no")
        # what bob got is what was signed: dkimpy verifies it still
        got = d.messages(BOB)[0]
        assert got.endswith(signed), got[-300:]
        for i in range(3):
            assert dkim.DKIM(got).verify(idx=i, dnsfunc=lambda n, timeout=5: b"".join(
                s.encode() for s in zone[n.decode().rstrip(".")][0][1])), i

        # changed on the way: every signature fails, SPF too; p=reject
        r = smtp_send(d, "carol@signed.test", signed.replace(b"trailing", b"Trailing"), 550)
        assert r.first.startswith("550 5.7.1") and "signed.test" in r.first, r.raw
        assert d.wait_event("dkim", result="fail", selector="od")
        assert d.wait_event("reject", reason="dmarc")

        # the From changed to a domain without DMARC: accepted, each signature fails
        smtp_send(d, "carol@other.test", signed.replace(b"<carol@signed.test>",
                                                        b"<carol@other.test>"))
        ar, _ = authres_of(d, 2)
        assert ar[0].count(b"dkim=fail (signature did not verify) header.d=signed.test") == 3, ar
        assert ar[0].endswith(b"dmarc=none header.from=other.test"), ar

        # the key's lookup fails: temperror, and DMARC cannot decide either
        broken = dkim.sign(msg, b"broken", b"signed.test", key) + msg
        smtp_send(d, "carol@signed.test", broken)
        ar, _ = authres_of(d, 3)
        assert b"dkim=temperror (key lookup: " in ar[0], ar
        assert b"header.d=signed.test header.s=broken" in ar[0], ar
        assert ar[0].endswith(b"dmarc=temperror header.from=signed.test"), ar

        # over the bound held for DKIM (4 MiB): not verified, accepted
        body = (b"y" * 998 + b"\r\n") * 4300
        big = msg.replace(b"carol@signed.test", b"carol@other.test") + body
        big = dkim.sign(big, b"py", b"signed.test", key) + big
        smtp_send(d, "carol@other.test", big)
        ar, _ = authres_of(d, 4)
        assert (b"dkim=neutral (message too large to verify) header.d=signed.test "
                b"header.s=py") in ar[0], ar
        assert d.messages(BOB)[3].endswith(big)

# -- check-dns ----------------------------------------------------------------------------

def test_check_dns_compares_each_selector_with_its_key(posthorn, dnsmasq):
    p = posthorn(start=False)
    good, good_txt = new_key(p, "good", "ed25519")
    stale, _ = new_key(p, "stale", "ed25519")
    other, other_txt = new_key(p, "other", "ed25519")
    absent, absent_txt = new_key(p, "absent", "rsa")
    d = dnsmasq(extra=txt_args({f"good._domainkey.{DOMAIN}": good_txt,
                                f"stale._domainkey.{DOMAIN}": other_txt}))
    p.dns = d.address
    p.global_extra = (f"dkim {{\n    key {DOMAIN} good {good}\n    key {DOMAIN} stale {stale}\n"
                      f"    key {DOMAIN} absent {absent}\n}}\n")
    p.write_config()
    res = p.cli("check-dns")
    assert res.returncode == 1
    out = res.stdout
    assert "dkim good: the record at good._domainkey.example.test matches the key (ed25519" in out
    assert "dkim stale: the record at stale._domainkey.example.test holds another key" in out
    assert "dkim absent: no TXT record at absent._domainkey.example.test (notfound)" in out
    # what to publish, for each that does not match
    assert '  absent._domainkey.example.test. IN TXT ( "' + absent_txt[0] + '"' in out
    assert "good._domainkey.example.test. IN TXT" not in out


def test_dkim_new_gives_the_key_to_run_as_and_check_wants_it_readable(posthorn):
    """Keys are read again at each reload, after the privilege drop."""
    import pwd
    p = posthorn(start=False, root=posthorn.world_dir(), run_as="nobody")
    path, _ = new_key(p, "sel1", "ed25519")
    st = os.stat(path)
    assert st.st_uid == pwd.getpwnam("nobody").pw_uid and stat.S_IMODE(st.st_mode) == 0o600
    p.global_extra = f"dkim {{\n    key {DOMAIN} sel1 {path}\n}}\n"
    text = p.write_config()
    res = p.cli("check")
    assert res.returncode == 0, res.stderr
    assert "dkim: mail from example.test sent out by its users is signed with selector sel1\n" \
        in res.stdout, res.stdout
    os.chown(path, 0, 0)
    res = p.cli("check")
    line = text.splitlines().index(f"    key {DOMAIN} sel1 {path}") + 1
    assert res.returncode == 1
    assert f"posthorn.conf:{line}:5: dkim key {path} cannot be read by the run-as user nobody" \
        in res.stderr, res.stderr


def cli_bytes(p, args, data):
    """A posthorn command with bytes in and out (no newline translation)."""
    return subprocess.run([p.bin] + args + ["-c", p.conf], input=data, capture_output=True,
                          env=p.env, timeout=60)


def test_dkim_sign_and_verify_read_a_file_or_standard_input(posthorn, dnsmasq, tmp_path):
    p = posthorn(start=False)
    path, txt = new_key(p, "cli", "ed25519")
    d = dnsmasq(extra=txt_args({f"cli._domainkey.{DOMAIN}": txt}))
    p.dns = d.address
    p.global_extra = f"dkim {{\n    key {DOMAIN} cli {path}\n}}\n"
    p.write_config()
    msg = b"From: bob@example.test\nTo: x@external.test\nSubject: by hand\n\nLF line ends\n"
    res = cli_bytes(p, ["dkim", "sign"], msg)
    assert res.returncode == 0 and b"ERROR: AddressSanitizer" not in res.stderr, res.stderr
    signed = res.stdout
    # the message comes out with CRLF line ends, the signature on top
    assert signed.endswith(msg.replace(b"\n", b"\r\n")) and signed.startswith(b"DKIM-Signature:")
    assert dkim.DKIM(signed).verify(dnsfunc=dnsfunc_for(d.address))
    f = tmp_path / "signed.eml"
    f.write_bytes(signed)
    res = p.cli("dkim", "verify", str(f))
    assert res.returncode == 0 and res.stdout.startswith(
        "dkim=pass header.d=example.test header.s=cli header.a=ed25519-sha256 header.b="), res.stdout
    res = cli_bytes(p, ["dkim", "verify"], signed)
    assert res.returncode == 0 and res.stdout.startswith(b"dkim=pass "), res.stdout
    # no key for the From domain: nothing is printed, the reason is
    res = cli_bytes(p, ["dkim", "sign"], b"From: a@example.org\n\nx\n")
    assert res.returncode == 1 and res.stdout == b""
    assert b"not signed: no key for the From domain example.org" in res.stderr


def test_out_of_office_reply_is_signed(signing, tmp_path):
    """posthorn's own out-of-office reply, from a local user to a remote
    sender, leaves signed like the user's own mail (RFC 3834 replies are
    mail of the domain): both signatures verify with dkimpy."""
    from test_vacation import mail, set_away
    p, sink, d, records = signing
    set_away(p, tmp_path)
    mail(p, REMOTE)
    got = sink.wait_delivered(1)[0]
    assert got["sender"] == "" and got["rcpts"] == [REMOTE], got
    data = got["data"]
    assert b"Auto-Submitted: auto-replied" in data
    sigs = signatures(data)
    assert len(sigs) == 2, data[:2000]
    for i in range(2):
        assert dkim.DKIM(data).verify(idx=i, dnsfunc=dnsfunc_for(d.address)), f"signature {i}"
