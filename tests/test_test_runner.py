"""The README's test command itself: it stops before the suite when the disk is too full, and the
suite does not pile up temporary files (a CI run once failed half-way on a full disk)."""

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow  # a subprocess through setup_env.sh's import check
def test_run_tests_refuses_without_disk_space(tmp_path):
    env = dict(os.environ, VENV=sys.prefix, TMPDIR=str(tmp_path))
    env["RESNEST_DENSE_TEST_DISK_MB"] = str(10**9)  # more than any disk has
    proc = subprocess.run(
        ["bash", os.path.join(ROOT, "scripts", "run_tests.sh"), "--collect-only"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"free in {tmp_path}" in proc.stderr and "needs 1000000000 MB" in proc.stderr
    assert "TMPDIR" in proc.stderr
    assert "collected" not in proc.stdout  # pytest never started


@pytest.mark.parametrize("outcome, kept", [("pass", False), ("fail", True)])
def test_suite_keeps_temporary_folders_of_failed_tests_only(tmp_path, outcome, kept):
    test_file = tmp_path / "test_writes.py"
    test_file.write_text(
        textwrap.dedent(
            f"""
            def test_writes(tmp_path):
                (tmp_path / "big.bin").write_bytes(b"x" * 1000)
                assert {outcome == "pass"}
            """
        )
    )
    basetemp = tmp_path / "basetemp"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        + ["-c", os.path.join(ROOT, "pytest.ini"), "--rootdir", str(tmp_path)]
        + [f"--basetemp={basetemp}", str(test_file)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == (0 if outcome == "pass" else 1), proc.stdout
    left = list(basetemp.rglob("big.bin"))
    assert bool(left) == kept, left
