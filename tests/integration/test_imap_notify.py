"""NOTIFY (RFC 5465) as a client sees it, over raw IMAP commands: NOTIFY
is advertised; NOTIFY SET STATUS gives the watched folder's STATUS at
once; a message SMTP delivers to INBOX while another folder is selected
gives an unsolicited "* STATUS INBOX (...)" with no command sent; a
message another session appends to the selected folder gives EXISTS and
MessageNew's FETCH without IDLE; another session's CREATE and SUBSCRIBE
give "* LIST"; an event not offered is NO [BADEVENT], bad syntax BAD,
filters that name more than 64 folders NO [LIMIT];
after NOTIFY NONE a delivery is quiet again.  One daemon for all of it.
"""

import re

from imaputil import BOB, BOB_PW, client_ctx, deliver, login_select, make_cert, start_imap


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
