"""CONDSTORE and QRESYNC (RFC 7162), driven by Python's imaplib: the
capabilities and ENABLE, SELECT and EXAMINE (CONDSTORE) and their
HIGHESTMODSEQ, FETCH
MODSEQ and (CHANGEDSINCE n [VANISHED]), STORE (UNCHANGEDSINCE n) with
[MODIFIED ...], SEARCH MODSEQ, STATUS HIGHESTMODSEQ, unsolicited FETCH
with MODSEQ after another session's change, VANISHED instead of EXPUNGE
once QRESYNC is on (EXPUNGE's and MOVE's), [CLOSED], SELECT (QRESYNC ...)
after 100 flag changes returning exactly those (and VANISHED (EARLIER) for
the expunged; known UIDs narrowing it), bad modifiers, and a restart
keeping every MODSEQ and HIGHESTMODSEQ.
"""

import imaplib
import re

import pytest

from helpers import HOST
from imaputil import BOB, BOB_PW, client_ctx, make_cert, put_message, start_imap

MSG = "From: a@example.org\nSubject: message {}\n\nbody {}\n"


@pytest.fixture(scope="module")
def cert(posthorn_bin, tmp_path_factory):
    return make_cert(posthorn_bin, tmp_path_factory.mktemp("imap-condstore-cert"))


@pytest.fixture
def imap(posthorn, cert):
    return start_imap(posthorn, cert)


def client(p, cert):
    m = imaplib.IMAP4_SSL(HOST, p.imaps_port, ssl_context=client_ctx(cert), timeout=30)
    m.login(BOB, BOB_PW)
    return m


def fill(p, n):
    for i in range(n):
        put_message(p, BOB, MSG.format(i, i))


def run(m, name, *args, ok=True):
    """Send a command through imaplib; (status, tagged text, untagged
    responses by name)."""
    m.untagged_responses.clear()
    try:
        typ, data = m._simple_command(name, *args)
    except imaplib.IMAP4.error as e:          # imaplib raises on BAD
        m.untagged_responses.clear()
        assert not ok and " BAD " in str(e), (name, args, e)
        return "BAD", str(e), {}
    text = b" ".join(d for d in data if d).decode()
    untagged = {k: list(v) for k, v in m.untagged_responses.items()}
    m.untagged_responses.clear()
    if ok:
        assert typ == "OK", (name, args, typ, text)
    return typ, text, untagged


def select(m, *params, mailbox="INBOX", examine=False):
    typ, text, u = run(m, "EXAMINE" if examine else "SELECT", mailbox, *params)
    m.state = "SELECTED"
    return text, u


def highest(u):
    [v] = u["HIGHESTMODSEQ"]
    return int(v)


FETCH_RE = re.compile(rb"^(\d+) \((.*)\)$")


def fetches(u):
    """{uid: (seq, flags, modseq)} of the untagged FETCH responses."""
    out = {}
    for d in u.get("FETCH", []):
        if isinstance(d, tuple):
            d = d[0]
        seq, items = FETCH_RE.match(d).groups()
        uid = int(re.search(rb"UID (\d+)", items).group(1))
        fl = re.search(rb"FLAGS \(([^)]*)\)", items)
        ms = re.search(rb"MODSEQ \((\d+)\)", items)
        assert uid not in out, f"two FETCH responses for UID {uid}: {u['FETCH']}"
        out[uid] = (int(seq), set(fl.group(1).decode().split()) if fl else None,
                    int(ms.group(1)) if ms else None)
    return out


def uid_set(text):
    """The UIDs of a sequence set "1:3,7"."""
    out = set()
    for part in text.split(","):
        lo, _, hi = part.partition(":")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def vanished_earlier(u):
    out = set()
    for v in u.get("VANISHED", []):
        m = re.match(rb"^\(EARLIER\) (\S+)$", v)
        assert m, f"VANISHED without (EARLIER): {v!r}"
        out |= uid_set(m.group(1).decode())
    return out


def modseqs(m):
    _, _, u = run(m, "UID", "FETCH", "1:*", "(MODSEQ)")
    return {uid: ms for uid, (_, _, ms) in fetches(u).items()}


def test_capabilities_and_enable(imap, cert):
    m = client(imap, cert)
    assert {"CONDSTORE", "QRESYNC"} <= set(m.capabilities)
    _, _, u = run(m, "ENABLE", "QRESYNC")
    assert [w.upper() for w in u["ENABLED"][0].decode().split()] == ["QRESYNC", "CONDSTORE"]
    _, _, u = run(m, "ENABLE", "CONDSTORE", "QRESYNC")
    assert u["ENABLED"] in ([b""], [None]), "nothing new enabled the second time"
    m.logout()


def test_select_condstore_fetch_modseq_status(imap, cert):
    fill(imap, 3)
    m = client(imap, cert)
    _, u = select(m, "(CONDSTORE)")
    h = highest(u)
    ms = modseqs(m)
    assert len(ms) == 3 and len(set(ms.values())) == 3, ms
    assert max(ms.values()) == h
    # a change gets a new, higher MODSEQ, in the STORE response and STATUS
    _, _, u = run(m, "STORE", "2", "+FLAGS", "(\\Seen)")
    [(seq, flags, new)] = fetches(u).values()
    assert seq == 2 and "\\Seen" in flags and new > h
    _, _, u = run(m, "STATUS", "INBOX", "(HIGHESTMODSEQ MESSAGES)")
    assert f"HIGHESTMODSEQ {new}" in u["STATUS"][0].decode()
    # storing what is already set changes nothing
    _, _, u = run(m, "STORE", "2", "+FLAGS.SILENT", "(\\Seen)")
    assert modseqs(m)[list(ms)[1]] == new
    m.logout()


def test_examine_condstore(imap, cert):
    fill(imap, 2)
    m = client(imap, cert)
    text, u = select(m, "(CONDSTORE)", examine=True)
    assert "[READ-ONLY]" in text
    h = highest(u)
    assert max(modseqs(m).values()) == h
    typ, text, _ = run(m, "STORE", "1", "(UNCHANGEDSINCE 100)", "+FLAGS", "(\\Seen)", ok=False)
    assert typ == "NO" and "READ-ONLY" in text, text
    m.logout()


def test_status_highestmodseq_without_select(imap, cert):
    fill(imap, 2)
    m = client(imap, cert)
    _, _, u = run(m, "STATUS", "INBOX", "(HIGHESTMODSEQ)")
    h = int(re.search(r"HIGHESTMODSEQ (\d+)", u["STATUS"][0].decode()).group(1))
    assert h >= 2
    m.logout()


def test_fetch_changedsince(imap, cert):
    fill(imap, 5)
    m = client(imap, cert)
    _, u = select(m, "(CONDSTORE)")
    h = highest(u)
    run(m, "UID", "STORE", "2,4", "+FLAGS", "(\\Flagged)")
    _, _, u = run(m, "UID", "FETCH", "1:*", "(FLAGS)", f"(CHANGEDSINCE {h})")
    got = fetches(u)
    assert sorted(got) == [2, 4]
    assert all("\\Flagged" in f and ms > h for _, f, ms in got.values())
    _, _, u = run(m, "FETCH", "1:*", "(UID)", f"(CHANGEDSINCE {max(ms for *_, ms in got.values())})")
    assert fetches(u) == {}
    m.logout()


def test_store_unchangedsince_modified(imap, cert):
    fill(imap, 3)
    m = client(imap, cert)
    select(m)
    before = modseqs(m)
    # message 1 changed since the client looked: refused, [MODIFIED 1]
    run(m, "UID", "STORE", "1", "+FLAGS.SILENT", "(\\Answered)")
    _, text, u = run(m, "STORE", "1:2", f"(UNCHANGEDSINCE {before[2]})", "+FLAGS", "(\\Flagged)")
    assert "[MODIFIED 1]" in text, text
    got = fetches(u)
    assert list(got) == [2] and "\\Flagged" in got[2][1]
    _, _, u = run(m, "FETCH", "1", "(FLAGS)")
    assert "\\Flagged" not in fetches_flags(u)
    # UNCHANGEDSINCE 0 fails for every message; UID STORE names UIDs
    _, text, u = run(m, "UID", "STORE", "2:3", "(UNCHANGEDSINCE 0)", "+FLAGS", "(\\Deleted)")
    assert "[MODIFIED 2:3]" in text, text
    assert fetches(u) == {}
    # .SILENT with CONDSTORE on still reports the new MODSEQ (RFC 7162 §3.1.3)
    now = modseqs(m)
    _, text, u = run(m, "UID", "STORE", "3", f"(UNCHANGEDSINCE {now[3]})", "+FLAGS.SILENT",
                     "(\\Seen)")
    [(seq, flags, ms)] = fetches(u).values()
    assert flags is None and ms > now[3] and "MODIFIED" not in text
    m.logout()


def fetches_flags(u):
    [d] = u["FETCH"]
    return re.search(rb"FLAGS \(([^)]*)\)", d).group(1).decode()


def test_search_modseq(imap, cert):
    fill(imap, 4)
    m = client(imap, cert)
    _, u = select(m, "(CONDSTORE)")
    h = highest(u)
    run(m, "STORE", "1,3", "+FLAGS", "(\\Seen)")
    _, _, u = run(m, "SEARCH", "MODSEQ", str(h + 1))
    found = u["SEARCH"][0].decode()
    nums, top = re.match(r"^([\d ]+) \(MODSEQ (\d+)\)$", found).groups()
    assert nums.split() == ["1", "3"]
    assert int(top) == max(modseqs(m).values())
    _, _, u = run(m, "UID", "SEARCH", "MODSEQ", '"/flags/\\\\Seen"', "all", str(h + 1))
    assert u["SEARCH"][0].decode().startswith("1 3 (MODSEQ ")
    _, _, u = run(m, "SEARCH", "MODSEQ", str(int(top) + 1))
    assert u["SEARCH"] in ([b""], [None]), u
    m.logout()


def test_unsolicited_fetch_has_modseq(imap, cert):
    fill(imap, 2)
    a, b = client(imap, cert), client(imap, cert)
    run(a, "ENABLE", "CONDSTORE")
    select(a)
    select(b)
    run(b, "STORE", "2", "+FLAGS", "(\\Flagged)")
    b_ms = modseqs(b)[2]
    _, _, u = run(a, "NOOP")
    [(uid, (seq, flags, ms))] = fetches(u).items()
    assert (uid, seq, flags - {"\\Recent"}, ms) == (2, 2, {"\\Flagged"}, b_ms)
    a.logout()
    b.logout()


def test_vanished_instead_of_expunge(imap, cert):
    fill(imap, 4)
    a, b = client(imap, cert), client(imap, cert)
    run(a, "ENABLE", "QRESYNC")
    select(a)
    select(b)
    run(b, "STORE", "2", "+FLAGS.SILENT", "(\\Deleted)")
    run(b, "EXPUNGE")
    _, _, u = run(a, "NOOP")
    assert u.get("VANISHED") == [b"2"] and "EXPUNGE" not in u, u
    # its own EXPUNGE too
    run(a, "UID", "STORE", "3", "+FLAGS.SILENT", "(\\Deleted)")
    _, _, u = run(a, "EXPUNGE")
    assert u.get("VANISHED") == [b"3"] and "EXPUNGE" not in u, u
    # and MOVE's (RFC 6851 §4.3: the source's expunges are VANISHED too)
    _, _, u = run(a, "UID", "MOVE", "4", "Trash")
    assert u.get("VANISHED") == [b"4"] and "EXPUNGE" not in u, u
    # without QRESYNC: EXPUNGE as ever
    _, _, u = run(b, "NOOP")
    assert u.get("EXPUNGE") == [b"3", b"2"] and "VANISHED" not in u, u  # UIDs 4 and 3
    a.logout()
    b.logout()


def test_qresync_select_transfers_only_what_changed(imap, cert):
    """A client that knew the folder resynchronises after 100 flag changes
    and 5 expunges made by another client: exactly 100 FETCH responses and
    the 5 UIDs in VANISHED (EARLIER), nothing else."""
    fill(imap, 150)
    m = client(imap, cert)
    run(m, "ENABLE", "QRESYNC")
    _, u = select(m)
    uidvalidity, h = int(u["UIDVALIDITY"][0]), highest(u)
    m.logout()

    other = client(imap, cert)
    select(other)
    changed = list(range(1, 101))
    for uid in changed:
        run(other, "UID", "STORE", str(uid), "+FLAGS.SILENT", "(\\Seen $Label1)")
    gone = [120, 121, 130, 140, 150]
    run(other, "UID", "STORE", ",".join(map(str, gone)), "+FLAGS.SILENT", "(\\Deleted)")
    run(other, "EXPUNGE")
    other.logout()

    m = client(imap, cert)
    run(m, "ENABLE", "QRESYNC")
    _, u = select(m, f"(QRESYNC ({uidvalidity} {h}))")
    got = fetches(u)
    assert sorted(got) == changed
    assert all({"\\Seen", "$Label1"} <= f and ms > h for _, f, ms in got.values())
    assert vanished_earlier(u) == set(gone)
    h2 = highest(u)
    assert h2 >= max(ms for *_, ms in got.values()), "the expunges came after the changes"
    m.logout()

    # nothing changed since: nothing to transfer
    m = client(imap, cert)
    run(m, "ENABLE", "QRESYNC")
    _, u = select(m, f"(QRESYNC ({uidvalidity} {h2}))")
    assert "FETCH" not in u and "VANISHED" not in u, u
    # known UIDs narrow it (RFC 7162 §3.2.5); the folder selected before is
    # closed with [CLOSED] (§3.2.11)
    _, u = select(m, f"(QRESYNC ({uidvalidity} {h} 1:10,121))")
    assert u.get("CLOSED") == [b""] or u.get("CLOSED") == [None], u
    assert sorted(fetches(u)) == list(range(1, 11))
    assert vanished_earlier(u) == {121}
    # another UIDVALIDITY: no resync data, the client starts over
    _, u = select(m, f"(QRESYNC ({uidvalidity + 1} {h}))")
    assert "FETCH" not in u and "VANISHED" not in u, u
    m.logout()


def test_fetch_vanished_modifier(imap, cert):
    fill(imap, 5)
    m = client(imap, cert)
    run(m, "ENABLE", "QRESYNC")
    _, u = select(m)
    h = highest(u)
    run(m, "UID", "STORE", "2,4", "+FLAGS.SILENT", "(\\Deleted)")
    run(m, "UID", "STORE", "5", "+FLAGS.SILENT", "(\\Flagged)")
    run(m, "EXPUNGE")
    _, _, u = run(m, "UID", "FETCH", "1:*", "(FLAGS)", f"(CHANGEDSINCE {h} VANISHED)")
    assert vanished_earlier(u) == {2, 4}
    assert sorted(fetches(u)) == [5]
    m.logout()


def test_bad_modifiers(imap, cert):
    fill(imap, 2)
    m = client(imap, cert)
    typ, _, _ = run(m, "SELECT", "INBOX", "(QRESYNC (1 1))", ok=False)
    assert typ == "BAD", "QRESYNC parameter without ENABLE QRESYNC"
    select(m)
    for args in (("FETCH", "1", "(FLAGS)", "(CHANGEDSINCE x)"),
                 ("UID", "FETCH", "1", "(FLAGS)", "(CHANGEDSINCE 1 VANISHED)"),
                 ("FETCH", "1", "(FLAGS)", "(CHANGEDSINCE 1 VANISHED)"),
                 ("STORE", "1", "(UNCHANGEDSINCE)", "+FLAGS", "(\\Seen)"),
                 ("SEARCH", "MODSEQ", "x")):
        typ, text, _ = run(m, *args, ok=False)
        assert typ == "BAD", (args, typ, text)
    m.logout()


def test_restart_keeps_modseq(imap, cert):
    fill(imap, 3)
    m = client(imap, cert)
    _, u = select(m, "(CONDSTORE)")
    run(m, "STORE", "1:3", "+FLAGS", "(\\Seen)")
    before = modseqs(m)
    _, _, u = run(m, "STATUS", "INBOX", "(HIGHESTMODSEQ)")
    h = u["STATUS"][0]
    m.logout()
    imap.restart()
    m = client(imap, cert)
    _, _, u = run(m, "STATUS", "INBOX", "(HIGHESTMODSEQ)")
    assert u["STATUS"][0] == h
    _, u = select(m, "(CONDSTORE)")
    assert modseqs(m) == before
    run(m, "STORE", "2", "+FLAGS", "(\\Flagged)")
    after = modseqs(m)
    assert after[2] > max(before.values()), "a MODSEQ after the restart is never one given before"
    m.logout()
