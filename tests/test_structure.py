"""The package's structure, checked: imports flow one way; the README's layout names every module.

Each module has a rank; a module may import only from modules of its own rank or lower. A new
module must be given a rank here, which is the point: its place in the order is a decision.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "chainrule"
README = PACKAGE.parents[1] / "README.md"

# maths -> layers -> network -> checks -> training -> io and figures -> lessons -> cli / server
RANKS: dict[str, int] = {
    "_checks": 0,
    "_compiled": 0,
    "_version": 0,
    "functional": 0,
    "initializers": 0,
    "kernels": 0,
    "numerical": 0,
    "metrics": 0,
    "data": 0,
    "schedules": 0,
    "history": 0,
    "images": 0,
    "layers": 1,
    "augmentation": 1,
    "conv": 1,
    "losses": 1,
    "network": 2,
    "gradcheck": 3,
    "optim": 3,
    "distributed": 3,
    "callbacks": 4,
    "train": 4,
    "progress": 5,
    "io": 5,
    "export": 5,
    "plots": 5,
    "datasets": 5,
    "lessons": 6,
    "cli": 7,
    "__main__": 7,
    "__init__": 8,
}


def _modules() -> dict[str, Path]:
    """Every module, by its dotted name below ``chainrule`` (``datasets.idx``, ``cli``)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts.pop()
        found[".".join(parts)] = path
    return found


def _rank(module: str) -> int:
    top = module.split(".")[0]
    if top not in RANKS:
        pytest.fail(f"chainrule.{module} has no rank in tests/test_structure.py: give it one")
    return RANKS[top]


def _imports(module: str, path: Path) -> set[str]:
    """The chainrule modules that ``module`` imports, as dotted names below ``chainrule``."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    if module == "__init__":
        package = []
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            if node.module:
                targets.add(".".join([*base, node.module]))
            else:
                targets.update(".".join([*base, alias.name]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("chainrule"):
            targets.add(node.module.removeprefix("chainrule").lstrip(".") or "__init__")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "chainrule":
                    targets.add(alias.name.removeprefix("chainrule").lstrip(".") or "__init__")
    return targets


def test_every_module_has_a_rank():
    for module in _modules():
        _rank(module)


@pytest.mark.parametrize("module", sorted(_modules()))
def test_imports_flow_one_way(module):
    path = _modules()[module]
    rank = _rank(module)
    for target in sorted(_imports(module, path)):
        top = target.split(".")[0]
        if top == module.split(".")[0]:
            continue  # within one package (datasets, lessons)
        assert _rank(target) <= rank, (
            f"chainrule.{module} (rank {rank}) imports chainrule.{target} (rank {_rank(target)}): "
            "an arrow that runs back up"
        )


def test_the_checker_sees_a_backward_arrow(tmp_path):
    """The rule can fail: a layer that imports the training loop is caught."""
    bad = tmp_path / "layers.py"
    bad.write_text("from .train import fit\nfrom . import network\n", encoding="utf-8")
    assert _imports("layers", bad) == {"train", "network"}
    assert _rank("train") > _rank("layers")


def test_readme_layout_names_every_module():
    text = README.read_text(encoding="utf-8")
    section = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    first_column = [row.split("|")[1] for row in section.splitlines() if row.startswith("| `")]
    listed = set(re.findall(r"`(\w+?)(?:\.py|/)`", " ".join(first_column)))
    public = {m.split(".")[0] for m in _modules() if not m.split(".")[0].startswith("_")}
    assert public - listed == set(), "modules missing from the README's layout table"
    assert listed - public == set(), "the README's layout table names modules that do not exist"
