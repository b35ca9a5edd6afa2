"""ARC (RFC 8617; posthorn.conf(5) verify { arc yes }): an MX validates
the chain a message brings and says so in its Authentication-Results
field (arc=pass, arc=fail); mail a local alias forwards to a remote
address leaves with posthorn's own ARC set, which dkimpy's arc_verify
accepts — cv=none when the message brought no chain, cv=pass on top of a
chain posthorn found valid.  Every key record comes from the tests' own
dnsmasq (TXT); the remote side is the tests' SMTP sink.  Only 127.0.0.x;
every wait bounded."""

import re

import dkim

from conftest import HOSTNAME
from helpers import split_message
from test_dkim import dnsfunc_for, new_key, rsa_pem, split255, txt_args
from test_outbound import (SINK_HOST, outbound_block, sinks, submit,  # noqa: F401 (fixture)
                           wait_spool_empty)

DOMAIN = "example.test"
BOB = "bob@example.test"
FWD = "fwd@example.test"
REMOTE = "someone@external.test"

MESSAGE = (b"Authentication-Results: lists.example.org; spf=pass smtp.mailfrom=carol@origin.test\r\n"
           b"From: Carol <carol@origin.test>\r\nTo: list@lists.example.org\r\n"
           b"Subject: through a list\r\nDate: Mon, 7 Dec 2026 10:00:00 +0000\r\n"
           b"Message-ID: <arc-1@origin.test>\r\n\r\n"
           b"A body  with  spaces   \r\nand a second line\r\n")


def our_authres(data):
    """The unfolded value of the first Authentication-Results field."""
    fields, _ = split_message(data)
    return next(re.sub(rb"\r\n[ \t]+", b" ", v) for k, v in fields
                if k.lower() == "authentication-results")


def arc_sets(data):
    """{instance: cv} of the ARC-Seal fields of data."""
    fields, _ = split_message(data)
    out = {}
    for k, v in fields:
        if k.lower() == "arc-seal":
            flat = re.sub(rb"\s+", b"", v)
            tags = dict(t.split(b"=", 1) for t in flat.split(b";") if t)
            out[int(tags[b"i"])] = tags[b"cv"].decode()
    return out


def test_arc_chains_validated_and_forwarded_mail_sealed(posthorn, dnsmasq, sinks, tmp_path):  # noqa: F811
    sink = sinks()
    p = posthorn(start=False, aliases=f"{FWD}: {REMOTE}\n",
                 servers={"mx": {"anonymous": True, "extra": "verify {\n    arc yes\n}"}})
    key_path, our_txt = new_key(p, "arc2026", "rsa")
    list_path, list_rec = rsa_pem(tmp_path, "list.key", 2048)
    records = {f"arc2026._domainkey.{DOMAIN}": our_txt,
               "arc._domainkey.lists.example.org": split255(list_rec)}
    d = dnsmasq(mx=[("external.test", "mx1.external.test", 10)],
                hosts=[("mx1.external.test", SINK_HOST)], extra=txt_args(records))
    p.dns = d.address
    p.global_extra = outbound_block(sink.port) + f"\ndkim {{\n    key {DOMAIN} arc2026 {key_path}\n}}\n"
    p.write_config()
    p.start()
    lookup = dnsfunc_for(d.address)
    list_key = open(list_path, "rb").read()
    sealed = b"".join(dkim.arc_sign(MESSAGE, b"arc", b"lists.example.org", list_key,
                                    b"lists.example.org")) + MESSAGE
    assert dkim.arc_verify(sealed, dnsfunc=lookup)[0] == b"pass"

    # a chain sealed by dkimpy: arc=pass; the same, its body changed: arc=fail
    submit(p, [BOB], sealed.decode())
    submit(p, [BOB], sealed.replace(b"second line", b"changed line").decode())
    p.wait_messages(BOB, 2)
    results = sorted(our_authres(m) for m in p.messages(BOB))
    assert results[0].startswith(HOSTNAME.encode() + b"; arc=fail (ARC-Message-Signature i=1: "
                                 b"body hash did not verify)"), results
    assert results[1] == HOSTNAME.encode() + b"; arc=pass (i=1) header.oldest-pass=0", results
    assert p.wait_event("arc", result="fail", instances="1", domain="lists.example.org")

    # forwarded by an alias, no chain: posthorn's set i=1, cv=none
    plain = MESSAGE.replace(b"Authentication-Results: lists.example.org; spf=pass "
                            b"smtp.mailfrom=carol@origin.test\r\n", b"")
    submit(p, [FWD], plain.decode())
    got = sink.wait_delivered(1)[0]["data"]
    assert arc_sets(got) == {1: "none"}, got[:3000]
    assert re.search(rb"ARC-Authentication-Results: i=1; " + re.escape(HOSTNAME.encode()) +
                     rb";\s+arc=none", got), got[:3000]
    assert re.search(rb"ARC-Message-Signature: i=1; a=rsa-sha256; c=relaxed/relaxed;\s+"
                     rb"d=example\.test; s=arc2026;", got), got[:3000]
    res = dkim.arc_verify(got, dnsfunc=lookup)
    assert res[0] == b"pass", res
    # ... still no DKIM signature of ours: the From is someone else's
    assert b"DKIM-Signature" not in got

    # forwarded with dkimpy's chain, found valid: i=2 on top, cv=pass
    submit(p, [FWD], sealed.decode())
    got = sink.wait_delivered(2)[1]["data"]
    assert arc_sets(got) == {1: "none", 2: "pass"}, got[:3000]
    res = dkim.arc_verify(got, dnsfunc=lookup)
    assert res[0] == b"pass", res
    assert len(p.events("arc-seal")) == 2 and not p.events("arc-seal-error")
    wait_spool_empty(p)
