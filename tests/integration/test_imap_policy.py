"""IMAP policy, concurrency, persistence and abuse
(RFC 3501, posthorn.conf(5)): a refused address gets `* BYE`; before TLS LOGIN is
refused with LOGINDISABLED advertised and `NO [PRIVACYREQUIRED]`; wrong
passwords and the shared lockout; two sessions on one folder see each
other's EXPUNGE, flag changes and new mail (and no EXPUNGE during FETCH,
STORE or SEARCH, RFC 3501 §7.4.1); UIDVALIDITY and UIDs stable across a
restart, a new, greater UIDVALIDITY when the index is lost; malformed
input (unbalanced parentheses, literals over the limits, invalid sequence
sets, 1 MB of nested parentheses, over-long sequence sets) answered with
BAD while the daemon's memory stays bounded; the NO STARTTLS (EAST) list
on IMAP (STARTTLS twice, on the IMAPS port, after LOGIN and AUTHENTICATE,
with pipelined plaintext, without a certificate); and the traffic capture:
neither the password nor a body token crosses the wire in clear inside a
STARTTLS or IMAPS session; a 20 MB message is fetched with the RSS bounded;
the autologout (short before login, long after), BYE on SIGTERM and over
the connection limit; SMTP and IMAP login failures feeding one throttle;
client strings (ID, LOGIN) never forging log lines; and ALPN on the IMAPS
port (ALPACA: other protocols refused).

Clients that fail logins bind their own 127.0.0.x source address, so that
one test's throttle delays slow no other.
"""

import base64
import hashlib
import os
import re
import ssl
import time

import pytest

from authutil import (SLOW, SLOW_ITERATIONS, SLOW_PW, b64, plain_response, read_until_closed,
                      reply_waiting, users_line)
from authutil import starttls as smtp_starttls
from helpers import HOST, SMTPConn, free_port, vm_rss_kb, wait_until
from imaputil import (BOB, BOB_PW, CAROL, CAROL_PW, DAVE, DAVE_PW, IMAPConn, client_ctx,
                      connect, deliver, fetch_responses, folder_files, folder_path,
                      imap_spec, login_select, make_cert, put_message, quote, start_imap)
from tlsutil import RecordingProxy, reveals, tls_with_first_flight


@pytest.fixture(scope="module")
def cert(posthorn_bin, tmp_path_factory):
    return make_cert(posthorn_bin, tmp_path_factory.mktemp("imap-policy-cert"))


@pytest.fixture(scope="module")
def ctx(cert):
    return client_ctx(cert)


@pytest.fixture
def imap(posthorn, cert):
    return start_imap(posthorn, cert)


def closed_after(c, timeout=10.0):
    """Everything the server sends until it closes, plain or TLS (an
    AssertionError if it does not close in time)."""
    return read_until_closed(c, timeout=timeout)


def is_bad(r):
    return r.status == "BAD"


# -- who may connect ------------------------------------------------------------------------

@pytest.mark.parametrize("tls", [None, "imaps"])
def test_refused_address_gets_bye_and_close(posthorn, cert, ctx, tls):
    p = start_imap(posthorn, cert, connection=["deny 127.0.0.0/24"])
    c = connect(p, tls=tls, ctx=ctx, greet=False)
    line = c.line()
    assert line.startswith("* BYE "), line
    closed_after(c)
    ev = p.wait_event("refuse", server="imap")
    assert ev["reason"] == "connection-rule", ev["_line"]
    # another address is served
    c2 = IMAPConn(p.port("imap"), source="127.0.1.9")
    p.conns.append(c2)
    assert c2.greeting().startswith("* OK")
    c2.logout()


# -- logins and TLS ----------------------------------------------------------------------------

def test_login_before_starttls_refused_with_logindisabled(imap, ctx):
    c = connect(imap)
    caps = c.capabilities()
    assert "IMAP4REV1" in caps and "STARTTLS" in caps and "LOGINDISABLED" in caps, caps
    assert not {"AUTH=PLAIN", "AUTH=LOGIN"} & caps, caps
    r = c.login(BOB, BOB_PW)
    assert r.status == "NO" and r.code() == "PRIVACYREQUIRED", r
    r = c.cmd("AUTHENTICATE PLAIN " + plain_response(BOB, BOB_PW))
    assert r.status == "NO" and r.code() == "PRIVACYREQUIRED", r
    r = c.cmd("SELECT INBOX")
    assert r.status in ("BAD", "NO"), r
    c.starttls(ctx)
    caps = c.capabilities()
    assert "STARTTLS" not in caps and "LOGINDISABLED" not in caps and "AUTH=PLAIN" in caps, caps
    assert c.login(BOB, BOB_PW).ok
    c.select("INBOX")
    c.logout()
    assert not [e for e in imap.events("auth") if e.get("result") == "fail"]
    assert BOB_PW not in imap.log and b64(BOB_PW) not in imap.log


def test_tls_required_refuses_every_login_before_starttls(posthorn, cert, ctx):
    p = start_imap(posthorn, cert, tls=["require yes"])
    c = connect(p)
    caps = c.capabilities()
    assert "STARTTLS" in caps and "LOGINDISABLED" in caps, caps
    assert not [x for x in caps if x.startswith("AUTH=")], caps
    r = c.login(BOB, BOB_PW)
    assert r.status == "NO" and r.code() == "PRIVACYREQUIRED", r
    r = c.cmd("AUTHENTICATE SCRAM-SHA-256")
    assert r.status == "NO" and r.code() == "PRIVACYREQUIRED", r
    c.starttls(ctx)
    assert c.login(BOB, BOB_PW).ok
    c.logout()


def test_plaintext_login_when_allowed(posthorn, cert):
    p = start_imap(posthorn, cert, auth=["plaintext-requires-tls no"])
    c = connect(p)
    caps = c.capabilities()
    assert "LOGINDISABLED" not in caps and "AUTH=PLAIN" in caps, caps
    assert c.login(BOB, BOB_PW).ok
    c.logout()
    [ev] = [e for e in p.events("login") if e.get("user") == BOB]
    assert ev.get("tls") == "no", ev["_line"]


def test_authenticate_plain_with_and_without_initial_response(imap, ctx):
    c = connect(imap, tls="imaps", ctx=ctx)
    assert c.cmd("AUTHENTICATE PLAIN " + plain_response(BOB, BOB_PW)).ok      # SASL-IR
    c.logout()
    c = connect(imap, tls="starttls", ctx=ctx)
    tag = c.send_cmd("AUTHENTICATE PLAIN")
    assert c.line().startswith("+")
    c.send(plain_response(CAROL, CAROL_PW) + "\r\n")
    r = c.collect(tag)
    assert r.ok, r
    c.logout()
    # cancelled exchange: BAD, and the session is still usable
    c = connect(imap, tls="imaps", ctx=ctx)
    tag = c.send_cmd("AUTHENTICATE PLAIN")
    assert c.line().startswith("+")
    c.send(b"*\r\n")
    r = c.collect(tag)
    assert r.status == "BAD", r
    assert c.login(DAVE, DAVE_PW).ok
    c.logout()


def test_wrong_password_and_lockout(posthorn, cert, ctx):
    p = start_imap(posthorn, cert, auth=["lockout 3 15m 30m"])
    c = connect(p, tls="imaps", ctx=ctx, source="127.0.6.1", timeout=60)
    for i in range(3):
        r = c.login(BOB, f"wrong-Guess-{i}")
        assert r.status == "NO" and r.code() == "AUTHENTICATIONFAILED", r
    # locked out: even the right password does not open the mailbox
    tag = c.send_cmd(f'LOGIN "{BOB}" "{BOB_PW}"')
    rest = closed_after(c, timeout=60)
    assert f"{tag} OK".encode() not in rest, rest
    assert [e for e in p.events("lockout") if e.get("client") == "127.0.6.1"], p.log
    # another address is not locked out
    c2 = connect(p, tls="imaps", ctx=ctx, source="127.0.6.2")
    assert c2.login(BOB, BOB_PW).ok
    c2.logout()
    for i in range(3):
        assert f"wrong-Guess-{i}" not in p.log


# -- two sessions on one folder -------------------------------------------------------------------

def test_two_sessions_see_each_others_changes(imap, ctx):
    for i in range(4):
        deliver(imap, BOB, f"Subject: shared {i}\r\n\r\nbody {i}\r\n")
    a = login_select(imap, ctx, tls="imaps")
    b = login_select(imap, ctx, tls="starttls")
    # flags: B hears of A's STORE at its next command
    a.ok("STORE 2 +FLAGS (\\Flagged)")
    r = b.ok("NOOP")
    [line] = r.find(r"^\* 2 FETCH ")
    assert "\\Flagged" in line, r
    # EXPUNGE: not announced during FETCH, STORE or SEARCH (RFC 3501 §7.4.1)
    a.ok("STORE 1,3 +FLAGS (\\Deleted)")
    r = a.ok("EXPUNGE")
    # either order is right: "3 then 1", or "1 then 2" (numbers shift at once)
    assert [x for x in r.lines() if x.endswith(" EXPUNGE")] in (
        ["* 3 EXPUNGE", "* 1 EXPUNGE"], ["* 1 EXPUNGE", "* 2 EXPUNGE"]), r
    for cmd in ("FETCH 2 (FLAGS)", "STORE 2 +FLAGS (\\Seen)", "SEARCH ALL"):
        r = b.cmd(cmd)
        assert not r.find(r"EXPUNGE$"), (cmd, r)
    r = b.ok("NOOP")
    exp = [x for x in r.lines() if x.endswith(" EXPUNGE")]
    assert exp in (["* 3 EXPUNGE", "* 1 EXPUNGE"], ["* 1 EXPUNGE", "* 2 EXPUNGE"]), r
    f = fetch_responses(b.ok("FETCH 1:* (UID FLAGS)"))
    assert len(f) == 2 and "\\Flagged" in f[1]["FLAGS"] and "\\Seen" in f[1]["FLAGS"], f
    # A sees B's \Seen
    r = a.ok("NOOP")
    assert any("\\Seen" in x for x in r.find(r"^\* 1 FETCH ")), r
    # new mail: both hear EXISTS
    deliver(imap, BOB, "Subject: shared late\r\n\r\nlate\r\n")
    for c in (a, b):
        r = wait_until(lambda: (lambda r: r if r.find(r"^\* 3 EXISTS") else None)(c.ok("NOOP")),
                       timeout=10, interval=0.3, what="EXISTS")
        assert r
    a.logout()
    b.logout()


# -- UIDVALIDITY ------------------------------------------------------------------------------------

def select_ids(p, ctx):
    c = login_select(p, ctx)
    r = c.select("INBOX")
    v = int(re.search(r"UIDVALIDITY (\d+)", " ".join(r.find("UIDVALIDITY"))).group(1))
    n = int(re.search(r"UIDNEXT (\d+)", " ".join(r.find("UIDNEXT"))).group(1))
    f = fetch_responses(c.ok("FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (Subject)])"))
    uids = {int(x["UID"]): [v_ for k, v_ in x.items() if k.startswith("BODY[")][0] for x in f.values()}
    c.logout()
    return v, n, uids


def test_uidvalidity_stable_across_restart_new_when_index_lost(imap, ctx):
    for i in range(3):
        deliver(imap, BOB, f"Subject: keep {i}\r\n\r\nbody\r\n")
    v1, n1, uids1 = select_ids(imap, ctx)
    assert len(uids1) == 3 and n1 > max(uids1)
    index = os.path.join(folder_path(imap, BOB), "posthorn-uidlist")
    assert os.path.isfile(index)
    with open(index) as f:
        assert re.match(rf"^V{v1} N{n1}\b", f.readline()), index
    imap.restart()
    v2, n2, uids2 = select_ids(imap, ctx)
    assert (v2, n2, uids2) == (v1, n1, uids1)
    # a new message gets UIDNEXT; the others keep theirs
    deliver(imap, BOB, "Subject: keep 3\r\n\r\nbody\r\n")
    v3, n3, uids3 = select_ids(imap, ctx)
    assert v3 == v1 and {u: uids3[u] for u in uids1} == uids1
    [new] = set(uids3) - set(uids1)
    assert new >= n1 and n3 > new, (n1, new, n3)
    assert uids3[new] == b"Subject: keep 3\r\n\r\n"
    # index lost (daemon stopped): a new, greater UIDVALIDITY, all messages there
    assert imap.stop() == 0
    os.remove(index)
    time.sleep(1.1)
    imap.start()
    v4, n4, uids4 = select_ids(imap, ctx)
    assert v4 > v1, (v4, v1)
    assert sorted(uids4.values()) == sorted(uids3.values())
    # ... and it stays that way
    imap.restart()
    assert select_ids(imap, ctx)[0] == v4


def test_index_lost_while_running_gets_a_new_uidvalidity(imap, ctx):
    deliver(imap, BOB, "Subject: one\r\n\r\nbody\r\n")
    v1, _, uids1 = select_ids(imap, ctx)
    os.remove(os.path.join(folder_path(imap, BOB), "posthorn-uidlist"))
    time.sleep(1.1)
    v2, _, uids2 = select_ids(imap, ctx)
    assert v2 > v1, (v2, v1)
    assert list(uids2.values()) == list(uids1.values())


# -- a login's PBKDF2 runs beside the event loop ----------------------------------------------------

@pytest.mark.exclusive
def test_slow_login_holds_only_its_own_session(posthorn, cert, ctx):
    p = start_imap(posthorn, cert, start=False)
    with open(p.users_file, "a") as f:
        f.write(users_line(SLOW, SLOW_PW, SLOW_ITERATIONS))
    p.start()
    a = connect(p, tls="imaps", ctx=ctx)
    tag = a.send_cmd(f"LOGIN {SLOW} {quote('zed-wrong')}")
    a.send(b"N1 NOOP\r\n")                # pipelined: waits for the LOGIN's answer
    b = connect(p, tls="imaps", ctx=ctx)
    assert b.ok("NOOP")
    assert b.login(BOB, BOB_PW).ok
    b.select("INBOX")
    assert not reply_waiting(a), "another session waited for the password check"
    r = a.collect(tag, timeout=60)
    assert r.status == "NO" and "[AUTHENTICATIONFAILED]" in r.tagged, r
    assert a.collect("N1", timeout=30).status == "OK"
    assert a.login(SLOW, SLOW_PW).ok
    assert a.ok("NOOP")
    [ev] = [e for e in p.events("auth") if e.get("user") == SLOW and e.get("result") == "fail"]
    assert ev.get("client") == "127.0.0.1", ev


# -- malformed input, bounded memory ----------------------------------------------------------------

def rss_check(p, before, limit_kb, what):
    after = vm_rss_kb(p.pid)
    print(f"VmRSS before {before} KiB, after {after} KiB ({what})")
    assert after - before < limit_kb, f"RSS grew by {after - before} KiB ({what})"


def literal_refused(c, text, statuses=("BAD",)):
    """A command ending in a synchronizing literal the server must refuse:
    the first answer is the tagged refusal, never the "+" continuation."""
    tag = c.send_cmd(text)
    line = c.line()
    assert line.split(" ")[0] == tag and line.split(" ")[1] in statuses, \
        f"{text!r}: {line!r} (the literal must be refused, not invited)"
    return line


def test_malformed_commands_get_bad(posthorn, cert, ctx):
    p = start_imap(posthorn, cert, limits={"message-size": "100K"},
                   asan_options={"quarantine_size_mb": "1"})
    put_message(p, BOB, "Subject: only one\n\nbody\n")
    c = connect(p, tls="imaps", ctx=ctx)
    # before login: unbalanced parentheses, a literal over the limit
    assert is_bad(c.cmd("ID (\"name\" \"x\"")), "unbalanced '(' before login"
    literal_refused(c, "LOGIN {100000}")
    # APPEND before login: refused before its literal is invited
    literal_refused(c, "APPEND INBOX {10}", ("NO", "BAD"))
    assert c.ok("NOOP")
    assert c.login(BOB, BOB_PW).ok
    c.select("INBOX")
    # at most 12 errors per session (a server may close a session after many)
    bad = [
        "FETCH 1 (FLAGS",                        # unbalanced
        "FETCH 1 FLAGS)",
        "FETCH 1 (FLAGS UID))",
        "SEARCH (FROM x",
        "SEARCH FROM x)",
        "STORE 1 +FLAGS (\\Seen",
        "FETCH 0 FLAGS",                         # invalid sequence sets
        "FETCH 1:0 FLAGS",
        "FETCH x FLAGS",
        "FETCH 1,,2 FLAGS",
        "FETCH 1: FLAGS",
        "FETCH :1 FLAGS",
        "FETCH -1 FLAGS",
        "FETCH 4294967296 FLAGS",
        "FETCH 2 FLAGS",                         # beyond EXISTS
        "FETCH 1:100000 FLAGS",
        "STORE 5 +FLAGS (\\Seen)",
        "COPY 3 Trash",
        "UID FETCH 0:5 FLAGS",
        "UID FETCH 1:x FLAGS",
        "FETCH 1 (FLAGS BODY[1.x])",             # invalid section
        "FETCH 1 BODY[",
        "XYZZY",
    ]
    for i, cmd in enumerate(bad):
        if i and i % 12 == 0:
            c.logout()
            c = login_select(p, ctx)
        r = c.cmd(cmd)
        assert is_bad(r), (cmd, r)
    # large but valid sets: UID FETCH of 100,000 UIDs is fine
    f = fetch_responses(c.ok("UID FETCH 1:100000 (FLAGS)"))
    assert list(f) == [1], f
    # a synchronizing literal over the limit: BAD, no continuation
    literal_refused(c, "SEARCH TEXT {200000}")
    # a non-synchronizing literal over the limit (LITERAL+): BAD [TOOBIG], octets skipped
    tag = c.send_cmd(b"SEARCH TEXT {200000+}\r\n" + b"x" * 200000)
    r = c.collect(tag)
    assert is_bad(r) and r.code() == "TOOBIG", r
    assert c.ok("NOOP")
    # APPEND bigger than limits.message-size: refused before the literal
    line = literal_refused(c, "APPEND INBOX {200000}", ("NO", "BAD"))
    assert "[TOOBIG]" in line, line
    assert c.ok("NOOP")
    r = c.ok("SEARCH ALL")
    assert r.find(r"^\* SEARCH 1$"), r
    c.logout()


@pytest.mark.parametrize("authenticated", [False, True], ids=["before-login", "after-login"])
def test_nested_parentheses_one_megabyte(posthorn, cert, ctx, authenticated):
    p = start_imap(posthorn, cert, asan_options={"quarantine_size_mb": "1"})
    put_message(p, BOB, "Subject: nested\n\nbody\n")
    c = connect(p, tls="imaps", ctx=ctx, timeout=60)
    if authenticated:
        assert c.login(BOB, BOB_PW).ok
        c.select("INBOX")
        cmd = b"SEARCH "
    else:
        cmd = b"ID "
    # warm-up: one of each, so that lazily allocated things exist
    assert is_bad(c.cmd(cmd + b"(" * 100))
    before = vm_rss_kb(p.pid)
    mb = 1024 * 1024
    # 1 MB of "(" in one line
    r = c.cmd(cmd + b"(" * mb, timeout=60)
    assert is_bad(r), r
    # 1 MB of "(" in 256 line parts joined by non-synchronizing literals
    piece = b"(" * (4096 - 8) + b" {1+}\r\nx "
    r = c.cmd(cmd + piece * 256 + b")", timeout=60)
    assert is_bad(r), r
    # and deep but sane nesting still works
    if authenticated:
        r = c.ok("SEARCH " + "(" * 8 + "ALL" + ")" * 8)
        assert r.find(r"^\* SEARCH 1$"), r
    assert c.ok("NOOP")
    rss_check(p, before, 4 * 1024, "1 MB of nested parentheses, twice")
    # 100,000-message sequence set spelt out (1,3,5,...): refused, memory bounded
    if authenticated:
        seqs = ",".join(str(i) for i in range(1, 200000, 2))
        r = c.cmd("UID FETCH " + seqs + " FLAGS", timeout=60)
        assert is_bad(r), r
        assert c.ok("NOOP")
        rss_check(p, before, 4 * 1024, "100,000 numbers in a sequence set")
    c.logout()


def test_many_malformed_commands_keep_memory_bounded(posthorn, cert, ctx):
    p = start_imap(posthorn, cert, asan_options={"quarantine_size_mb": "1"})
    put_message(p, BOB, "Subject: x\n\nbody\n")
    junk = [b"FETCH 1 (" + b"(" * 40, b"SEARCH " + b"(" * 5000, b"FETCH " + b"9" * 3000 + b" FLAGS",
            b"STORE 1 FLAGS (" + b"\\Seen " * 1000, b"\x01\x02 \xff\xfe", b"X" * 20000,
            b"SEARCH TEXT {70000}", b"LIST \"\" {70000+}\r\n" + b"%" * 70000]

    def session():
        # a server may close a session after many bad commands; a few
        # per session stay below any sensible limit
        c = login_select(p, ctx, timeout=60)
        for cmd in junk:
            r = c.cmd(cmd, timeout=60)
            assert r.status in ("BAD", "NO"), (cmd[:40], r)
        assert c.ok("NOOP")
        c.logout()
        c.close()
        p.conns.remove(c)

    # warm-up: under ASan each thread's allocator caches fill over the
    # first logins (the password workers' too: their PBKDF2 allocates in
    # OpenSSL); the release build stays flat from the first session
    for _ in range(15):
        session()
    before = vm_rss_kb(p.pid)
    t0 = time.monotonic()
    for _ in range(25):
        session()
        assert time.monotonic() - t0 < 300
    rss_check(p, before, 2 * 1024, f"{25 * len(junk)} malformed commands in 25 sessions")


# -- NO STARTTLS: the EAST list on IMAP ------------------------------------------------------------

def test_starttls_twice_refused_session_stays_in_tls(imap, ctx):
    c = connect(imap, tls="starttls", ctx=ctx)
    r = c.cmd("STARTTLS")
    assert r.status in ("BAD", "NO"), r
    # still the same TLS session, still working
    assert c.login(BOB, BOB_PW).ok
    r = c.cmd("STARTTLS")
    assert r.status in ("BAD", "NO"), r
    c.select("INBOX")
    c.logout()


def test_starttls_on_the_imaps_port_refused(imap, ctx):
    c = connect(imap, tls="imaps", ctx=ctx)
    assert "STARTTLS" not in c.capabilities()
    r = c.cmd("STARTTLS")
    assert r.status in ("BAD", "NO"), r
    assert c.login(BOB, BOB_PW).ok
    c.logout()


@pytest.mark.parametrize("how", ["LOGIN", "AUTHENTICATE"])
def test_starttls_after_login_refused(posthorn, cert, ctx, how):
    p = start_imap(posthorn, cert, auth=["plaintext-requires-tls no"])
    c = connect(p)
    if how == "LOGIN":
        assert c.login(BOB, BOB_PW).ok
    else:
        assert c.cmd("AUTHENTICATE PLAIN " + plain_response(BOB, BOB_PW)).ok
    r = c.cmd("STARTTLS")
    assert r.status in ("BAD", "NO"), r
    # no handshake happened: the session goes on in plaintext, logged in
    c.select("INBOX")
    r = c.cmd("STARTTLS")
    assert r.status in ("BAD", "NO"), r
    c.logout()


@pytest.mark.parametrize("injected", [
    f'x1 LOGIN "{BOB}" "{BOB_PW}"\r\n'.encode(),
    b"x1 CAPABILITY\r\nx2 NOOP\r\n",
    f'x1 LOGIN "{BOB}" "{BOB_PW}"\r\nx2 SELECT INBOX\r\n'.encode(),
    b"x1 ID {5}\r\n",
], ids=["login", "capability", "login-select", "literal"])
def test_starttls_discards_pipelined_plaintext(imap, ctx, injected):
    c = connect(imap)
    tag = c.next_tag()
    c.send(f"{tag} STARTTLS\r\n".encode() + injected)          # one write
    r = c.collect(tag)
    assert r.ok, r
    assert r.untagged == [], f"plaintext answer to the injected commands: {r.untagged!r}"
    assert c.buf == b"" and c.quiet(0.3) == b"", "plaintext after the STARTTLS OK"
    c.wrap(ctx)
    # inside TLS the server says nothing until asked
    leaked = c.quiet(0.5)
    assert leaked == b"", f"server answered injected plaintext inside TLS: {leaked!r}"
    r = c.cmd("NOOP")
    assert r.ok and r.untagged == [], r
    # the injected LOGIN logged nobody in
    r = c.cmd("SELECT INBOX")
    assert r.status in ("BAD", "NO"), r
    assert "LOGINDISABLED" not in c.capabilities()
    assert c.login(BOB, BOB_PW).ok
    c.logout()
    assert not [e for e in imap.events("login") if e.get("tls") == "no"]


def test_starttls_without_certificate(posthorn):
    p = posthorn(servers={"imap": {"anonymous": None, "extra": "protocol imap\nauth {\n"
                                   "    plaintext-requires-tls no\n}"}})
    c = connect(p)
    caps = c.capabilities()
    assert "STARTTLS" not in caps and "LOGINDISABLED" not in caps, caps
    r = c.cmd("STARTTLS")
    assert r.status in ("BAD", "NO"), r
    assert c.login(BOB, BOB_PW).ok
    c.logout()


@pytest.mark.parametrize("starttls", [False, True], ids=["imaps", "starttls"])
def test_commands_sent_with_the_clients_finished_are_answered(imap, ctx, starttls):
    """TLS 1.3 lets a client send its first command in the same write as
    its Finished message; the server must answer it."""
    c = connect(imap, greet=False, port=imap.port("imap") if starttls else imap.imaps_port)
    if starttls:
        c.greeting()
        tag = c.send_cmd("STARTTLS")
        assert c.collect(tag).ok
    plain, end = tls_with_first_flight(c.sock, b"t1 CAPABILITY\r\nt2 LOGOUT\r\n", ctx, HOST)
    if not starttls:
        assert plain.startswith(b"* OK"), (plain, end)
    assert b"* CAPABILITY " in plain and b"t1 OK" in plain, (plain, end)
    assert b"* BYE" in plain and b"t2 OK" in plain, (plain, end)


# -- the Network Monitor --------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["plain", "starttls", "imaps"])
def test_network_monitor_sees_nothing_inside_tls(posthorn, cert, ctx, mode):
    p = start_imap(posthorn, cert, auth=["plaintext-requires-tls no"])
    token = "NetMon-" + os.urandom(8).hex()
    deliver(p, CAROL, f"Subject: capture {mode}\r\n\r\nThe secret body token is {token}.\r\n"
            + "filler line so the message has some size\r\n" * 20)
    target = p.imaps_port if mode == "imaps" else p.port("imap")
    with RecordingProxy(target) as proxy:
        c = IMAPConn(proxy.port)
        p.conns.append(c)
        if mode == "imaps":
            c.wrap(ctx)
        c.greeting()
        if mode == "starttls":
            c.starttls(ctx)
        assert c.login(CAROL, CAROL_PW).ok
        c.select("INBOX")
        f = fetch_responses(c.ok("FETCH 1 (BODY[])"))
        assert token.encode() in f[1]["BODY[]"]
        sent = f"Subject: sent\r\n\r\n{token}\r\n"
        c.ok("APPEND Sent {%d+}\r\n%s" % (len(sent), sent))
        c.logout()
        capture = proxy.capture
        assert proxy.connections == 1 and not proxy.errors, proxy.errors
    if mode == "plain":
        # what a network monitor shows for an unencrypted session
        assert reveals(capture, CAROL_PW)
        assert token.encode() in capture
    else:
        assert len(capture) > 1000, len(capture)
        assert not reveals(capture, CAROL_PW), "password visible on the wire"
        assert not reveals(capture, token), "message body visible on the wire"
        assert not reveals(capture, CAROL), "user name visible on the wire"
        assert b"Subject: capture" not in capture and b"FETCH" not in capture


# -- a message's flags on disk agree with another Maildir tool --------------------------------------

def test_flags_set_by_another_maildir_tool_are_seen(imap, ctx):
    path = put_message(imap, BOB, "Subject: tool\n\nbody\n", sub="cur", info="FS")
    c = login_select(imap, ctx)
    f = fetch_responses(c.ok("FETCH 1 (FLAGS)"))
    assert {"\\Flagged", "\\Seen"} <= set(f[1]["FLAGS"]), f
    # another tool (mutt, a script) marks it replied and deleted
    d, name = os.path.split(path)
    os.rename(path, os.path.join(d, name.split(":2,")[0] + ":2,FRST"))
    r = c.ok("NOOP")
    [line] = r.find(r"^\* 1 FETCH ")
    for flag in ("\\Answered", "\\Deleted", "\\Flagged", "\\Seen"):
        assert flag in line, line
    c.ok("EXPUNGE")
    assert folder_files(imap, BOB) == []
    c.logout()


# -- autologout and shutdown -------------------------------------------------------------------------

def test_autologout_short_before_login_long_after(posthorn, cert, ctx):
    """limits.timeout applies before login; once authenticated the timer is
    at least 30 minutes (RFC 3501 §5.4), so a 2s limit does not end it."""
    p = start_imap(posthorn, cert, limits={"timeout": "2s"})
    idle = connect(p, tls="imaps", ctx=ctx)
    c = connect(p, tls="imaps", ctx=ctx)
    assert c.login(BOB, BOB_PW).ok
    c.select("INBOX")
    t0 = time.monotonic()
    rest = closed_after(idle, timeout=20)
    assert time.monotonic() - t0 >= 1.5
    assert rest.startswith(b"* BYE"), rest
    time.sleep(max(0.0, 5.0 - (time.monotonic() - t0)))
    assert c.cmd("NOOP").ok, "an authenticated session was logged out after a few seconds"
    c.logout()


def test_sigterm_says_bye_to_open_sessions(posthorn, cert, ctx):
    p = start_imap(posthorn, cert)
    a = login_select(p, ctx)
    b = connect(p)                                  # not logged in
    assert p.stop() == 0, p.log
    for c in (a, b):
        got = closed_after(c)
        assert got.startswith(b"* BYE"), got          # RFC 3501 §7.1.5


# -- a 20 MB message streams from disk ---------------------------------------------------------------

BIG_LINE = b"y" * 75 + b"." + b"\n"


def read_literal_into(c, n, deadline):
    """n octets of a literal, read straight into a bytearray (bounded in time)."""
    buf = bytearray(c.buf[:n])
    c.buf = c.buf[n:] if len(c.buf) > n else b""
    while len(buf) < n:
        c.sock.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = c.sock.recv(min(1 << 20, n - len(buf)))
        assert chunk, "connection closed inside a literal"
        buf += chunk
    return bytes(buf)


@pytest.mark.parametrize("mode", ["starttls", "imaps"])
def test_fetch_of_a_20mb_message_streams_with_bounded_rss(posthorn, cert, ctx, mode):
    p = start_imap(posthorn, cert, asan_options={"quarantine_size_mb": "1"})
    n = 20 * 1024 * 1024 // len(BIG_LINE)
    msg = b"Subject: big\nFrom: a@example.org\n\n" + BIG_LINE * n
    put_message(p, BOB, msg)
    want = msg.replace(b"\n", b"\r\n")
    # warm-up: a whole session with a small FETCH
    c = login_select(p, ctx, tls=mode, timeout=60)
    c.ok("FETCH 1 (BODY.PEEK[HEADER] RFC822.SIZE)")
    c.logout()
    time.sleep(0.3)

    c = login_select(p, ctx, tls=mode, timeout=60)
    before = vm_rss_kb(p.pid)
    tag = c.send_cmd("FETCH 1 BODY.PEEK[]")
    first = c.readline()
    m = re.match(rb"^\* 1 FETCH \(BODY\[\] \{(\d+)\}\r\n$", first)
    assert m and int(m.group(1)) == len(want), first
    # a slow reader: the daemon must wait for it, not buffer the message
    time.sleep(1.5)
    peak = vm_rss_kb(p.pid)
    got = read_literal_into(c, len(want), time.monotonic() + 120)
    rest = c.collect(tag, timeout=30)
    after = vm_rss_kb(p.pid)
    assert rest.ok, rest
    assert hashlib.sha256(got).digest() == hashlib.sha256(want).digest()
    # a partial fetch from the middle
    f = fetch_responses(c.ok("FETCH 1 (BODY.PEEK[TEXT]<10000000.100>)"))
    body_start = want.index(b"\r\n\r\n") + 4
    assert f[1]["BODY[TEXT]<10000000>"] == want[body_start + 10000000:body_start + 10000100]
    c.logout()
    growth = max(peak, after) - before
    print(f"VmRSS before {before} KiB, peak {peak} KiB, after {after} KiB ({mode})")
    assert growth < 4 * 1024, f"RSS grew by {growth} KiB while sending a 20 MB message ({mode})"


# -- the same policies as SMTP ------------------------------------------------------------------------

def test_smtp_and_imap_failures_feed_one_throttle(posthorn, cert, ctx):
    """Two wrong passwords over SMTP AUTH and one over IMAP LOGIN, from one
    address, reach the lockout threshold of 3: the shared throttle."""
    lock = "lockout 3 15m 30m"
    tls_port = free_port()
    servers = {"sub": {"anonymous": None, "extra": "\n".join([
                   "tls {", f"    certificate {cert['crt']}", f"    key {cert['key']}", "}",
                   "auth {", "    anonymous no", f"    {lock}", "}"])},
               "imap": imap_spec(cert, tls_port, auth=[lock])}
    p = posthorn(servers=servers)
    p.imaps_port = tls_port
    src = "127.0.8.1"
    for i in range(2):
        s = SMTPConn(p.port("sub"), source=src, timeout=30)
        p.conns.append(s)
        s.start()
        smtp_starttls(s, ctx)
        s.ehlo()
        r = s.cmd("AUTH PLAIN " + plain_response(BOB, f"wrong-Smtp-{i}"))
        assert r.code == 535, r.raw
        s.cmd("QUIT")
    c = connect(p, tls="imaps", ctx=ctx, source=src, timeout=30)
    r = c.login(BOB, "wrong-Imap-0")
    assert r.status == "NO" and r.code() == "AUTHENTICATIONFAILED", r
    # the third failure locked the address: the right password no longer helps
    tag = c.send_cmd(f'LOGIN "{BOB}" "{BOB_PW}"')
    rest = closed_after(c, timeout=30)
    assert f"{tag} OK".encode() not in rest and b"* BYE" in rest, rest
    assert [e for e in p.events("lockout") if e.get("client") == src], p.log
    c2 = connect(p, tls="imaps", ctx=ctx, source=src, timeout=30)
    tag = c2.send_cmd(f'LOGIN "{BOB}" "{BOB_PW}"')
    rest = closed_after(c2, timeout=30)
    assert f"{tag} OK".encode() not in rest, rest


def test_connections_per_ip_limit_gets_bye(posthorn, cert, ctx):
    p = start_imap(posthorn, cert, limits={"connections-per-ip": "2"})
    a = connect(p, tls="imaps", ctx=ctx)
    b = connect(p)
    c = connect(p, greet=False)
    line = c.line()
    assert line.startswith("* BYE"), line
    closed_after(c)
    # another address is served; the first two still work
    d = IMAPConn(p.port("imap"), source="127.0.9.1")
    p.conns.append(d)
    assert d.greeting().startswith("* OK")
    for x in (a, b, d):
        assert x.cmd("NOOP").ok
        x.logout()


def test_starttls_as_a_sasl_response_starts_no_tls(posthorn, cert, ctx):
    p = start_imap(posthorn, cert, auth=["plaintext-requires-tls no"])
    c = connect(p)
    tag = c.send_cmd("AUTHENTICATE PLAIN")
    assert c.line().startswith("+")
    c.send(b"x9 STARTTLS\r\n")                     # not base64: the exchange fails
    r = c.collect(tag)
    assert r.status in ("BAD", "NO"), r
    assert c.quiet(0.3) == b""
    # still plaintext, still usable
    assert c.login(BOB, BOB_PW).ok
    c.logout()


# -- log injection ------------------------------------------------------------------------------------

def test_client_strings_never_forge_log_lines(imap, ctx):
    """CR, LF, NUL and escape sequences in ID values and login names reach
    the log escaped: no forged line, no terminal escape."""
    forged = "event=login session=X server=imap client=1.2.3.4 result=ok user=root"
    c = connect(imap, tls="imaps", ctx=ctx, source="127.0.10.1")
    evil = f"x\r\n{forged}\r\n\x1b[2J"
    r = c.cmd(f'ID ("name" {{{len(evil)}+}}\r\n{evil} "version" "1\x1b[31m")')
    assert r.status in ("OK", "BAD"), r
    user = f"nobody\r\n{forged}\x1b[0m"
    r = c.cmd(f'LOGIN {{{len(user)}+}}\r\n{user} "wrong-Pw-1"')
    assert r.status in ("NO", "BAD"), r
    r = c.cmd('LOGIN {9+}\r\nnul\x00user "wrong-Pw-2"')
    assert r.status in ("NO", "BAD"), r
    assert c.login(BOB, BOB_PW).ok
    c.logout()
    imap.wait_event("disconnect", server="imap")
    log = imap.log
    assert "\x1b" not in log and "\x00" not in log, "raw control bytes in the log"
    for line in log.splitlines():
        assert not line.startswith(forged) and f": {forged}" not in line, line
    assert "wrong-Pw-1" not in log and "wrong-Pw-2" not in log


# -- ALPACA: an IMAPS port speaks only IMAP ------------------------------------------------------------

@pytest.mark.parametrize("alpn", [["http/1.1"], ["h2", "http/1.1"], ["smtp"], ["pop3"]])
def test_alpn_other_protocols_refused_on_imaps(imap, cert, alpn):
    ctx = client_ctx(cert)
    ctx.set_alpn_protocols(alpn)
    c = IMAPConn(imap.imaps_port)
    imap.conns.append(c)
    with pytest.raises(ssl.SSLError) as e:
        c.wrap(ctx)
        c.line()
    assert "no application protocol" in str(e.value).lower().replace("_", " "), e.value


@pytest.mark.parametrize("alpn", [["imap"], ["http/1.1", "imap"], None])
def test_alpn_imap_or_none_accepted_on_imaps(imap, cert, alpn):
    ctx = client_ctx(cert)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    c = connect(imap, tls="imaps", ctx=ctx)
    assert c.sock.selected_alpn_protocol() == ("imap" if alpn else None)
    assert c.login(BOB, BOB_PW).ok
    c.logout()


# -- one user never reaches another's mail ---------------------------------------------------------

def traversal(name):
    return "/" in name or ".." in name or name.startswith(".") or name == ""


def test_folder_names_never_reach_another_users_maildir(imap, ctx):
    deliver(imap, CAROL, "Subject: carol's own\r\n\r\nprivate\r\n")
    carol_before = sorted(os.listdir(imap.maildir(CAROL)))
    carol_files = folder_files(imap, CAROL)
    c = connect(imap, tls="imaps", ctx=ctx)
    assert c.login(BOB, BOB_PW).ok
    names = ["../carol", "../../example.test/carol", "..", ".", "./../carol", "/",
             f"{imap.maildir(CAROL)}", "~carol", "#shared/carol", "INBOX/../../carol",
             "..%2fcarol", "Trash/../../carol"]
    for name in names:
        for cmd in (f"SELECT {quote(name)}", f"EXAMINE {quote(name)}",
                    f"STATUS {quote(name)} (MESSAGES)", f"DELETE {quote(name)}",
                    f"RENAME {quote(name)} Stolen", f"RENAME INBOX {quote(name)}",
                    f"SUBSCRIBE {quote(name)}"):
            r = c.cmd(cmd)
            # a path-like name is refused; "~carol" is just a folder name of Bob's
            if traversal(name) and not cmd.startswith("SUBSCRIBE"):
                assert r.status in ("NO", "BAD"), (cmd, r)
            assert b"private" not in b"".join(r.untagged), (cmd, r)
        msg = b"Subject: planted\r\n\r\nx\r\n"
        tag = c.send_cmd("APPEND %s {%d}" % (quote(name), len(msg)))
        line = c.line()
        if line.startswith("+"):
            c.send(msg + b"\r\n")
            status = c.collect(tag).status
        else:
            assert line.startswith(tag + " "), line
            status = line.split()[1]
        if traversal(name):
            assert status in ("NO", "BAD"), (name, status)
    c.logout()
    assert sorted(os.listdir(imap.maildir(CAROL))) == carol_before
    assert folder_files(imap, CAROL) == carol_files
    # nothing was created outside Bob's Maildir
    assert sorted(os.listdir(os.path.dirname(imap.maildir(BOB)))) == ["bob", "carol"]


def test_authenticate_login_and_foreign_authzid(imap, ctx):
    c = connect(imap, tls="imaps", ctx=ctx, source="127.0.11.1")
    tag = c.send_cmd("AUTHENTICATE LOGIN")
    line = c.line()
    assert line.startswith("+ ") and base64.b64decode(line[2:]) in (b"Username:", b"User Name"), line
    c.send(b64(BOB) + "\r\n")
    line = c.line()
    assert line.startswith("+ ") and base64.b64decode(line[2:]).startswith(b"Password"), line
    c.send(b64(BOB_PW) + "\r\n")
    assert c.collect(tag).ok
    c.logout()
    # Bob's password with Carol as the authorization identity: refused
    deliver(imap, CAROL, "Subject: carol only\r\n\r\nprivate\r\n")
    c = connect(imap, tls="imaps", ctx=ctx, source="127.0.11.2")
    r = c.cmd("AUTHENTICATE PLAIN " + plain_response(BOB, BOB_PW, authzid=CAROL))
    assert r.status == "NO", r
    r = c.cmd("SELECT INBOX")
    assert r.status in ("BAD", "NO"), r
    # the same with Bob as authzid is fine
    r = c.cmd("AUTHENTICATE PLAIN " + plain_response(BOB, BOB_PW, authzid=BOB))
    assert r.ok, r
    r = c.select("INBOX")
    assert "* 0 EXISTS" in r.lines(), r
    c.logout()
