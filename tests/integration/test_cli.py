"""The command line (posthorn(8)): `check` on good and broken files
(FILE:LINE:COL, exit 1, every error reported), `user add|list|passwd|del`
(password from stdin, file mode 0600, never a plaintext password),
`--version`, `help`, and the exit statuses 0/1/2."""

import os
import re
import stat

import pytest

from conftest import run_cli, server_block
from helpers import free_port, run, sanitizer_report


@pytest.fixture
def cli(posthorn_bin):
    def call(*args, conf=None, input=None):
        return run_cli(posthorn_bin, args, conf=conf, input=input)
    return call


@pytest.fixture
def conf(posthorn):
    """A valid configuration, daemon not started, no users yet."""
    return posthorn(start=False, users={})


def _write(tmp_path, text, name="broken.conf"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _base(tmp_path):
    return (f"hostname mx.example.test\n"
            f"domains example.test\n"
            f"spool {tmp_path}/spool\n"
            f"mailboxes {tmp_path}/mail\n"
            f"users {tmp_path}/users\n")


def _error_lines(stderr, path):
    """(line, col) of every FILE:LINE:COL: message naming path."""
    name = re.escape(os.path.basename(path))
    return [(int(m.group(1)), int(m.group(2)))
            for m in re.finditer(r'(?:^|[\s"/])' + name + r":(\d+):(\d+): \S", stderr, re.M)]


# -- version and help ------------------------------------------------------

def test_version(cli):
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "VERSION")) as f:
        version = f.read().strip()
    res = cli("--version")
    assert res.returncode == 0
    assert res.stdout.strip() == f"posthorn {version}"


def test_help(cli):
    res = cli("help")
    assert res.returncode == 0, res.stderr
    for word in ("serve", "check", "user"):
        assert word in res.stdout
    res = cli("help", "user")
    assert res.returncode == 0
    assert "user" in res.stdout


def test_bad_usage_exits_2(cli, conf):
    assert cli("frobnicate").returncode == 2
    assert cli().returncode == 2
    assert cli("help", "no-such-command").returncode == 2
    assert cli("user", conf=conf.conf).returncode == 2
    assert cli("user", "frob", "x@example.test", conf=conf.conf).returncode == 2
    assert cli("check", "extra-argument", conf=conf.conf).returncode == 2
    assert cli("check", "-c").returncode == 2
    res = cli("frobnicate")
    assert "frobnicate" in res.stderr


# -- check -----------------------------------------------------------------------

def test_check_good_config(cli, conf):
    res = cli("check", conf=conf.conf)
    assert res.returncode == 0, res.stderr
    assert "mx" in res.stdout
    assert f"127.0.0.1:{conf.port()}" in res.stdout
    assert "mx.example.test" in res.stdout


def test_check_uses_posthorn_conf_variable(posthorn_bin, conf):
    env = dict(os.environ, POSTHORN_CONF=conf.conf)
    res = run([posthorn_bin, "check"], env=env)
    assert sanitizer_report(res.stderr) is None
    assert res.returncode == 0, res.stderr


def test_check_warns_about_a_policy_that_cannot_work(cli, tmp_path):
    """posthorn(8) `check`: AUTH PLAIN offered but no TLS certificate is a warning
    (exit 0), naming the server."""
    text = (_base(tmp_path) +
            f"server submission {{\n    listen 127.0.0.1:{free_port()}\n"
            "    auth {\n        mechanisms plain login\n    }\n}\n")
    res = cli("check", conf=_write(tmp_path, text, "warn.conf"))
    assert res.returncode == 0, res.stderr
    out = res.stdout + res.stderr
    assert "submission" in res.stdout
    warnings = [line for line in out.splitlines() if "warning" in line.lower()]
    assert any("PLAIN" in w and ("TLS" in w or "certificate" in w) for w in warnings), out


def test_check_unknown_directive(cli, tmp_path):
    path = _write(tmp_path, _base(tmp_path) + "frobnicate yes\n" + server_block("mx", free_port()))
    res = cli("check", conf=path)
    assert res.returncode == 1
    assert res.stdout == "" or "valid" not in res.stdout
    assert (6, 1) in _error_lines(res.stderr, path), res.stderr


def test_check_bad_argument_names_its_column(cli, tmp_path):
    text = (_base(tmp_path) +
            "server mx {\n"                          # line 6
            "    listen 127.0.0.1:99999\n"           # line 7: port out of range
            "    auth {\n"
            "        anonymous perhaps\n"            # line 9: not a boolean
            "    }\n"
            "    limits {\n"
            "        message-size 10Q\n"             # line 12: bad size
            "    }\n"
            "}\n")
    path = _write(tmp_path, text)
    res = cli("check", conf=path)
    assert res.returncode == 1
    errs = _error_lines(res.stderr, path)
    lines = {line for line, _ in errs}
    # every error is reported, not just the first
    assert {7, 9, 12} <= lines, res.stderr
    assert (7, 12) in errs, res.stderr          # the argument's column
    assert (9, 19) in errs, res.stderr
    assert (12, 22) in errs, res.stderr


def test_check_unclosed_block_and_duplicates(cli, tmp_path):
    port = free_port()
    text = (_base(tmp_path) + server_block("mx", port) + server_block("mx", free_port())
            + server_block("other", port))
    path = _write(tmp_path, text)
    res = cli("check", conf=path)
    assert res.returncode == 1
    assert len(_error_lines(res.stderr, path)) >= 2, res.stderr   # duplicate name, same address

    path = _write(tmp_path, _base(tmp_path) + "server mx {\n    listen 127.0.0.1:2525\n",
                  "unclosed.conf")
    res = cli("check", conf=path)
    assert res.returncode == 1
    assert _error_lines(res.stderr, path), res.stderr


def test_check_include_reports_the_included_file(cli, tmp_path):
    (tmp_path / "conf.d").mkdir()
    inc = str(tmp_path / "conf.d" / "mx.conf")
    with open(inc, "w") as f:
        f.write(f"server mx {{\n    listen 127.0.0.1:{free_port()}\n"
                "    limits {\n        recipients many\n    }\n}\n")
    # a relative, globbing include: relative to the including file's folder
    path = _write(tmp_path, _base(tmp_path) + "include conf.d/*.conf\n", "main.conf")
    res = cli("check", conf=path)
    assert res.returncode == 1
    assert [line for line, _ in _error_lines(res.stderr, inc)] == [4], res.stderr
    # fixed, the same include is valid and its server is shown
    with open(inc, "w") as f:
        f.write(f"server mx {{\n    listen 127.0.0.1:{free_port()}\n}}\n")
    res = cli("check", conf=path)
    assert res.returncode == 0, res.stderr
    assert "mx" in res.stdout


def test_check_missing_file(cli, tmp_path):
    res = cli("check", conf=str(tmp_path / "does-not-exist.conf"))
    assert res.returncode == 1
    assert "does-not-exist.conf" in res.stderr


def test_serve_with_broken_config_exits_1(cli, tmp_path):
    path = _write(tmp_path, _base(tmp_path) + "frobnicate yes\n" + server_block("mx", free_port()))
    res = cli("serve", conf=path)
    assert res.returncode == 1
    assert (6, 1) in _error_lines(res.stderr, path), res.stderr


def test_serve_on_a_busy_port_exits_1(posthorn_bin, conf):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", conf.port()))
        s.listen()
        res = run_cli(posthorn_bin, ["serve"], conf=conf.conf, env=conf.env, timeout=30)
    assert res.returncode == 1, res.stderr
    assert str(conf.port()) in res.stderr


# -- users ------------------------------------------------------------------------

def _users_text(conf):
    with open(conf.users_file) as f:
        return f.read()


def test_user_add_list_passwd_del(cli, conf):
    c = conf.conf
    pw1, pw2 = "correct horse battery staple", "Tr0ub4dor&3-second"
    res = cli("user", "add", "erin@example.test", conf=c, input=pw1 + "\n")
    assert res.returncode == 0, res.stderr
    res = cli("user", "add", "frank@example.org", conf=c, input=pw1 + "\n")
    assert res.returncode == 0, res.stderr

    st = os.stat(conf.users_file)
    assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
    text = _users_text(conf)
    assert pw1 not in text
    assert "erin@example.test" in text and "frank@example.org" in text
    erin1 = [line for line in text.splitlines() if line.startswith("erin@")][0]
    frank = [line for line in text.splitlines() if line.startswith("frank@")][0]
    # salted: the same password gives different records
    assert erin1.split(":", 1)[1] != frank.split(":", 1)[1]
    assert "SCRAM-SHA-256" in erin1

    res = cli("user", "list", conf=c)
    assert res.returncode == 0
    assert sorted(res.stdout.split()) == ["erin@example.test", "frank@example.org"]

    # adding twice is an error and changes nothing
    res = cli("user", "add", "erin@example.test", conf=c, input="other\n")
    assert res.returncode == 1
    assert "erin@example.test" in res.stderr
    assert _users_text(conf) == text

    res = cli("user", "passwd", "erin@example.test", conf=c, input=pw2 + "\n")
    assert res.returncode == 0, res.stderr
    text2 = _users_text(conf)
    assert pw2 not in text2 and pw1 not in text2
    erin2 = [line for line in text2.splitlines() if line.startswith("erin@")][0]
    assert erin2 != erin1
    assert stat.S_IMODE(os.stat(conf.users_file).st_mode) == 0o600

    res = cli("user", "del", "erin@example.test", conf=c)
    assert res.returncode == 0, res.stderr
    assert cli("user", "list", conf=c).stdout.split() == ["frank@example.org"]
    assert stat.S_IMODE(os.stat(conf.users_file).st_mode) == 0o600

    # operations on a user that does not exist
    assert cli("user", "del", "erin@example.test", conf=c).returncode == 1
    assert cli("user", "passwd", "nobody@example.test", conf=c, input="x-pass\n").returncode == 1


def test_user_add_checks_its_input(cli, conf):
    c = conf.conf
    res = cli("user", "add", "not-an-address", conf=c, input="secret-1\n")
    assert res.returncode == 1, res.stdout
    res = cli("user", "add", "gina@example.test", conf=c, input="")
    assert res.returncode == 1
    res = cli("user", "add", "gina@example.test", conf=c, input="\n")
    assert res.returncode == 1
    assert cli("user", "list", conf=c).stdout.split() == []


def test_user_password_only_first_line(cli, conf):
    """Only the first line of stdin is the password: the rest never lands
    in the file."""
    c = conf.conf
    res = cli("user", "add", "hank@example.test", conf=c, input="first-line-pw\nsecond-line\n")
    assert res.returncode == 0, res.stderr
    text = _users_text(conf)
    assert "first-line-pw" not in text and "second-line" not in text


def test_user_add_is_used_by_the_daemon(conf):
    conf.add_user("ivy@example.test", "ivy-Secret-9")
    conf.start()
    with conf.connect() as c:
        c.start()
        c.expect("MAIL FROM:<alice@example.org>", 250)
        c.expect("RCPT TO:<ivy@example.test>", 250)
        r = c.cmd("RCPT TO:<bob@example.test>")
        assert r.first.startswith("550 5.1.1"), r.raw     # not in this users file
