"""ESEARCH, SEARCHRES and CONTEXT=SEARCH (RFC 4731, 5182, 5267), driven
by Python's imaplib: the capabilities, SEARCH RETURN (MIN MAX COUNT) and
UID SEARCH RETURN (ALL) as ESEARCH lines, RETURN (SAVE) then FETCH $ and
STORE $, SORT RETURN (ESORT), a bad RETURN refused, and a live search (RETURN (UPDATE)) that
says ADDTO when a message arrives by SMTP and REMOVEFROM when one stops
matching, until CANCELUPDATE, and the limit of 16 live searches.  One daemon for all of it.
"""

import imaplib
import re
import time

from helpers import HOST
from imaputil import BOB, BOB_PW, client_ctx, deliver, make_cert, put_message, start_imap

imaplib.Commands.setdefault("CANCELUPDATE", ("SELECTED",))   # RFC 5267, unknown to imaplib

MSG = "From: a@example.org\nSubject: {}\n\nbody {}\n"


def command(m, name, *args):
    """(status, untagged data by response name) of one command."""
    m.untagged_responses.clear()
    typ, data = m._simple_command(name, *args)
    untagged = {k: [d.decode() if isinstance(d, bytes) else d for d in v]
                for k, v in m.untagged_responses.items()}
    m.untagged_responses.clear()
    return typ, untagged


def esearch(untagged):
    return untagged.get("ESEARCH", [])


def wait_esearch(m, deadline_s=10):
    """NOOP until an ESEARCH update comes (a delivery is seen at the next
    command); its lines."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        typ, u = command(m, "NOOP")
        assert typ == "OK"
        if esearch(u):
            return esearch(u)
        time.sleep(0.1)
    raise AssertionError("no ESEARCH update within %s s" % deadline_s)


def test_esearch_save_and_update(posthorn, posthorn_bin, tmp_path):
    cert = make_cert(posthorn_bin, tmp_path / "cert")
    p = start_imap(posthorn, cert)
    for i in range(1, 6):
        put_message(p, BOB, MSG.format("old %d" % i, i))
    m = imaplib.IMAP4_SSL(HOST, p.imaps_port, ssl_context=client_ctx(cert), timeout=30)
    m.login(BOB, BOB_PW)
    caps = m.capabilities
    for cap in ("ESEARCH", "SEARCHRES", "CONTEXT=SEARCH", "ESORT"):
        assert cap in caps, caps
    assert m.select("INBOX")[0] == "OK"

    # RFC 4731: MIN, MAX and COUNT in one ESEARCH line tagged with the command's tag
    m.store("2,4", "+FLAGS", "\\Seen")
    typ, u = command(m, "SEARCH", "RETURN", "(MIN MAX COUNT)", "UNSEEN")
    assert typ == "OK"
    line = esearch(u)
    assert len(line) == 1 and re.fullmatch(r'\(TAG "\w+"\) MIN 1 MAX 5 COUNT 3', line[0]), line
    typ, u = command(m, "UID", "SEARCH", "RETURN", "(ALL)", "1:*")
    assert re.fullmatch(r'\(TAG "\w+"\) UID ALL 1:5', esearch(u)[0]), u
    typ, u = command(m, "SEARCH", "RETURN", "(COUNT)", "SUBJECT", "nowhere")
    assert re.fullmatch(r'\(TAG "\w+"\) COUNT 0', esearch(u)[0]), u

    # RFC 5267 §3 ESORT: MIN and MAX are the first and last in the sort order
    typ, u = command(m, "SORT", "RETURN", "(MIN MAX COUNT ALL)", "(REVERSE SUBJECT)", "UTF-8", "ALL")
    assert re.fullmatch(r'\(TAG "\w+"\) MIN 5 MAX 1 COUNT 5 ALL 5,4,3,2,1', esearch(u)[0]), u

    # RFC 5182: SAVE answers nothing; $ is then the messages found
    typ, u = command(m, "SEARCH", "RETURN", "(SAVE)", "SEEN")
    assert typ == "OK" and not esearch(u) and not u.get("SEARCH"), u
    typ, data = m.fetch("$", "(UID FLAGS)")
    assert typ == "OK"
    got = sorted(int(re.match(rb"(\d+) ", d).group(1)) for d in data if d)
    assert got == [2, 4], data
    assert m.store("$", "+FLAGS", "\\Flagged")[0] == "OK"
    typ, data = m.search(None, "FLAGGED")
    assert data[0].split() == [b"2", b"4"], data
    typ, data = m.uid("SEARCH", "UID", "$", "NOT", "$")      # $ as a search key too
    assert typ == "OK" and data == [b""], data
    # a SEARCH with SAVE that fails empties $
    try:
        m._simple_command("SEARCH", "RETURN", "(SAVE)", "NOSUCHKEY")
        raise AssertionError("an unknown search key was accepted")
    except imaplib.IMAP4.error as e:
        assert "BAD" in str(e)
    typ, data = m.fetch("$", "(UID)")
    assert typ == "OK" and data == [None], data
    try:
        m._simple_command("SEARCH", "RETURN", "(PARTIAL 1:*)", "ALL")
        raise AssertionError("PARTIAL 1:* was accepted")
    except imaplib.IMAP4.error as e:
        assert "BAD" in str(e)

    # RFC 5267: a live search; a message arriving by SMTP is added, one
    # that stops matching is removed, CANCELUPDATE ends it
    typ, u = command(m, "SEARCH", "RETURN", "(UPDATE ALL)", "SUBJECT", "fresh")
    assert re.fullmatch(r'\(TAG "(\w+)"\)', esearch(u)[0]), u
    ctx = re.match(r'\(TAG "(\w+)"\)', esearch(u)[0]).group(1)
    deliver(p, BOB, MSG.format("fresh news", 6))
    assert wait_esearch(m) == ['(TAG "%s") ADDTO (1 6)' % ctx]
    typ, u = command(m, "STORE", "6", "+FLAGS", "(\\Deleted)")
    assert not esearch(u), u
    typ, u = command(m, "EXPUNGE")
    assert esearch(u) == ['(TAG "%s") REMOVEFROM (1 6)' % ctx], u
    assert command(m, "CANCELUPDATE", '"%s"' % ctx)[0] == "OK"
    deliver(p, BOB, MSG.format("fresh again", 7))
    typ, data = m.search(None, "SUBJECT", "fresh")    # the delivery is seen by now
    assert data[0].split() == [b"6"], data
    typ, u = command(m, "NOOP")
    assert not esearch(u), u

    # at most 16 live searches: the 17th is answered but not kept
    tags = []
    for _ in range(17):
        typ, u = command(m, "SEARCH", "RETURN", "(UPDATE)", "SEEN")
        assert typ == "OK"
        tags.append(re.match(r'\(TAG "(\w+)"\)', esearch(u)[0]).group(1))
    assert u.get("NO") == ['[NOUPDATE "%s"] Too many search contexts' % tags[-1]], u
    try:
        m._simple_command("CANCELUPDATE", '"%s"' % tags[-1])
        raise AssertionError("CANCELUPDATE of a search that was not kept was accepted")
    except imaplib.IMAP4.error as e:
        assert "BAD" in str(e)
    m.logout()
