"""Fixtures for the posthorn integration tests.

`posthorn(...)` is a factory: it writes a configuration into the test's
temporary folder (global directives plus one or more `server` blocks),
gives it the standard test users, starts `posthorn serve -c CONF` in the
foreground with stderr captured to a file, and waits for `event=ready`.
The returned object knows the ports, the log, the PID, the Maildirs, and
can send SIGHUP, restart, SIGTERM or kill -9 the daemon.

At teardown every daemon still running gets SIGTERM (SIGKILL after a bound)
and must exit with status 0; every run's stderr is searched for
AddressSanitizer/UBSan reports, and a daemon that died on its own fails the
test.  Only processes started here are signalled, always by PID.

The binary is $POSTHORN_BIN (make integration sets it to the ASan build).
No test resolves names through the machine's resolver: everything listens
and connects on 127.0.0.0/8, and every daemon's `dns` is a dnsmasq of the
tests' own (the session-wide `default_dns`, or one a test starts with its
records).

The suite runs in parallel (`-n N --dist loadgroup`, pytest-xdist): each
worker process takes ports only from a block of its own (helpers.free_port),
starts its own session-wide dnsmasq on such a port, and writes under its own
basetemp.  A test marked `exclusive` (wall-clock bounds around CPU-bound
work) runs with no other test of the run beside it: see `_exclusive` below.
"""

import fcntl
import os
import re
import shutil
import signal
import smtplib
import subprocess
import tempfile
import time

import pytest

from dnsutil import Dnsmasq
from helpers import (CLIENT_HELO, HOST, SMTPConn, free_port, maildir_files, run,
                     sanitizer_report, wait_until)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

LOCAL_DOMAINS = ("example.test", "example.org")
HOSTNAME = "mx.example.test"

# The standard users every test daemon knows (address -> password).
DEFAULT_USERS = {
    "bob@example.test": "bob-Secret-1",
    "carol@example.test": "carol-Secret-2",
    "dave@example.test": "dave-Secret-3",
    "alice@example.org": "alice-Secret-4",
}

READY_TIMEOUT = 20.0   # ASan builds start slower
STOP_TIMEOUT = 15.0    # SIGTERM -> exit, including LeakSanitizer's scan


def _binary():
    b = os.environ.get("POSTHORN_BIN") or os.path.join(REPO, "build", "asan", "posthorn")
    return os.path.abspath(b)


# -- parallel runs: tests that must run alone --------------------------------------
#
# Under pytest-xdist every test holds a readers-writer lock shared by the
# run's workers, from its first function-scoped fixture's setup to its last
# one's teardown (a daemon's start and its LeakSanitizer scan at exit are
# inside); a test marked `exclusive` holds it alone, so no other test of the
# run runs beside it.  A serial run takes no lock.

EXCLUSIVE_GROUP = "exclusive"


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "exclusive: the test times CPU-bound work against wall-clock bounds (the "
        "PBKDF2 password checks, the throttle's sub-second delays); under "
        "pytest-xdist no other test of the same run runs while it does")


def _is_exclusive(item):
    return item is not None and item.get_closest_marker("exclusive") is not None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session, config, items):
    """Under xdist the exclusive tests go first, as one xdist_group: one
    worker runs them back to back at the start, keeping the lock from the
    first to the last, instead of waiting once per exclusive test for the
    other workers' running tests to end.  (tryfirst: xdist reads the
    xdist_group marks in its own hook, after this one.)  Every worker
    orders the same way; a serial run keeps the files' order."""
    if not hasattr(config, "workerinput"):
        return
    alone = [it for it in items if _is_exclusive(it)]
    for it in alone:
        it.add_marker(pytest.mark.xdist_group(EXCLUSIVE_GROUP))
    items[:] = alone + [it for it in items if not _is_exclusive(it)]


_next_item = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _next_item["item"] = nextitem
    yield


class _RunLock:
    """flock(2) on two files of the run's basetemp.  Whoever takes `lock`
    first takes `gate`, and an exclusive test waits for the running ones
    while holding `gate`: no test starts meanwhile, so it does not starve."""

    def __init__(self, folder):
        self.gate = open(os.path.join(folder, "exclusive.gate"), "a")
        self.lock = open(os.path.join(folder, "exclusive.lock"), "a")
        self.held = None            # None, "shared" or "alone"

    def acquire(self, alone):
        want = "alone" if alone else "shared"
        if self.held == want:
            return
        if self.held is not None:
            self.release()
        fcntl.flock(self.gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(self.lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            fcntl.flock(self.gate, fcntl.LOCK_UN)
        self.held = want

    def release(self):
        if self.held is not None:
            fcntl.flock(self.lock, fcntl.LOCK_UN)
            self.held = None

    def close(self):
        self.release()
        self.gate.close()
        self.lock.close()


@pytest.fixture(scope="session")
def _run_lock(request, tmp_path_factory):
    if not hasattr(request.config, "workerinput"):
        yield None
        return
    # a worker's basetemp is <the run's basetemp>/popen-gwN
    lk = _RunLock(tmp_path_factory.getbasetemp().parent)
    yield lk
    lk.close()


@pytest.fixture(autouse=True)
def _exclusive(request, _run_lock):
    if _run_lock is None:
        yield
        return
    alone = _is_exclusive(request.node)
    _run_lock.acquire(alone)
    try:
        yield
    finally:
        # an exclusive test followed by another keeps the lock for it
        if not (alone and _is_exclusive(_next_item.get("item"))):
            _run_lock.release()


@pytest.fixture(scope="session")
def posthorn_bin():
    b = _binary()
    if not (os.path.isfile(b) and os.access(b, os.X_OK)):
        pytest.fail(f"posthorn binary not found at {b}; set POSTHORN_BIN or run `make integration`")
    return b


def daemon_env(asan_options=None):
    """The environment for every posthorn process the tests start."""
    env = dict(os.environ)
    env.pop("POSTHORN_CONF", None)
    opts = {}
    for part in env.get("ASAN_OPTIONS", "").split(":"):
        if "=" in part:
            k, v = part.split("=", 1)
            opts[k] = v
    opts.setdefault("abort_on_error", "0")
    opts.update(asan_options or {})
    if "quarantine_size_mb" in (asan_options or {}):
        # a test that bounds the quarantine measures memory: each thread's
        # own quarantine (1 MiB by default; the password workers free
        # OpenSSL's memory there) goes too
        opts.setdefault("thread_local_quarantine_size_kb", "16")
    env["ASAN_OPTIONS"] = ":".join(f"{k}={v}" for k, v in opts.items())
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    return env


def run_cli(bin_path, args, conf=None, input=None, env=None, timeout=60):
    """Run a short posthorn command; a sanitizer report fails the test."""
    argv = [bin_path] + list(args)
    if conf is not None:
        argv += ["-c", str(conf)]
    res = run(argv, input=input, env=env or daemon_env(), timeout=timeout)
    report = sanitizer_report(res.stderr)
    assert report is None, f"sanitizer report from {argv}:\n{report}"
    return res


def server_block(name, port, hostname=HOSTNAME, anonymous=True, limits=None, extra=""):
    """Text of one SMTP `server` block."""
    lines = [f"server {name} {{", f"    listen {HOST}:{port}", f"    hostname {hostname}"]
    if anonymous is not None:
        lines += ["    auth {", f"        anonymous {'yes' if anonymous else 'no'}", "    }"]
    if limits:
        lines += ["    limits {"] + [f"        {k} {v}" for k, v in limits.items()] + ["    }"]
    for line in (extra or "").splitlines():
        lines.append("    " + line)
    lines.append("}")
    return "\n".join(lines) + "\n"


class Run:
    """One `posthorn serve` process."""

    def __init__(self, proc, log_path):
        self.proc = proc
        self.log_path = log_path
        self.stopped_by = None      # "term", "kill" or None
        self.rc = None

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""


class Posthorn:
    """A test daemon: its folder, configuration, users and current process."""

    def __init__(self, bin_path, root, users_template, *, servers=None, limits=None,
                 anonymous=True, users=None, aliases=None, run_as=None, dns=None,
                 global_extra="", asan_options=None):
        self.bin = bin_path
        self.root = str(root)
        os.makedirs(self.root, exist_ok=True)
        self.conf = os.path.join(self.root, "posthorn.conf")
        self.spool = os.path.join(self.root, "spool")
        self.mailboxes = os.path.join(self.root, "mail")
        self.users_file = os.path.join(self.root, "users")
        self.aliases_file = os.path.join(self.root, "aliases") if aliases is not None else None
        self.run_as = run_as
        self.dns = dns                   # e.g. "127.0.0.1:5353" for a fake resolver later
        self.global_extra = global_extra
        self.env = daemon_env(asan_options)
        if servers is None:
            servers = {"mx": {"limits": limits, "anonymous": anonymous}}
        self.servers = {}
        self.ports = {}
        for name, spec in servers.items():
            spec = dict(spec or {})
            self.ports[name] = spec.pop("port", None) or free_port()
            self.servers[name] = spec
        self.runs = []
        self.conns = []
        os.makedirs(self.mailboxes, exist_ok=True)
        if aliases is not None:
            with open(self.aliases_file, "w") as f:
                f.write(aliases)
        self.write_config()
        if users is None and not run_as:
            shutil.copy2(users_template, self.users_file)
            os.chmod(self.users_file, 0o600)
            self.passwords = dict(DEFAULT_USERS)
        else:
            # with run-as, `user add` itself gives the file to that user
            self.passwords = dict(DEFAULT_USERS if users is None else users)
            for addr, pw in self.passwords.items():
                self.add_user(addr, pw)

    # -- configuration --------------------------------------------------
    def config_text(self, **overrides):
        """The configuration; overrides replace per-server specs by name."""
        out = ["# written by tests/integration/conftest.py",
               f"hostname {HOSTNAME}",
               "domains " + " ".join(LOCAL_DOMAINS),
               f"spool {self.spool}",
               f"mailboxes {self.mailboxes}",
               f"users {self.users_file}"]
        if self.aliases_file:
            out.append(f"aliases {self.aliases_file}")
        if self.dns:
            out.append(f"dns {self.dns}")
        if self.run_as:
            out.append(f"run-as {self.run_as}")
        if self.global_extra:
            out.append(self.global_extra)
        out.append("")
        for name, spec in self.servers.items():
            spec = dict(spec, **overrides.get(name, {}))
            out.append(server_block(name, self.ports[name], **spec))
        return "\n".join(out)

    def write_config(self, text=None, **overrides):
        text = self.config_text(**overrides) if text is None else text
        tmp = self.conf + ".new"
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.conf)
        return text

    def set_limits(self, name="mx", **limits):
        """Change one server's limits (keys with '_' become '-') in the file."""
        spec = self.servers[name]
        merged = dict(spec.get("limits") or {})
        merged.update({k.replace("_", "-"): v for k, v in limits.items()})
        spec["limits"] = merged
        self.write_config()

    # -- command line -----------------------------------------------------
    def cli(self, *args, input=None):
        return run_cli(self.bin, args, conf=self.conf, input=input, env=self.env)

    def add_user(self, addr, password):
        res = self.cli("user", "add", addr, input=password + "\n")
        assert res.returncode == 0, f"user add {addr}: {res.returncode} {res.stderr}"

    # -- process ----------------------------------------------------------
    @property
    def run(self):
        return self.runs[-1] if self.runs else None

    @property
    def pid(self):
        return self.run.proc.pid

    def running(self):
        return self.run is not None and self.run.proc.poll() is None

    def start(self, wait=True):
        assert not self.running(), "already running"
        log_path = os.path.join(self.root, f"serve-{len(self.runs) + 1}.log")
        with open(log_path, "wb") as logf:
            proc = subprocess.Popen([self.bin, "serve", "-c", self.conf],
                                    stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                    env=self.env, start_new_session=True)
        self.runs.append(Run(proc, log_path))
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=READY_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            if "event=ready" in self.log:
                return
            rc = self.run.proc.poll()
            if rc is not None:
                self.run.rc = rc
                pytest.fail(f"posthorn serve exited with status {rc} before ready:\n{self.log}")
            if time.monotonic() >= deadline:
                pytest.fail(f"posthorn serve not ready after {timeout}s:\n{self.log}")
            time.sleep(0.02)

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM, wait (bounded), SIGKILL as a last resort; returns the status."""
        r = self.run
        if r.proc.poll() is None:
            r.stopped_by = "term"
            r.proc.send_signal(signal.SIGTERM)
            try:
                r.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                r.proc.kill()
                r.proc.wait(10)
                r.stopped_by = "kill-after-term"
        r.rc = r.proc.returncode
        return r.rc

    def kill9(self):
        r = self.run
        r.stopped_by = "kill"
        r.proc.send_signal(signal.SIGKILL)
        r.proc.wait(10)
        r.rc = r.proc.returncode

    def restart(self):
        if self.running():
            rc = self.stop()
            assert rc == 0, f"posthorn exited with status {rc} on SIGTERM:\n{self.log}"
        return self.start()

    def hup(self):
        self.run.proc.send_signal(signal.SIGHUP)

    def reload(self, expect="reload", timeout=10.0):
        """SIGHUP and wait for event=reload (or event=reload-failed)."""
        mark = self.log_mark()
        self.hup()
        return self.wait_event(expect, since=mark, timeout=timeout)

    # -- log ----------------------------------------------------------------
    @property
    def log(self):
        """stderr of the current run."""
        return self.run.log() if self.run else ""

    def log_mark(self):
        return len(self.log)

    def events(self, name=None, since=0):
        """Log lines as dicts of key=value (with 'event'), optionally filtered."""
        out = []
        for line in self.log[since:].splitlines():
            if "event=" not in line:
                continue
            kv = dict(re.findall(r"(\S+?)=(\S*)", line.split(": ", 1)[-1]))
            kv["_line"] = line
            if name is None or kv.get("event") == name:
                out.append(kv)
        return out

    def wait_event(self, name, since=0, timeout=10.0, **match):
        def find():
            for ev in self.events(name, since):
                if all(ev.get(k) == v for k, v in match.items()):
                    return ev
            return None
        try:
            return wait_until(find, timeout, what=f"event={name} {match}")
        except AssertionError:
            raise AssertionError(f"no event={name} {match} within {timeout}s; log:\n{self.log[since:]}")

    # -- clients ----------------------------------------------------------------
    def port(self, name="mx"):
        return self.ports[name]

    def connect(self, name="mx", source=None, timeout=10.0):
        c = SMTPConn(self.ports[name], source=source, timeout=timeout)
        self.conns.append(c)
        return c

    def smtp(self, name="mx", timeout=10.0):
        """An smtplib client (local_hostname given, so smtplib resolves nothing)."""
        s = smtplib.SMTP(HOST, self.ports[name], local_hostname=CLIENT_HELO, timeout=timeout)
        self.conns.append(s)
        return s

    # -- Maildirs -------------------------------------------------------------------
    def maildir(self, addr):
        local, domain = addr.rsplit("@", 1)
        return os.path.join(self.mailboxes, domain.lower(), local)

    def messages(self, addr, raw=False):
        """Bytes of every message in addr's Maildir (new/ and cur/), by name.

        Maildir tools accept files with LF or with CRLF line ends; unless
        raw, the text is returned with CRLF line ends whichever the daemon
        chose (test_smtp_basic checks that a file uses only one of them).

        A session of the daemon (IMAP, POP3) may move a message from new/
        to cur/, or rename it there, while this reads: a listing counts
        only when it is the same after every file in it was read (a file
        that moves between the reads of new/ and cur/ is in neither or in
        both; one that moves after the listing is gone when opened).  A
        Maildir that keeps changing is read as it is at the last try."""
        folder = self.maildir(addr)
        out = None
        for _ in range(200):
            paths = maildir_files(folder)
            try:
                out = []
                for path in paths:
                    with open(path, "rb") as f:
                        out.append(f.read())
            except FileNotFoundError:
                out = None
            if out is not None and maildir_files(folder) == paths:
                break
            time.sleep(0.005)
        if out is None:
            raise AssertionError(f"{folder}: files kept vanishing while it was read")
        return [data if raw else data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
                for data in out]

    def wait_messages(self, addr, n, timeout=10.0, settle=0.3):
        """Wait (bounded) until addr has n messages, then check it stays n."""
        try:
            wait_until(lambda: len(self.messages(addr)) >= n, timeout,
                       what=f"{n} message(s) for {addr}")
        except AssertionError:
            raise AssertionError(f"{addr} has {len(self.messages(addr))} message(s), expected {n} "
                                 f"within {timeout}s; log:\n{self.log}")
        if settle:
            time.sleep(settle)
        msgs = self.messages(addr)
        assert len(msgs) == n, f"{addr}: expected exactly {n} message(s), found {len(msgs)}"
        return msgs

    # -- teardown ---------------------------------------------------------------------
    def teardown(self):
        """Stop what still runs; return a list of problems (empty when clean)."""
        problems = []
        r = self.run
        if r is not None:
            if r.proc.poll() is not None and r.stopped_by is None:
                problems.append(f"posthorn serve died during the test with status "
                                f"{r.proc.returncode}")
                r.rc = r.proc.returncode
            elif r.proc.poll() is None:
                rc = self.stop()
                if r.stopped_by != "term":
                    problems.append(f"posthorn serve did not exit within {STOP_TIMEOUT}s of SIGTERM")
                elif rc != 0:
                    problems.append(f"posthorn serve exited with status {rc} after SIGTERM")
        for c in self.conns:
            try:
                c.close()
            except Exception:
                pass
        for i, run_ in enumerate(self.runs, 1):
            report = sanitizer_report(run_.log())
            if report:
                problems.append(f"sanitizer report in run {i} ({run_.log_path}):\n{report}")
        if problems and r is not None:
            problems.append("log of the last run:\n" + r.log()[-6000:])
        return problems


@pytest.fixture(scope="session")
def users_template(posthorn_bin, tmp_path_factory):
    """A users file with DEFAULT_USERS, made once with `posthorn user add`."""
    d = tmp_path_factory.mktemp("users-template")
    conf = d / "posthorn.conf"
    conf.write_text(
        f"hostname {HOSTNAME}\ndomains {' '.join(LOCAL_DOMAINS)}\n"
        f"spool {d}/spool\nmailboxes {d}/mail\nusers {d}/users\n\n"
        + server_block("mx", free_port()))
    for addr, pw in DEFAULT_USERS.items():
        res = run_cli(posthorn_bin, ["user", "add", addr], conf=conf, input=pw + "\n")
        if res.returncode != 0:
            pytest.fail(f"`posthorn user add {addr}` failed ({res.returncode}): {res.stderr}")
    return str(d / "users")


@pytest.fixture(scope="session")
def default_dns(tmp_path_factory):
    """A dnsmasq with no records: every daemon asks it, never the host's resolver."""
    d = Dnsmasq(tmp_path_factory.mktemp("dns"))
    yield d
    d.stop()


@pytest.fixture
def dnsmasq(tmp_path):
    """Factory: dnsmasq(ptr=[...], hosts=[...], mx=[...]) -> Dnsmasq, stopped at teardown."""
    started = []

    def make(**kw):
        d = Dnsmasq(tmp_path, **kw)
        started.append(d)
        return d
    yield make
    for d in started:
        d.stop()


@pytest.fixture
def posthorn(posthorn_bin, tmp_path, users_template, default_dns):
    """Factory: posthorn(limits={...}, anonymous=True, servers={...}, users={...},
    aliases="...", run_as=None, dns=None, root=None, start=True,
    asan_options={...}) -> Posthorn, already running unless start=False."""
    instances = []
    cleanup_dirs = []

    def make(start=True, root=None, **kw):
        if root is None:
            root = tmp_path / f"ph{len(instances) + 1}"
        kw.setdefault("dns", default_dns.address)
        p = Posthorn(posthorn_bin, root, users_template, **kw)
        instances.append(p)
        if start:
            p.start()
        return p

    def world_dir():
        """A fresh folder under /tmp that every user may traverse (for run-as)."""
        d = tempfile.mkdtemp(prefix="posthorn-it-")
        os.chmod(d, 0o755)
        cleanup_dirs.append(d)
        return d

    make.world_dir = world_dir
    yield make
    problems = []
    for p in instances:
        problems += p.teardown()
    for d in cleanup_dirs:
        shutil.rmtree(d, ignore_errors=True)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def mx(posthorn):
    """The common case: one anonymous SMTP server `mx` with default limits."""
    return posthorn()
