"""Dovecot's imaptest compliance suite against posthorn: every scripted
test group of imaptest (third_party/imaptest, run one group per imaptest
process by its compliance.sh) against a daemon with a plain IMAP listener,
as bob.  A group passes, fails, or is skipped when posthorn does not
advertise a capability it needs; none may fail.  The counts are printed
(pytest -s, or `make imaptest`), and the full imaptest output of a
failing run is in the test's folder (compliance.log).
"""

import os
import re
import subprocess

from imaptestutil import IMAPTEST_DIR, TOOL, build_imaptest
from imaputil import BOB, BOB_PW
from nodeutil import PLAIN_LOGIN

SUMMARY = re.compile(r"^imaptest: (\d+) passed, (\d+) failed, (\d+) skipped$", re.M)
GROUP_SECONDS = 30          # at most, per test group


def test_imaptest_compliance_suite_has_no_failure(posthorn, tmp_path):
    build_imaptest()
    p = posthorn(servers={"imap": {"anonymous": None, "extra": "protocol imap\n" + PLAIN_LOGIN}})
    log = tmp_path / "compliance.log"
    env = dict(os.environ, IMAPTEST_DIR=str(IMAPTEST_DIR), IMAPTEST_LOG=str(log),
               IMAPTEST_TEST_TIMEOUT=str(GROUP_SECONDS))
    res = subprocess.run([str(TOOL / "compliance.sh"), "127.0.0.1", str(p.port("imap")), BOB, BOB_PW],
                         capture_output=True, text=True, env=env, timeout=600,
                         stdin=subprocess.DEVNULL)
    m = SUMMARY.search(res.stdout)
    assert m, f"compliance.sh ended without its summary (rc={res.returncode}):\n{res.stdout[-2000:]}" \
              f"{res.stderr[-2000:]}"
    passed, failed, skipped = (int(x) for x in m.groups())
    groups = [line for line in res.stdout.splitlines() if re.match(r"^(PASS|FAIL|SKIP) ", line)]
    print(f"imaptest compliance: {passed} passed, {failed} failed, {skipped} skipped "
          f"of {len(groups)} groups")
    assert passed + failed + skipped == len(groups) and passed > 0, res.stdout[-2000:]
    assert failed == 0, "\n".join(g for g in groups if g.startswith("FAIL")) + f"\n(see {log})"
    assert res.returncode == 0, res.stdout[-2000:]
