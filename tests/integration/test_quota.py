"""Quotas (RFC 9208 STORAGE and MESSAGE): the global `quota` directive and
a user's own limit set with `posthorn user quota`, enforced where mail
comes in: SMTP answers 452 4.2.2 at RCPT when SIZE was declared and at the
end of data when it was not, and the sender's retry is taken once room was
made; a copy for a full mailbox that came through an alias waits in the
queue and arrives after `queue flush`; IMAP APPEND and COPY answer
NO [OVERQUOTA]; GETQUOTAROOT shows what `posthorn user quota` shows.
"""

import imaplib
import re
import smtplib

import pytest

from helpers import HOST, free_port, send_message
from imaputil import BOB, BOB_PW, client_ctx, crlf, imap_spec, make_cert

LIMIT = 20 * 1024                     # quota 20K 100
BIG = 12000                           # two of these do not fit


def message(subject, size):
    head = f"From: a@example.org\nTo: {BOB}\nSubject: {subject}\n\n"
    return crlf(head + ("x" * 70 + "\n") * (size // 71))


@pytest.fixture(scope="module")
def cert(posthorn_bin, tmp_path_factory):
    return make_cert(posthorn_bin, tmp_path_factory.mktemp("quota-cert"))


def user_quota(p, addr=BOB):
    """`posthorn user quota ADDRESS` as {used_kib, limit_kib, octets,
    messages, messages_limit, own}."""
    res = p.cli("user", "quota", addr)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    st = re.search(r"storage\s+(\d+) KiB of (\d+) KiB \((\d+) octets\)", out)
    msgs = re.search(r"messages\s+(\d+) of (\d+)", out)
    assert st and msgs, out
    return {"used_kib": int(st[1]), "limit_kib": int(st[2]), "octets": int(st[3]),
            "messages": int(msgs[1]), "messages_limit": int(msgs[2]),
            "own": "own" in out.split("limit", 1)[-1]}


def getquotaroot(m, mailbox="INBOX"):
    """(roots, {resource: (usage, limit)}) of GETQUOTAROOT."""
    typ, data = m.getquotaroot(mailbox)
    assert typ == "OK", data
    roots, quotas = data
    res = {}
    for line in quotas:
        if line is None:        # no QUOTA response: no limit
            continue
        line = line.decode() if isinstance(line, bytes) else line
        for name, used, limit in re.findall(r"(STORAGE|MESSAGE) (\d+) (\d+)", line):
            res[name] = (int(used), int(limit))
    return [r.decode() for r in roots], res


def test_quota_smtp_imap_and_cli(posthorn, cert):
    tls_port = free_port()
    servers = {"mx": {"anonymous": True}, "imap": imap_spec(cert, tls_port)}
    p = posthorn(servers=servers, global_extra="quota 20K 100",
                 aliases=f"team@example.test: {BOB}\n")

    # 1. a first message fits (smtplib declares SIZE)
    with smtplib.SMTP(HOST, p.port("mx"), timeout=10) as c:
        c.sendmail("a@example.org", [BOB], message("first", BIG))
    p.wait_messages(BOB, 1)
    q = user_quota(p)
    assert q["messages"] == 1 and q["limit_kib"] == 20 and q["messages_limit"] == 100
    assert BIG <= q["octets"] < LIMIT and not q["own"]

    # 2. the second, with SIZE declared: 452 4.2.2 at RCPT
    with smtplib.SMTP(HOST, p.port("mx"), timeout=10) as c:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
            c.sendmail("a@example.org", [BOB], message("second", BIG))
    code, text = e.value.recipients[BOB]
    assert code == 452 and text.startswith(b"4.2.2"), (code, text)

    # 3. without SIZE: accepted at RCPT, 452 4.2.2 at the end of data
    with p.connect("mx") as s:
        s.start()
        r = send_message(s, "a@example.org", [BOB], message("second", BIG), expect=None)
        assert r.code == 452 and "4.2.2" in r.raw.decode(), r.raw

    # 4. IMAP: the same numbers as the command line; APPEND and COPY refused
    m = imaplib.IMAP4_SSL(HOST, tls_port, ssl_context=client_ctx(cert), timeout=30)
    try:
        m.login(BOB, BOB_PW)
        caps = m.capabilities
        assert {"QUOTA", "QUOTA=RES-STORAGE", "QUOTA=RES-MESSAGE"} <= set(caps), caps
        roots, res = getquotaroot(m)
        q = user_quota(p)
        assert roots == ['INBOX ""'] or roots == ["INBOX \"\""], roots
        assert res == {"STORAGE": (q["used_kib"], 20), "MESSAGE": (1, 100)}, (res, q)
        typ, data = m.append("INBOX", None, None, message("appended", BIG))
        assert typ == "NO" and b"[OVERQUOTA]" in data[0], (typ, data)
        # said before the octets are sent: no continuation request
        tag = m._new_tag()
        m.send(tag + b" APPEND INBOX {%d}\r\n" % BIG)
        line = m.readline()
        assert line.startswith(tag + b" NO [OVERQUOTA]"), line
        typ, data = m.select("INBOX")
        assert typ == "OK" and data == [b"1"], data
        typ, data = m.copy("1", "INBOX")
        assert typ == "NO" and b"[OVERQUOTA]" in data[0], (typ, data)
        typ, data = m._simple_command("SETQUOTA", '""', "(STORAGE 100000)")
        assert typ == "NO", (typ, data)

        # 5. a message to an alias of the full mailbox is taken and waits
        mark = p.log_mark()
        with p.connect("mx") as s:
            s.start()
            send_message(s, "a@example.org", ["team@example.test"], message("via alias", BIG))
        p.wait_event("delivery-failed", since=mark, to=BOB)
        assert 'reason="4.2.2 mailbox full"' in p.log[mark:], p.log[mark:]
        assert len(p.messages(BOB)) == 1

        # 6. room is made: the usage follows, the sender's retry is taken
        octets = user_quota(p)["octets"]
        m.store("1", "+FLAGS", "\\Deleted")
        typ, data = m.status("INBOX", "(DELETED DELETED-STORAGE MESSAGES)")
        assert typ == "OK", data
        want = f"INBOX (DELETED 1 DELETED-STORAGE {octets // 1024} MESSAGES 1)".encode()
        assert data[0] == want, (data, want)
        typ, data = m.expunge()
        assert typ == "OK", data
        assert user_quota(p)["messages"] == 0
        with p.connect("mx") as s:
            s.start()
            send_message(s, "a@example.org", [BOB], message("second", BIG))
        p.wait_messages(BOB, 1)
        subjects = [msg for msg in p.messages(BOB, raw=True)]
        assert any(b"Subject: second" in s for s in subjects), subjects

        # 7. the queued copy arrives after a flush once a user's own,
        # larger limit is set; GETQUOTAROOT shows it at once
        mark = p.log_mark()
        res = p.cli("user", "quota", BOB, "1M", "10")
        assert res.returncode == 0, res.stderr
        q = user_quota(p)
        assert q["own"] and q["limit_kib"] == 1024 and q["messages_limit"] == 10
        p.wait_event("reload", since=mark)
        res = p.cli("queue", "flush")
        assert res.returncode == 0, res.stderr
        p.wait_messages(BOB, 2, timeout=15)
    finally:
        m.logout()
    # the command line refuses what is no limit, and unknown users
    res = p.cli("user", "quota", BOB, "0")
    assert res.returncode == 2 and "SIZE" in res.stderr, res.stderr
    res = p.cli("user", "quota", "nobody@example.test")
    assert res.returncode == 1 and "no such user" in res.stderr, res.stderr
    # a session keeps the generation it started with: a new one sees the
    # user's own limit
    m = imaplib.IMAP4_SSL(HOST, tls_port, ssl_context=client_ctx(cert), timeout=30)
    try:
        m.login(BOB, BOB_PW)
        q = user_quota(p)
        roots, res = getquotaroot(m)
        assert res == {"STORAGE": (q["used_kib"], 1024), "MESSAGE": (2, 10)}, (res, q)
    finally:
        m.logout()
    # `none`: no limit for this user, and then no quota root at all
    mark = p.log_mark()
    res = p.cli("user", "quota", BOB, "none")
    assert res.returncode == 0, res.stderr
    out = p.cli("user", "quota", BOB).stdout
    assert "no limit" in out and "own" in out, out
    p.wait_event("reload", since=mark)
    m = imaplib.IMAP4_SSL(HOST, tls_port, ssl_context=client_ctx(cert), timeout=30)
    try:
        m.login(BOB, BOB_PW)
        roots, res = getquotaroot(m)
        assert roots == ["INBOX"] and res == {}, (roots, res)
    finally:
        m.logout()
