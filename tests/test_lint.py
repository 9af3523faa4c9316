"""The code style and type checks run with the tests (ruff and mypy, configured in pyproject)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "ruff", "check", "."],
        [sys.executable, "-m", "ruff", "format", "--check", "."],
        [sys.executable, "-m", "mypy"],
    ],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_tool_passes(command):
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# pytest-xdist requires every worker to collect the same test ids; an id built from the clock
# (a gzip header's mtime) or from hash order once made CI fail when two workers straddled a second.
COLLECT_AT = """
import sys, time
import pytest
if sys.argv[1] == "frozen":
    time.time = lambda: 1e9
sys.exit(pytest.main(["--collect-only", "-q", "-n", "0", "-p", "no:cacheprovider"]))
"""


def test_collected_test_ids_do_not_depend_on_the_clock_or_hash_seed():
    def collect(clock: str, hash_seed: str) -> list[str]:
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        result = subprocess.run(
            [sys.executable, "-c", COLLECT_AT, clock],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return [line for line in result.stdout.splitlines() if "::" in line]

    ids = collect("frozen", "1")
    assert len(ids) > 500
    assert ids == collect("real", "2")
