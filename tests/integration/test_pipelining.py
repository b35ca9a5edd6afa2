"""PIPELINING (RFC 2920): commands sent in one write are answered in
order, one reply each, including failed RCPTs in the middle of a group,
whole transactions back to back, and the data of a message in the same
write as its commands."""

import re

from helpers import CLIENT_HELO, queue_id


def _replies(c, n):
    return [c.reply() for _ in range(n)]


def test_ehlo_mail_rcpt_data_in_one_write(mx):
    with mx.connect() as c:
        c.greeting()
        c.send(f"EHLO {CLIENT_HELO}\r\n"
               "MAIL FROM:<alice@example.org>\r\n"
               "RCPT TO:<bob@example.test>\r\n"
               "RCPT TO:<carol@example.test>\r\n"
               "DATA\r\n")
        ehlo, mail, rcpt1, rcpt2, data = _replies(c, 5)
        assert ehlo.code == 250 and "PIPELINING" in ehlo.lines, ehlo.raw
        assert mail.first.startswith("250 2.1.0"), mail.raw
        assert rcpt1.first.startswith("250 2.1.5"), rcpt1.raw
        assert rcpt2.first.startswith("250 2.1.5"), rcpt2.raw
        assert data.code == 354, data.raw
        c.send("Subject: pipelined\r\n\r\npipelined body\r\n.\r\n")
        qid = queue_id(c.reply())
        c.expect("QUIT", 221)
    for addr in ("bob@example.test", "carol@example.test"):
        [m] = mx.wait_messages(addr, 1)
        assert f"id {qid}".encode() in m
        assert m.endswith(b"\r\npipelined body\r\n")


def test_two_transactions_back_to_back_in_one_write(mx):
    with mx.connect() as c:
        c.start()
        c.send("MAIL FROM:<alice@example.org>\r\n"
               "RCPT TO:<bob@example.test>\r\n"
               "DATA\r\n"
               "Subject: first\r\n\r\nfirst body\r\n.\r\n"
               "MAIL FROM:<alice@example.org>\r\n"
               "RCPT TO:<carol@example.test>\r\n"
               "RCPT TO:<bob@example.test>\r\n"
               "DATA\r\n"
               "Subject: second\r\n\r\nsecond body\r\n.\r\n"
               "QUIT\r\n")
        rs = _replies(c, 9)
        codes = [r.code for r in rs]
        assert codes == [250, 250, 354, 250, 250, 250, 250, 354, 250], [r.raw for r in rs]
        id1, id2 = queue_id(rs[3]), queue_id(rs[8])
        assert id1 != id2
        assert c.reply().first.startswith("221 2.0.0")
        c.wait_closed(5)
    bob = mx.wait_messages("bob@example.test", 2)
    [carol] = mx.wait_messages("carol@example.test", 1)
    assert sorted(m.split(b"\r\n")[-2] for m in bob) == [b"first body", b"second body"]
    assert carol.endswith(b"\r\nsecond body\r\n")
    assert f"id {id2}".encode() in carol


def test_failed_commands_inside_a_group_keep_order(mx):
    with mx.connect() as c:
        c.start()
        c.send("MAIL FROM:<alice@example.org>\r\n"
               "RCPT TO:<bob@example.test>\r\n"
               "RCPT TO:<nosuchuser@example.test>\r\n"
               "RCPT TO:<someone@remote.example>\r\n"
               "RCPT TO:<bob@@bad>\r\n"
               "NOOP\r\n"
               "RCPT TO:<carol@example.test>\r\n"
               "DATA\r\n")
        rs = _replies(c, 8)
        firsts = [r.first for r in rs]
        assert firsts[0].startswith("250 2.1.0"), firsts
        assert firsts[1].startswith("250 2.1.5"), firsts
        assert firsts[2].startswith("550 5.1.1"), firsts
        assert firsts[3].startswith("550 5.7.1"), firsts
        assert firsts[4].startswith("501 5.1.3"), firsts
        assert firsts[5].startswith("250 2.0.0"), firsts
        assert firsts[6].startswith("250 2.1.5"), firsts
        assert rs[7].code == 354, firsts
        c.send("Subject: partial\r\n\r\nonly two\r\n.\r\n")
        queue_id(c.reply())
    mx.wait_messages("bob@example.test", 1)
    mx.wait_messages("carol@example.test", 1)


def test_rejected_group_does_not_derail_the_session(mx):
    """MAIL refused inside a group: the RCPTs and DATA that follow get 503,
    and RSET brings the session back."""
    with mx.connect() as c:
        c.start()
        c.send("MAIL FROM:<alice@@example.org>\r\n"
               "RCPT TO:<bob@example.test>\r\n"
               "DATA\r\n"
               "RSET\r\n"
               "MAIL FROM:<alice@example.org>\r\n"
               "RCPT TO:<bob@example.test>\r\n"
               "DATA\r\n")
        rs = _replies(c, 7)
        assert [r.code for r in rs] == [501, 503, 503, 250, 250, 250, 354], [r.raw for r in rs]
        c.send("Subject: recovered\r\n\r\nrecovered\r\n.\r\n")
        queue_id(c.reply())
    mx.wait_messages("bob@example.test", 1)


def test_many_transactions_in_one_write(mx):
    n = 20
    chunk = "".join("MAIL FROM:<alice@example.org>\r\n"
                    "RCPT TO:<bob@example.test>\r\n"
                    "DATA\r\n"
                    f"Subject: bulk {i}\r\n\r\nbulk body {i}\r\n.\r\n" for i in range(n))
    with mx.connect(timeout=30) as c:
        c.start()
        c.send(chunk + "QUIT\r\n")
        ids = []
        for i in range(n):
            mail, rcpt, data, done = _replies(c, 4)
            assert (mail.code, rcpt.code, data.code) == (250, 250, 354), (mail, rcpt, data)
            ids.append(queue_id(done))
        assert c.reply().code == 221
    assert len(set(ids)) == n
    msgs = mx.wait_messages("bob@example.test", n, timeout=20)
    bodies = sorted(int(re.search(rb"bulk body (\d+)", m).group(1)) for m in msgs)
    assert bodies == list(range(n))


def test_commands_split_across_small_writes(mx):
    with mx.connect() as c:
        c.start()
        script = ("MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
                  "Subject: trickle\r\n\r\ntrickled\r\n.\r\nNOOP\r\n").encode()
        for i in range(0, len(script), 3):
            c.send(script[i:i + 3])
        rs = _replies(c, 5)
        assert [r.code for r in rs] == [250, 250, 354, 250, 250], [r.raw for r in rs]
    mx.wait_messages("bob@example.test", 1)
