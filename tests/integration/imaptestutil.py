"""Dovecot's imaptest for the tests: built from third_party/imaptest
(its README says what it is, where it comes from and its licence) into
the build folder, `make imaptest-tool`, which `make integration` runs
first; a test that finds it missing builds it (concurrent builds wait for
each other).  POSTHORN_IMAPTEST_DIR names another build folder.
"""

import os
import subprocess
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[2]
TOOL = TOP / "third_party" / "imaptest"
IMAPTEST_DIR = Path(os.environ.get("POSTHORN_IMAPTEST_DIR", TOP / "build" / "imaptest"))


def build_imaptest():
    """The path of the imaptest wrapper, built if need be."""
    res = subprocess.run([str(TOOL / "build.sh"), str(IMAPTEST_DIR)],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, f"building imaptest failed:\n{res.stderr[-3000:]}"
    return str(IMAPTEST_DIR / "imaptest")


@pytest.fixture(scope="module")
def imaptest(tmp_path_factory):
    """{"bin": the imaptest wrapper, "mbox": the stress mode's mbox}."""
    binary = build_imaptest()
    mbox = tmp_path_factory.mktemp("imaptest-mbox") / "stress.mbox"
    res = subprocess.run(["python3", str(TOOL / "mbox.py"), str(mbox)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return {"bin": binary, "mbox": str(mbox)}
