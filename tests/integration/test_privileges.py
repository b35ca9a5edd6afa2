"""Privileges (posthorn.conf(5) `run-as`): started as root with `run-as nobody`, the
daemon binds its listeners (even a port below 1024), then drops to nobody —
uid, gid and supplementary groups, all four id fields — before serving;
mail is still received and delivered.  Started as root without `run-as`
it serves but says it runs with full privileges.

ASan's leak checker cannot run after a uid change, so these daemons run
with ASAN_OPTIONS=detect_leaks=0 (only here)."""

import os
import pwd
import random
import socket

import pytest

from helpers import proc_status, queue_id, run, sanitizer_report, send_message, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")

NOBODY = pwd.getpwnam("nobody")


def _free_privileged_port():
    """A free port below 1024 (bounded number of tries)."""
    rng = random.Random()
    for _ in range(100):
        port = rng.randrange(600, 1024)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free port below 1024")


def _ids(line):
    return [int(x) for x in line.split()]


def test_run_as_nobody_drops_privileges_and_serves(posthorn):
    root = posthorn.world_dir()
    port = _free_privileged_port()
    p = posthorn(root=root, run_as="nobody", servers={"mx": {"port": port}},
                 asan_options={"detect_leaks": "0"})
    st = proc_status(p.pid)
    assert _ids(st["Uid"]) == [NOBODY.pw_uid] * 4, st["Uid"]
    assert _ids(st["Gid"]) == [NOBODY.pw_gid] * 4, st["Gid"]
    assert set(_ids(st.get("Groups", ""))) <= {NOBODY.pw_gid}, st["Groups"]
    assert st["CapEff"].strip("0") == "", f"effective capabilities left: {st['CapEff']}"

    # the listener bound before the drop (port below 1024) still serves
    with p.connect() as c:
        g = c.greeting()
        assert g.first.startswith("220 mx.example.test"), g.raw
        c.ehlo()
        qid = queue_id(send_message(c, "alice@example.org", ["bob@example.test"],
                                    "Subject: as nobody\r\n\r\ndelivered by nobody\r\n"))
    [data] = p.wait_messages("bob@example.test", 1)
    assert f"id {qid}".encode() in data
    # written by the unprivileged user
    md = p.maildir("bob@example.test")
    new = os.path.join(md, "new")
    for path in [md, new] + [os.path.join(new, n) for n in os.listdir(new)]:
        assert os.stat(path).st_uid == NOBODY.pw_uid, path
    # the spool's journal and its pool of recycled files too: the delivered
    # message's file went to free/, to be written over by the next one
    spool_free = os.path.join(p.spool, "free")
    wait_until(lambda: os.listdir(spool_free), 10, what="the delivered file in free/")
    for path in [os.path.join(p.spool, "journal"), spool_free] + \
            [os.path.join(spool_free, n) for n in os.listdir(spool_free)]:
        assert os.stat(path).st_uid == NOBODY.pw_uid, path
    # a new connection after the first one is still fine, and SIGHUP works
    p.reload()
    with p.connect() as c:
        c.start()
        c.expect("NOOP", 250)
    # still nobody after the reload
    assert _ids(proc_status(p.pid)["Uid"]) == [NOBODY.pw_uid] * 4


def test_run_as_nobody_survives_restart_with_queued_mail(posthorn):
    """The spool written as nobody is read again by the next start."""
    root = posthorn.world_dir()
    p = posthorn(root=root, run_as="nobody", asan_options={"detect_leaks": "0"})
    blocker = p.maildir("bob@example.test")
    os.makedirs(os.path.dirname(blocker), exist_ok=True)
    # the domain folder must stay writable for nobody once unblocked
    os.chown(os.path.dirname(blocker), NOBODY.pw_uid, NOBODY.pw_gid)
    with open(blocker, "w") as f:
        f.write("blocks delivery\n")
    with p.connect() as c:
        c.start()
        qid = queue_id(send_message(c, "alice@example.org", ["bob@example.test"],
                                    "Subject: queued\r\n\r\nqueued as nobody\r\n"))
    p.kill9()
    os.unlink(blocker)
    p.start()
    assert _ids(proc_status(p.pid)["Uid"]) == [NOBODY.pw_uid] * 4
    [data] = p.wait_messages("bob@example.test", 1, timeout=15)
    assert f"id {qid}".encode() in data


def test_root_without_run_as_warns(posthorn):
    p = posthorn()
    assert "full privileges" in p.log, p.log
    res = p.cli("check")
    assert res.returncode == 0, res.stderr
    assert "privileges" in (res.stdout + res.stderr).lower(), res.stdout


def test_unknown_run_as_user_is_an_error(posthorn):
    p = posthorn(start=False, users={}, run_as="no-such-user-posthorn")
    res = run([p.bin, "serve", "-c", p.conf], env=p.env, timeout=20)
    assert sanitizer_report(res.stderr) is None, res.stderr
    assert res.returncode == 1, f"status {res.returncode}: {res.stderr}"
    assert "no-such-user-posthorn" in res.stderr
