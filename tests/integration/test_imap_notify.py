"""NOTIFY (RFC 5465) as a client sees it, over raw IMAP commands: NOTIFY
is advertised; NOTIFY SET STATUS gives the watched folder's STATUS at
once; a message SMTP delivers to INBOX while another folder is selected
gives an unsolicited "* STATUS INBOX (...)" with no command sent; a
message another session appends to the selected folder gives EXISTS and
MessageNew's FETCH without IDLE; another session's CREATE and SUBSCRIBE
give "* LIST"; an event not offered is NO [BADEVENT], bad syntax BAD,
filters that name more than 64 folders NO [LIMIT];
after NOTIFY NONE a delivery is quiet again.  One daemon for all of it.
And a client that does not read: its notifications are bounded and end
in NOTIFICATIONOVERFLOW.
"""

import re
import socket
import time

from helpers import HOST
from imaputil import (BOB, BOB_PW, IMAPConn, client_ctx, deliver, login_select, make_cert,
                      put_message, start_imap)


def wait_line(c, pattern, timeout=10):
    """Read unsolicited responses until one matches pattern; it and the
    lines before it."""
    seen = []
    while True:
        line = c.line(timeout=timeout)
        seen.append(line)
        if re.match(pattern, line):
            return line, seen
        assert len(seen) < 50, seen


def test_notify_status_exists_and_list_without_idle(posthorn, posthorn_bin, tmp_path):
    cert = make_cert(posthorn_bin, tmp_path / "cert")
    p = start_imap(posthorn, cert)
    ctx = client_ctx(cert)
    deliver(p, BOB, "Subject: first\n\nalready here\n")

    c = login_select(p, ctx, BOB, BOB_PW)
    assert "NOTIFY" in c.capabilities()
    c.ok("CREATE Lists")
    c.ok("SELECT Lists")

    r = c.ok("NOTIFY SET STATUS (SELECTED (MessageNew (UID FLAGS) MessageExpunge)) "
             "(INBOXES (MessageNew MessageExpunge)) (PERSONAL (MailboxName SubscriptionChange))")
    [status] = r.find(r"^\* STATUS INBOX ")
    assert re.search(r"MESSAGES 1 UIDNEXT 2 UIDVALIDITY \d+\)$", status), status

    # a delivery to INBOX, not selected: STATUS comes by itself
    deliver(p, BOB, "Subject: second\n\nnew one\n")
    line, _ = wait_line(c, r"^\* STATUS INBOX ")
    assert re.search(r"MESSAGES 2 UIDNEXT 3 ", line), line

    # another session appends to the selected folder: EXISTS and FETCH, no IDLE
    other = login_select(p, ctx, BOB, BOB_PW)
    msg = b"Subject: appended\r\n\r\nhello\r\n"
    other.send_cmd(f"APPEND Lists (\\Flagged) {{{len(msg)}+}}".encode() + b"\r\n" + msg)
    _, seen = wait_line(c, r"^\* 1 FETCH ")
    assert "* 1 EXISTS" in seen, seen
    assert re.match(r"^\* 1 FETCH \(UID 1 FLAGS \([^)]*\\Flagged", seen[-1]), seen

    # names and subscriptions changed by another session
    other.ok("CREATE Projects")
    line, _ = wait_line(c, r"^\* LIST ")
    assert line == '* LIST () "." Projects', line
    other.ok("SUBSCRIBE Projects")
    line, _ = wait_line(c, r"^\* LIST ")
    assert line == '* LIST (\\Subscribed) "." Projects', line

    r = c.cmd("NOTIFY SET (SELECTED (MessageNew AnnotationChange))")
    assert r.status == "NO" and "[BADEVENT" in r.tagged, r
    r = c.cmd("NOTIFY SET (EVERYWHERE (MessageNew))")
    assert r.status == "BAD", r

    # more than 64 folders to watch: refused, named
    for i in range(63):             # with Many itself, 64
        c.ok(f"CREATE Many.f{i}")
    r = c.cmd("NOTIFY SET (PERSONAL (MessageNew MessageExpunge))")
    assert r.status == "NO" and "[LIMIT]" in r.tagged, r
    c.ok("NOTIFY SET (SUBTREE Many (MessageNew MessageExpunge))")

    # NOTIFY NONE: a delivery is no longer announced
    c.ok("NOTIFY NONE")
    deliver(p, BOB, "Subject: third\n\nquiet\n")
    assert b"STATUS" not in c.quiet(1.0)
    other.logout()
    c.logout()


class SlowReader(IMAPConn):
    """A client that reads little: a 4 KiB receive buffer and a small
    segment size, so that the server's kernel holds little of what it
    sends (about 140 KB here) before its own output fills up."""

    def __init__(self, port, timeout=15.0):
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
        self.sock.connect((HOST, port))
        self.buf = b""
        self.closed = False
        self.ntag = 0


def test_notify_overflow_when_the_client_does_not_read(posthorn, posthorn_bin, tmp_path):
    """RFC 5465 §5.8: notifications for a client that does not read wait
    in a bounded queue, not in the connection's output; past the bound the
    client is told NOTIFICATIONOVERFLOW and hears no more STATUS until it
    sets NOTIFY again.  40 folders with long names, 40 new messages in
    each, in 40 rounds: about 440 KB of STATUS lines if every one were
    sent."""
    cert = make_cert(posthorn_bin, tmp_path / "cert")
    p = start_imap(posthorn, cert)
    ctx = client_ctx(cert)
    names = [f"Ov.n{i:02d}" + "x" * 200 for i in range(40)]
    setup = login_select(p, ctx, BOB, BOB_PW)
    for name in names:
        setup.ok(f"CREATE {name}")
    setup.logout()

    c = SlowReader(p.imaps_port).wrap(ctx)
    p.conns.append(c)
    c.greeting()
    assert c.login(BOB, BOB_PW).ok
    c.ok("NOTIFY SET (SUBTREE Ov (MessageNew MessageExpunge))")
    mark = p.log_mark()
    written = 0
    for _ in range(40):                 # the client reads nothing meanwhile
        for name in names:
            put_message(p, BOB, "Subject: many\n\nbody\n", folder=name)
            written += 1
        time.sleep(0.03)
    time.sleep(0.5)
    data = c.quiet(2.0)                 # now it reads all that waited
    assert data.endswith(b"\r\n"), data[-200:]
    lines = data.split(b"\r\n")[:-1]
    over = [i for i, line in enumerate(lines) if line.startswith(b"* OK [NOTIFICATIONOVERFLOW]")]
    assert len(over) == 1, (len(lines), lines[-3:])
    statuses = [line for line in lines if line.startswith(b"* STATUS ")]
    assert len(statuses) + 1 == len(lines), [x for x in lines if not x.startswith(b"* STATUS")]
    assert over[0] == len(lines) - 1, lines[-3:]     # nothing after it
    assert 0 < len(statuses) < written, len(statuses)
    assert len(data) < 400_000, len(data)
    print(f"{written} messages, {len(statuses)} STATUS lines, {len(data)} octets read")
    assert p.events("notify-overflow", since=mark), p.log[mark:][-2000:]
    # quiet now, until NOTIFY is set again
    put_message(p, BOB, "Subject: one more\n\nbody\n", folder=names[0])
    assert b"* STATUS" not in c.quiet(0.5)
    c.ok("NOTIFY SET (SUBTREE Ov (MessageNew MessageExpunge))")
    put_message(p, BOB, "Subject: and again\n\nbody\n", folder=names[1])
    line, _ = wait_line(c, r"^\* STATUS Ov\.n01x")
    assert re.search(r"MESSAGES 41 ", line), line
