"""The README's Python examples run as written (in a temporary directory: one saves a model)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_the_readme_has_python_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_a_readme_example_runs(index, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(BLOCKS[index], f"README.md example {index + 1}", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out  # every example shows its result


def _commands() -> tuple[str, str]:
    """The README's two opening commands (install and train; install and test), lines joined."""
    block = re.search(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert block, "the README starts with a bash block of two commands"
    lines = block.group(1).replace("\\\n", " ").splitlines()
    commands = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert len(commands) == 2, commands
    return commands[0], commands[1]


def test_ci_runs_the_readmes_test_command():
    """`.ci/run` installs the Debian packages the README's test command names, then runs it."""
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    test_command = _commands()[1]
    apt = re.search(r"apt-get install -y (.*?) &&", test_command)
    assert apt, test_command
    ci_apt = re.search(r"apt-get install (.*?)>", ci.replace("\\\n", " "))
    assert ci_apt, "no apt-get install in .ci/run"
    packages = {word for word in ci_apt.group(1).split() if not word.startswith("-")}
    assert set(apt.group(1).split()) == packages
    tests = 'pip install -e ".[test]" && pytest'
    assert test_command.endswith(tests)
    assert tests in ci
