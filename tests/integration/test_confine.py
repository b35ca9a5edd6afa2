"""Confinement (docs/security.md): after start-up the daemon has
PR_SET_NO_NEW_PRIVS and a seccomp filter in every thread, and still does
everything a running mail server does (a SIGHUP reload with a new
listener, a renewed certificate, a new user; mail in and out).  Secret
files that group or others may read are refused at start-up and at
reload, naming the file.

The filter's verdicts themselves (execve, ptrace, mount... kill; other
calls outside the list fail with EPERM) are checked in
tests/unit/test_confine.c; here every daemon log is also searched for
event=seccomp-denied by the fixtures (helpers.SANITIZER_MARKERS), so the
whole integration suite runs as a test of the allow-list."""

import os
import shutil

from conftest import HOSTNAME, run_cli
from helpers import free_port, proc_status, queue_id, send_message
from tlsutil import CertPair, TLSConn, client_context, tls_extra


def cert_pair(posthorn_bin, folder, hostname=HOSTNAME):
    res = run_cli(posthorn_bin, ["cert", "new", "--hostname", hostname, "--out", str(folder)])
    assert res.returncode == 0, res.stderr
    return CertPair(hostname, folder)


def statuses(pid):
    """/proc status of every thread of pid."""
    tasks = os.listdir(f"/proc/{pid}/task")
    return {t: proc_status(f"{pid}/task/{t}") for t in tasks}


def test_daemon_is_confined_in_every_thread(mx):
    st = proc_status(mx.pid)
    assert st["NoNewPrivs"] == "1", st
    assert st["Seccomp"] == "2", st            # 2: filter mode
    threads = statuses(mx.pid)
    assert len(threads) >= 2, threads          # the loop and the delivery worker at least
    for tid, s in threads.items():
        assert s["Seccomp"] == "2" and s["NoNewPrivs"] == "1", (tid, s)
    log = mx.log
    # confined after binding and before the first client
    assert log.index("event=listening") < log.index("event=confined") < log.index("event=ready")


def test_confined_daemon_reloads_listener_certificate_and_users(posthorn, posthorn_bin, tmp_path):
    old = cert_pair(posthorn_bin, tmp_path / "old")
    new = cert_pair(posthorn_bin, tmp_path / "new")
    live = tmp_path / "live"
    live.mkdir()
    crt, key = str(live / "mx.crt"), str(live / "mx.key")
    shutil.copy(old.crt, crt)
    shutil.copy(old.key, key)
    os.chmod(key, 0o600)
    p = posthorn(servers={"mx": {"extra": tls_extra([(crt, key)])}})

    def served_cert():
        with TLSConn(p.port()) as c:
            c.start()
            c.starttls(client_context())
            return c.peer_der()
    assert served_cert() == old.der()
    # renewed certificate, a second listener, a new user: one SIGHUP
    shutil.copy(new.crt, crt)
    shutil.copy(new.key, key)
    os.chmod(key, 0o600)
    port2 = free_port()
    p.servers["second"] = {}
    p.ports["second"] = port2
    p.write_config()
    p.reload()
    assert served_cert() == new.der()
    with p.connect("second") as c:
        c.start()
        send_message(c, "alice@example.org", ["bob@example.test"], "Subject: 2nd\r\n\r\nx\r\n")
    p.wait_messages("bob@example.test", 1)
    mark = p.log_mark()
    p.add_user("erin@example.test", "erin-Secret-5")   # picked up without SIGHUP
    p.wait_event("reload", since=mark, timeout=15)
    with p.connect() as c:
        c.start()
        send_message(c, "alice@example.org", ["erin@example.test"], "Subject: new\r\n\r\ny\r\n")
    p.wait_messages("erin@example.test", 1)
    assert proc_status(p.pid)["Seccomp"] == "2"


def test_confined_after_dropping_privileges(posthorn):
    root = posthorn.world_dir()
    p = posthorn(root=root, run_as="nobody", asan_options={"detect_leaks": "0"})
    st = proc_status(p.pid)
    assert st["Seccomp"] == "2" and st["NoNewPrivs"] == "1"
    assert p.log.index("event=privileges") < p.log.index("event=confined")
    with p.connect() as c:
        c.start()
        qid = queue_id(send_message(c, "alice@example.org", ["bob@example.test"],
                                    "Subject: nobody\r\n\r\nconfined\r\n"))
    [data] = p.wait_messages("bob@example.test", 1)
    assert f"id {qid}".encode() in data


# -- secret files ------------------------------------------------------------------------------

def serve_once(p):
    """`posthorn serve` expected to refuse: its exit status and output."""
    res = run_cli(p.bin, ["serve"], conf=p.conf, env=p.env, timeout=60)
    return res.returncode, res.stdout + res.stderr


def test_private_key_readable_by_others_is_refused(posthorn, posthorn_bin, tmp_path):
    pair = cert_pair(posthorn_bin, tmp_path / "c")
    os.chmod(pair.key, 0o640)
    p = posthorn(start=False, servers={"mx": {"extra": tls_extra([pair])}})
    rc, out = serve_once(p)
    assert rc == 1, out
    assert pair.key in out and "group or others" in out, out
    # at reload: the running configuration stays
    os.chmod(pair.key, 0o600)
    p.start()
    os.chmod(pair.key, 0o644)
    ev = p.reload(expect="reload-failed")
    assert ev
    assert pair.key in p.log and "group or others" in p.log
    with TLSConn(p.port()) as c:          # still serving TLS with the old context
        c.start()
        c.starttls(client_context())
        c.ehlo()


def test_user_database_readable_by_others_is_refused(posthorn):
    p = posthorn(start=False)
    os.chmod(p.users_file, 0o644)
    rc, out = serve_once(p)
    assert rc == 1, out
    assert p.users_file in out and "group or others" in out, out
    os.chmod(p.users_file, 0o600)
    p.start()
    os.chmod(p.users_file, 0o604)
    p.reload(expect="reload-failed")
    assert p.log.count(p.users_file) >= 1 and "group or others" in p.log
    with p.connect() as c:
        c.start()


def test_smarthost_password_file_readable_by_others_is_refused(posthorn, tmp_path):
    secret = tmp_path / "isp.secret"
    secret.write_text("isp-Secret-9\n")
    os.chmod(secret, 0o644)
    outbound = ("outbound {\n    smarthost 127.0.0.2:2525\n"
                f"    smarthost-auth isp-user {secret}\n}}")
    p = posthorn(start=False, global_extra=outbound)
    res = p.cli("check")
    assert res.returncode == 1, res.stdout + res.stderr
    line = next(i for i, text in enumerate(open(p.conf).read().splitlines(), 1)
                if "smarthost-auth" in text)
    assert f"{p.conf}:{line}:" in res.stderr and str(secret) in res.stderr, res.stderr
    assert "group or others" in res.stderr and "isp-Secret-9" not in res.stderr
    rc, out = serve_once(p)
    assert rc == 1 and str(secret) in out, out
    os.chmod(secret, 0o600)
    p.start()
    os.chmod(secret, 0o640)
    p.reload(expect="reload-failed")
    assert str(secret) in p.log
