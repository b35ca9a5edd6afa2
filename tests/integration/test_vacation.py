"""Out-of-office replies (posthorn(8) `user vacation`, RFC 3834, RFC 5230).

A user's setting is written with the real command; mail to the user
arrives over SMTP; the reply is looked for where a user would see it: in
the local sender's Maildir, or at a small SMTP sink standing in for a
remote sender's MX (test_outbound's, found through the tests' dnsmasq).
Every wait is bounded.
"""

import os

import pytest

from helpers import SMTPConn, send_message, split_message, wait_until
from test_outbound import Sink, external_dns, outbound_block, free_port

BOB = "bob@example.test"
CAROL = "carol@example.test"
REMOTE = "someone@external.test"


def vacation(p, *args):
    return p.cli("user", "vacation", *args)


def set_away(p, tmp_path, *extra, user=BOB, text="I am away until Monday.\nRegards, Bob\n"):
    msg = tmp_path / "away.txt"
    msg.write_text(text)
    res = vacation(p, user, "on", "--message-file", str(msg), *extra)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def mail(p, sender, to=BOB, headers="", subject="Lunch?", msgid="<m1@example.net>", rcpt=None):
    text = (f"From: <{sender or 'mailer-daemon@example.net'}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
            f"Message-ID: {msgid}\r\n{headers}\r\nhello\r\n")
    with SMTPConn(p.port()) as c:
        c.start()
        send_message(c, sender, [rcpt or BOB], text)
        c.cmd("QUIT")


def fields(data):
    head, _ = split_message(data)
    def text(x):
        return x.decode() if isinstance(x, bytes) else x
    return {text(k).lower(): text(v) for k, v in head}


def autoreply_events(p, **match):
    return [e for e in p.events("autoreply") if all(e.get(k) == v for k, v in match.items())]


def wait_decision(p, n=1):
    """The n-th autoreply decision for bob (its log line)."""
    wait_until(lambda: len(autoreply_events(p, user=BOB)) >= n, 10, what="autoreply decision")
    return autoreply_events(p, user=BOB)[n - 1]


# -- the reply ---------------------------------------------------------------------

def test_reply_reaches_a_local_sender_with_rfc3834_headers(posthorn, tmp_path):
    p = posthorn()
    set_away(p, tmp_path, "--subject", "Away this week")
    mail(p, CAROL, headers="References: <m0@example.net>\r\n")
    wait_until(lambda: len(p.messages(CAROL)) == 1, 10, what="the reply in carol's Maildir")
    data = p.messages(CAROL)[0]
    f = fields(data)
    assert f["return-path"] == "<>", f          # null envelope sender
    assert f["auto-submitted"] == "auto-replied"
    assert f["from"] == f"<{BOB}>" and f["to"] == f"<{CAROL}>"
    assert f["subject"] == "Away this week"
    assert f["in-reply-to"] == "<m1@example.net>"
    assert f["references"].split() == ["<m0@example.net>", "<m1@example.net>"]
    assert f["message-id"].endswith("@example.test>")
    assert b"I am away until Monday.\r\nRegards, Bob\r\n" in data
    # bob has his mail too
    assert len(p.messages(BOB)) == 1
    assert wait_decision(p)["result"] == "reply"


def test_second_message_within_days_gets_no_reply(posthorn, tmp_path):
    p = posthorn()
    set_away(p, tmp_path)
    mail(p, CAROL)
    wait_until(lambda: len(p.messages(CAROL)) == 1, 10, what="the first reply")
    mail(p, CAROL, msgid="<m2@example.net>")
    ev = wait_decision(p, 2)
    assert ev["result"] == "none" and "already answered" in ev["_line"], ev["_line"]
    assert len(p.messages(BOB)) == 2 and len(p.messages(CAROL)) == 1
    # without --subject: "Auto: " and the original's
    f = fields(p.messages(CAROL)[0])
    assert f["subject"] == "Auto: Lunch?"
    # a new setting answers everybody again
    set_away(p, tmp_path, text="Back on Tuesday.\n")
    mail(p, CAROL, msgid="<m3@example.net>")
    wait_until(lambda: len(p.messages(CAROL)) == 2, 10, what="the reply after a new setting")


NEVER = [
    ("list-id", CAROL, BOB, "List-Id: <team.example.test>\r\n", "List-"),
    ("list-unsubscribe", CAROL, BOB, "List-Unsubscribe: <mailto:x@example.test>\r\n", "List-"),
    ("precedence-bulk", CAROL, BOB, "Precedence: bulk\r\n", "Precedence"),
    ("precedence-junk", CAROL, BOB, "Precedence: junk\r\n", "Precedence"),
    ("auto-submitted", CAROL, BOB, "Auto-Submitted: auto-generated\r\n", "Auto-Submitted"),
    ("null-sender", "", BOB, "", "null sender"),
    ("mailer-daemon", "MAILER-DAEMON@example.test", BOB, "", "MAILER-DAEMON"),
    ("owner", "owner-team@example.test", BOB, "", "owner-"),
    ("request", "team-request@example.test", BOB, "", "-request"),
    ("not-in-to", CAROL, "team@example.test", "", "not in To or Cc"),
]


@pytest.mark.parametrize("sender,to,headers,why", [n[1:] for n in NEVER], ids=[n[0] for n in NEVER])
def test_never_replies(posthorn, tmp_path, sender, to, headers, why):
    p = posthorn()
    set_away(p, tmp_path)
    mail(p, sender, to=to, headers=headers)
    ev = wait_decision(p)
    assert ev["result"] == "none" and why in ev["_line"], ev["_line"]
    assert not p.events("autoreply-queued"), p.log
    assert len(p.messages(BOB)) == 1


def test_auto_submitted_no_and_cc_get_a_reply(posthorn, tmp_path):
    p = posthorn()
    set_away(p, tmp_path)
    mail(p, CAROL, to="team@example.test", headers=f"Cc: Bob <{BOB}>\r\nAuto-Submitted: no\r\n")
    wait_until(lambda: len(p.messages(CAROL)) == 1, 10, what="the reply")


def test_until_in_the_past_is_off(posthorn, tmp_path):
    p = posthorn()
    res = set_away(p, tmp_path, "--until", "2020-01-31")
    assert "is past" in res.stderr, res.stderr
    mail(p, CAROL)
    wait_until(lambda: len(p.messages(BOB)) == 1, 10, what="delivery to bob")
    p.wait_event("delivered", to=BOB)
    assert not autoreply_events(p), p.log
    assert "off" in vacation(p, BOB).stdout.splitlines()[0]


def test_off_stops_replies(posthorn, tmp_path):
    p = posthorn()
    set_away(p, tmp_path)
    assert vacation(p, BOB, "off").returncode == 0
    mail(p, CAROL)
    p.wait_event("delivered", to=BOB)
    assert not autoreply_events(p), p.log
    shown = vacation(p, BOB).stdout
    assert shown.startswith(f"{BOB}: out-of-office reply off"), shown
    assert "I am away until Monday." in shown


def test_reply_to_a_remote_sender_goes_out_through_its_mx(posthorn, dnsmasq, tmp_path):
    port = free_port("127.0.0.2")
    sink = Sink("127.0.0.2", port)
    try:
        d = external_dns(dnsmasq)
        p = posthorn(dns=d.address, global_extra=outbound_block(port))
        set_away(p, tmp_path, "--subject", "Abwesend – zurück am Montag")
        mail(p, REMOTE)
        got = sink.wait_delivered(1)[0]
        assert got["sender"] == "" and got["rcpts"] == [REMOTE], got
        f = fields(got["data"])
        assert f["auto-submitted"] == "auto-replied" and f["in-reply-to"] == "<m1@example.net>"
        assert f["subject"].startswith("=?utf-8?B?"), f["subject"]
    finally:
        sink.stop()


# -- the command --------------------------------------------------------------------

@pytest.mark.parametrize("args,code,message", [
    (["nobody@example.test", "on", "--message-file", "/dev/null"], 1, "no user nobody@example.test"),
    ([BOB, "on"], 1, "no message yet: give --message-file FILE"),
    ([BOB, "on", "--message-file", "/nonexistent/away.txt"], 1, "cannot read the message file"),
    ([BOB, "on", "--until", "2026-02-30", "--message-file", "/dev/null"], 1, '--until "2026-02-30"'),
    ([BOB, "on", "--days", "0"], 1, '--days "0"'),
    ([BOB, "maybe"], 2, '"maybe" is neither on nor off'),
    ([BOB, "on", "--colour", "red"], 2, 'unknown option "--colour"'),
    ([BOB, "off", "--days", "3"], 2, 'the options go with "on"'),
    ([BOB, "on", "--subject"], 2, "--subject needs a value"),
    ([], 2, "missing ADDRESS"),
])
def test_command_errors_are_named(posthorn, args, code, message):
    p = posthorn(start=False)
    res = vacation(p, *args)
    assert res.returncode == code, res.stdout + res.stderr
    assert message in res.stderr, res.stderr


def test_setting_file_is_documented_format(posthorn, tmp_path):
    p = posthorn(start=False)
    set_away(p, tmp_path, "--subject", "Away", "--until", "2099-12-31", "--days", "3")
    path = os.path.join(p.maildir(BOB), "posthorn-vacation")
    with open(path) as f:
        text = f.read()
    assert text == ("posthorn-vacation 1\nstate on\ndays 3\nuntil 2099-12-31\nsubject Away\n\n"
                    "I am away until Monday.\nRegards, Bob\n"), text
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"


def test_local_sender_that_is_no_user_gets_no_reply(posthorn, tmp_path):
    """A local sender address nobody has: the reply is dropped, never sent to
    postmaster as a bounce would be."""
    p = posthorn()
    set_away(p, tmp_path)
    mail(p, "ghost@example.test")
    assert wait_decision(p)["result"] == "reply"
    ev = p.wait_event("autoreply-dropped")
    assert "no such local recipient" in ev["_line"], ev["_line"]
    assert not p.events("autoreply-queued"), p.log
