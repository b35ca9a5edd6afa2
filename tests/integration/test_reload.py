"""SIGHUP (posthorn(8) SIGNALS): the configuration and the users are reloaded without
dropping established sessions; new sessions see the new settings; a broken
configuration is refused with event=reload-failed and the old one stays."""

from helpers import SMTPConn, ehlo_keywords, queue_id, send_message


def _size(p):
    with p.connect() as c:
        c.greeting()
        kw = ehlo_keywords(c.ehlo())
        c.expect("QUIT", 221)
    return int(kw["SIZE"][0])


def test_sighup_changes_limit_and_keeps_sessions(posthorn):
    p = posthorn(limits={"message-size": "1M"})
    old = p.connect()
    assert int(ehlo_keywords(old.start())["SIZE"][0]) == 1048576
    old.expect("MAIL FROM:<alice@example.org>", 250)        # mid-transaction at the reload

    p.set_limits(message_size="2M")
    p.reload()
    assert p.running()
    assert _size(p) == 2097152

    # the session opened before the reload still completes its transaction
    old.expect("RCPT TO:<bob@example.test>", 250)
    old.expect("DATA", 354)
    old.send("Subject: across reload\r\n\r\nstarted before SIGHUP\r\n.\r\n")
    qid = queue_id(old.reply())
    old.expect("QUIT", 221)
    old.close()
    [data] = p.wait_messages("bob@example.test", 1)
    assert f"id {qid}".encode() in data

    # the new limit is enforced, not only advertised
    with p.connect() as c:
        c.start()
        c.expect("MAIL FROM:<alice@example.org> SIZE=1500000", 250, "250 2.1.0")
    with p.connect() as c:
        c.start()
        r = c.cmd("MAIL FROM:<alice@example.org> SIZE=3000000")
        assert r.first.startswith("552 5.3.4"), r.raw


def test_bad_config_on_sighup_keeps_old_settings(posthorn):
    p = posthorn(limits={"message-size": "1M"})
    good = p.write_config()
    p.write_config(good + "\nthis-is-not-a-directive yes\n")
    ev = p.reload(expect="reload-failed")
    assert ev["event"] == "reload-failed"
    assert p.running()
    assert _size(p) == 1048576
    with p.connect() as c:
        c.start()
        send_message(c, "alice@example.org", ["bob@example.test"], "Subject: x\r\n\r\nstill ok\r\n")
    p.wait_messages("bob@example.test", 1)

    # fixed again: the next SIGHUP works
    p.set_limits(message_size="3M")
    p.reload()
    assert _size(p) == 3 * 1048576


def test_bad_limit_value_on_sighup_is_refused(posthorn):
    p = posthorn(limits={"message-size": "1M"})
    p.set_limits(message_size="lots")
    p.reload(expect="reload-failed")
    assert _size(p) == 1048576


def test_sighup_reloads_users(posthorn):
    p = posthorn()
    with p.connect() as c:
        c.start()
        c.expect("MAIL FROM:<alice@example.org>", 250)
        r = c.cmd("RCPT TO:<erin@example.test>")
        assert r.first.startswith("550 5.1.1"), r.raw
    p.add_user("erin@example.test", "erin-Secret-5")
    p.reload()
    with p.connect() as c:
        c.start()
        send_message(c, "alice@example.org", ["erin@example.test"],
                     "Subject: welcome\r\n\r\nhello erin\r\n")
    p.wait_messages("erin@example.test", 1)

    # and a deleted user is gone after the next reload
    res = p.cli("user", "del", "erin@example.test")
    assert res.returncode == 0, res.stderr
    p.reload()
    with p.connect() as c:
        c.start()
        c.expect("MAIL FROM:<alice@example.org>", 250)
        r = c.cmd("RCPT TO:<erin@example.test>")
        assert r.first.startswith("550 5.1.1"), r.raw


def test_sighup_reloads_aliases(posthorn):
    p = posthorn(aliases="team@example.test: bob@example.test\n")
    with open(p.aliases_file, "w") as f:
        f.write("team@example.test: carol@example.test\n")
    p.reload()
    with p.connect() as c:
        c.start()
        send_message(c, "alice@example.org", ["team@example.test"], "Subject: t\r\n\r\nteam\r\n")
    p.wait_messages("carol@example.test", 1)
    assert p.messages("bob@example.test") == []


def test_several_reloads_in_a_row(posthorn):
    p = posthorn(limits={"message-size": "1M"})
    for n in range(2, 6):
        p.set_limits(message_size=f"{n}M")
        p.reload()
        assert _size(p) == n * 1048576
    assert len(p.events("reload")) == 4


def test_user_added_by_the_command_is_picked_up_without_sighup(posthorn):
    """The user database is reloaded when `posthorn user` changes
    it, not only on SIGHUP."""
    p = posthorn(servers={"mx": {"anonymous": True}})
    mark = p.log_mark()
    res = p.cli("user", "add", "erin@example.test", input="erin-Secret-5\n")
    assert res.returncode == 0, res.stderr
    p.wait_event("reload", since=mark, timeout=10)
    with SMTPConn(p.port()) as c:
        c.start()
        c.expect("MAIL FROM:<someone@example.net>", 250)
        assert c.cmd("RCPT TO:<erin@example.test>").code == 250
