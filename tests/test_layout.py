"""The layout docs/development.md draws, checked against the code: every module of
src/bnrepro/ sits in one layer of its table and imports only from its own layer and those
above; no trainer imports another trainer, no experiment package another; no file over 600
lines and no function over 80."""

import ast
import re
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "src" / "bnrepro"
TRAINERS = {"train_mlp", "train_inception", "train_packed"}


def layers() -> dict[str, int]:
    """Module (first name under bnrepro) -> its row in the layout table."""
    text = (REPO / "docs" / "development.md").read_text()
    table = text.split("| layer | modules", 1)[1].split("\n\n", 1)[0]
    rows = [line for line in table.splitlines()[2:] if line.startswith("|")]
    rank = {}
    for index, line in enumerate(rows):
        modules = line.split("|")[2]
        for name in re.findall(r"`([a-z_]+)/?(?:<name>/)?`", modules):
            rank[name] = index
    return rank


def modules() -> dict[Path, str]:
    return {
        path: path.relative_to(PACKAGE).with_suffix("").parts[0]
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "__init__.py" or path.parent != PACKAGE
    }


def imports(path: Path) -> list[tuple[str, ...]]:
    """The bnrepro modules `path` imports, each as its dotted parts after `bnrepro`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bnrepro"):
            parts = tuple(node.module.split(".")[1:])
            found += [parts] if parts else [(alias.name,) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [
                tuple(alias.name.split(".")[1:])
                for alias in node.names
                if alias.name.startswith("bnrepro.")
            ]
    return found


def test_every_module_is_in_one_layer_and_imports_downward() -> None:
    rank = layers()
    assert {"nn", "config", "lifecycle", "train", "driver", "docs"} <= set(rank)
    upward = []
    for path, module in modules().items():
        assert module in rank, f"{module} is in no layer of docs/development.md's table"
        upward += [
            (module, target[0])
            for target in imports(path)
            if target[0] in rank and rank[target[0]] > rank[module]
        ]
    assert upward == []


def test_no_trainer_imports_another_and_no_experiment_another() -> None:
    crossing = []
    for path, module in modules().items():
        for target in imports(path):
            if module in TRAINERS and target[0] in TRAINERS - {module}:
                crossing.append((path.name, target))
            parts = path.relative_to(PACKAGE).parts
            inside = module == "experiments" and len(parts) > 2
            if inside and target[:1] == ("experiments",) and target[1:2] not in ((), parts[1:2]):
                crossing.append((str(path.relative_to(PACKAGE)), target))
    assert crossing == []


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.name)
def test_files_and_functions_stay_short(path: Path) -> None:
    lines = path.read_text().splitlines()
    assert len(lines) <= 600, f"{path.relative_to(REPO)}: {len(lines)} lines"
    long = [
        (node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(ast.parse("\n".join(lines)))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > 80
    ]
    assert long == []
