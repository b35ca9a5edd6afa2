"""The command line as the field test used it: `posthorn check` runs every
check `posthorn serve` makes before it serves (file modes and owners, keys
matching their certificates, the run-as user, folders that must be made),
with the same words, so that a passing check means the daemon starts; it
warns about a public mail exchanger that requires TLS (RFC 3207 §4); and
every command and sub-command answers --help and -h with its usage."""

import os
import pwd
import re
import shutil

import pytest

from conftest import HOSTNAME, run_cli
from helpers import run, sanitizer_report
from tlsutil import CertPair, tls_extra


def serve_refused(p):
    """`posthorn serve` that must stop before serving: its exit status and
    output, the log's escaped quotes put back."""
    res = run_cli(p.bin, ["serve"], conf=p.conf, env=p.env, timeout=60)
    return res.returncode, (res.stdout + res.stderr).replace("\\x22", '"')


def check_errors(p):
    """`posthorn check` that must fail: the lines it gave on stderr."""
    res = p.cli("check")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "configuration is valid" not in res.stdout, res.stdout
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines, res.stderr
    return lines


def assert_check_and_serve_agree(p, needle):
    """check fails with a line containing needle; serve refuses to start
    with that very line."""
    lines = [line for line in check_errors(p) if needle in line]
    assert lines, f"no {needle!r} in check's errors: {check_errors(p)}"
    rc, out = serve_refused(p)
    assert rc == 1, out
    for line in lines:
        assert line in out, f"serve did not say {line!r}:\n{out}"


def assert_check_and_serve_pass(p):
    res = p.cli("check")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "configuration is valid" in res.stdout
    p.start()
    assert p.running()


# -- check runs what start-up runs ---------------------------------------------------------------

def test_users_file_readable_by_others(posthorn):
    """The field test: check said "configuration is valid", serve then
    stopped with config-error ... readable or writable by group or others."""
    p = posthorn(start=False)
    os.chmod(p.users_file, 0o644)
    assert_check_and_serve_agree(p, "readable or writable by group or others")
    os.chmod(p.users_file, 0o600)
    assert_check_and_serve_pass(p)


def test_key_not_matching_its_certificate(posthorn, posthorn_bin, tmp_path):
    pairs = []
    for host in (HOSTNAME, "other.example.test"):
        res = run_cli(posthorn_bin, ["cert", "new", "--hostname", host, "--out",
                                     str(tmp_path / host)])
        assert res.returncode == 0, res.stderr
        pairs.append(CertPair(host, tmp_path / host))
    mine, other = pairs
    p = posthorn(start=False, servers={"mx": {"extra": tls_extra([(mine.crt, other.key)])}})
    # the same FILE:LINE:COL line from both
    assert_check_and_serve_agree(p, "does not match certificate")
    assert any(line.startswith(f"{p.conf}:") for line in check_errors(p))
    p.write_config(p.config_text(mx={"extra": tls_extra([mine])}))
    assert_check_and_serve_pass(p)


def test_spool_that_cannot_be_made(posthorn, tmp_path):
    """A spool folder below a file: start-up cannot make it, so check
    fails too, naming the folder."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file\n")
    p = posthorn(start=False)
    spool = f"{blocker}/spool"
    text = p.config_text().replace(f"spool {p.spool}\n", f"spool {spool}\n")
    assert spool in text
    p.write_config(text)
    assert_check_and_serve_agree(p, f"spool {spool} cannot be made: {blocker} is not a folder")
    # mailboxes that are a file, likewise
    text = p.config_text().replace(f"mailboxes {p.mailboxes}\n", f"mailboxes {blocker}\n")
    p.write_config(text)
    assert_check_and_serve_agree(p, f"mailboxes {blocker} cannot be used")
    p.write_config()
    assert_check_and_serve_pass(p)


@pytest.mark.skipif(os.geteuid() != 0, reason="run-as is used only when started as root")
def test_run_as_user_and_what_it_must_read(posthorn):
    """As root with run-as, the user must exist, and it must be able to read
    what the daemon reads again after dropping privileges (the users file
    at a reload): a root-owned users file used to pass check and start, then
    fail every reload."""
    p = posthorn(start=False, users={}, run_as="no-such-user-posthorn",
                 asan_options={"detect_leaks": "0"})
    assert_check_and_serve_agree(p, 'no such user "no-such-user-posthorn"')

    root = posthorn.world_dir()
    p = posthorn(root=root, start=False, run_as="nobody", asan_options={"detect_leaks": "0"})
    os.chown(p.users_file, 0, 0)
    assert_check_and_serve_agree(
        p, f"users file {p.users_file} cannot be read by the run-as user nobody")
    nobody = pwd.getpwnam("nobody")
    os.chown(p.users_file, nobody.pw_uid, nobody.pw_gid)
    assert_check_and_serve_pass(p)
    p.reload()


# -- a public MX must not require TLS ------------------------------------------------------------

def test_check_warns_when_a_public_mx_requires_tls(posthorn, posthorn_bin, tmp_path):
    """RFC 3207 §4: a publicly-referenced SMTP server must not require
    STARTTLS to deliver mail locally.  `require yes` with `anonymous yes`
    is a warning (the configuration is valid); on a submission server
    (anonymous no) it is what is wanted and draws none."""
    res = run_cli(posthorn_bin, ["cert", "new", "--hostname", HOSTNAME, "--out",
                                 str(tmp_path / "c")])
    assert res.returncode == 0, res.stderr
    pair = CertPair(HOSTNAME, tmp_path / "c")
    tls = tls_extra([pair], require="yes")
    p = posthorn(start=False, servers={"mx": {"anonymous": True, "extra": tls},
                                       "submission": {"anonymous": False, "extra": tls}})
    res = p.cli("check")
    assert res.returncode == 0, res.stdout + res.stderr
    warnings = [line for line in res.stdout.splitlines() if line.startswith("warning:")]
    mx = [w for w in warnings if "server mx:" in w and "require" in w]
    assert len(mx) == 1, res.stdout
    assert "anonymous" in mx[0] and "RFC 3207" in mx[0], mx[0]
    assert not [w for w in warnings if "server submission:" in w and "require" in w], res.stdout


# -- --help and -h everywhere --------------------------------------------------------------------

COMMANDS = [
    ["serve"], ["check"], ["check-dns"],
    ["user"], ["user", "add"], ["user", "passwd"], ["user", "del"], ["user", "list"],
    ["queue"], ["queue", "list"], ["queue", "show"], ["queue", "flush"], ["queue", "delete"],
    ["cert"], ["cert", "new"], ["help"],
]


@pytest.fixture
def conf(posthorn):
    """A valid configuration (daemon not started): a command that ignored
    --help would run, not fail on the configuration."""
    return posthorn(start=False)


@pytest.mark.parametrize("cmd", COMMANDS, ids=" ".join)
def test_every_command_answers_help(conf, cmd):
    """`posthorn cert new --help` answered: unknown option "--help".  Every
    command and sub-command prints its usage on stdout and exits 0 for
    --help and -h, the text `posthorn help COMMAND` gives; an unknown
    option is still an error that names it."""
    want = run_cli(conf.bin, ["help", cmd[0]])
    assert want.returncode == 0, want.stderr
    for flag in ("--help", "-h"):
        res = run_cli(conf.bin, cmd + [flag], conf=conf.conf, timeout=30)
        assert res.returncode == 0, f"{cmd} {flag}: {res.returncode} {res.stderr}"
        assert res.stdout.startswith(f"usage: posthorn {cmd[0]}"), res.stdout
        assert res.stdout == want.stdout
        assert res.stderr == "", res.stderr
    assert "event=" not in res.stdout  # serve --help starts no daemon

    res = run_cli(conf.bin, cmd + ["--no-such-option"], conf=conf.conf, timeout=30)
    assert res.returncode == 2, f"{cmd}: {res.returncode} {res.stdout} {res.stderr}"
    assert '"--no-such-option"' in res.stderr, res.stderr
    assert "usage: posthorn" in res.stderr, res.stderr
