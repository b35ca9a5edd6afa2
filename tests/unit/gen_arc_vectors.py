#!/usr/bin/python3
"""Writes tests/unit/arc_vectors.h: ARC chains (RFC 8617) made by dkimpy's
arc_sign with a fresh RSA 2048 key (dkimpy seals with RSA only), checked with dkimpy's
arc_verify, for test_arc.c.  Run from the top of the tree:
    /usr/bin/python3 tests/unit/gen_arc_vectors.py > tests/unit/arc_vectors.h
"""
import subprocess
import sys
import tempfile

import dkim


def rsa_key():
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(["openssl", "genrsa", "-out", d + "/k", "2048"], check=True,
                       capture_output=True)
        priv = open(d + "/k", "rb").read()
        der = subprocess.run(["openssl", "rsa", "-in", d + "/k", "-pubout", "-outform", "DER"],
                             check=True, capture_output=True).stdout
    import base64
    return priv, "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


RSA_PRIV, RSA_REC = rsa_key()
RECORDS = {b"arc._domainkey.lists.example.org.": RSA_REC,
           b"arc._domainkey.relay.example.net.": RSA_REC}


def dns(name, timeout=5):
    if not name.endswith(b"."):
        name += b"."
    return RECORDS.get(name, "").encode() or None


BASE = (b"Authentication-Results: lists.example.org; spf=pass smtp.mailfrom=alice@origin.example\r\n"
        b"From: Alice <alice@origin.example>\r\n"
        b"To: list@lists.example.org\r\n"
        b"Subject: ARC test\r\n"
        b"Date: Tue, 08 Dec 2026 01:00:00 +0000\r\n"
        b"Message-ID: <arc1@origin.example>\r\n"
        b"\r\n"
        b"Hello,\r\n  a body  with spaces \r\n\r\n")


def seal(msg, domain, sel, priv, alg, t):
    return b"".join(dkim.arc_sign(msg, sel, domain, priv, domain, signature_algorithm=alg,
                                  timestamp=t)) + msg


one = seal(BASE, b"lists.example.org", b"arc", RSA_PRIV, b"rsa-sha256", 1765000000)
two = seal(b"Authentication-Results: relay.example.net; arc=pass\r\n" + one,
           b"relay.example.net", b"arc", RSA_PRIV, b"rsa-sha256", 1765000100)
for m in (one, two):
    r = dkim.arc_verify(m, dnsfunc=dns)
    assert r[0] == b"pass", r


def c_string(name, data):
    out = ["static const char %s[] =" % name]
    for line in data.decode().split("\r\n")[:-1]:
        out.append('    "%s\\r\\n"' % line.replace("\\", "\\\\").replace('"', '\\"'))
    out[-1] += ";"
    return "\n".join(out)


print("/* ARC chains made by dkimpy's arc_sign (tests/unit/gen_arc_vectors.py),")
print(" * each verified \"pass\" by dkimpy's arc_verify, with the key records. */")
print(c_string("arc_one", one))
print()
print(c_string("arc_two", two))
print()
print('static const char arc_rsa_record[] = "%s";' % RSA_REC)
