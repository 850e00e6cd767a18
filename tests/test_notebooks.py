"""Every notebook under notebooks/ runs top to bottom from the repo root and is committed clean."""

import ast
import base64
import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from conftest import REPO
from nbclient import NotebookClient

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 120


def outputs(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [
        output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    ]


def stdout(notebook: nbformat.NotebookNode) -> str:
    return "".join(
        output.text
        for output in outputs(notebook)
        if output.output_type == "stream" and output.name == "stdout"
    )


def check_figure1(notebook: nbformat.NotebookNode) -> None:
    """The summary rows are printed and Figure 1 is drawn inline as a PNG."""
    summary = pd.read_csv(REPO / "results" / "figure1" / "summary.csv")
    printed = [line.split() for line in stdout(notebook).splitlines()]
    for row in summary.itertuples():
        assert any(
            fields[:2] == [row.variant, str(row.seed)]
            and float(fields[2]) == pytest.approx(row.final_test_acc, abs=1e-5)
            for fields in printed
            if len(fields) >= 3
        ), f"no summary row for {row.variant} seed {row.seed}"
    images = [o.data["image/png"] for o in outputs(notebook) if "image/png" in o.get("data", {})]
    assert len(images) == 1, "Figure 1 is shown exactly once"
    png = base64.b64decode(images[0])
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def check_claims(notebook: nbformat.NotebookNode) -> None:
    """Every claim's verdict is printed and the six claim figures are drawn inline."""
    claims = pd.read_csv(REPO / "results" / "claims" / "claims.csv")
    printed = stdout(notebook)
    for claim in claims.claim:
        assert claim in printed, f"claim {claim!r} is not in the printed table"
    images = [o.data["image/png"] for o in outputs(notebook) if "image/png" in o.get("data", {})]
    assert len(images) == 6, "one figure per claim"


def check_figure2(notebook: nbformat.NotebookNode) -> None:
    """Every variant's row of the Figure 3 analogue is printed (variant, seeds, status, steps
    to target, the seeds' fewest and most, maximum accuracy, ...), and Figure 2 and the ladder
    are drawn once each."""
    table = pd.read_csv(REPO / "results" / "figure2" / "table.csv")
    printed = [line.split() for line in stdout(notebook).splitlines()]
    for row in table.itertuples():
        assert any(
            [fields[0], fields[2]] == [row.variant, row.status]
            and float(fields[6]) == pytest.approx(row.max_acc, abs=1e-4)
            for fields in printed
            if len(fields) >= 7
        ), f"no table row for {row.variant}"
    images = [o.data["image/png"] for o in outputs(notebook) if "image/png" in o.get("data", {})]
    assert len(images) == 2, "Figure 2 and the ladder are shown once each"


def check_ics(notebook: nbformat.NotebookNode) -> None:
    """Every claim's verdict is printed and the four figures are drawn inline, once
    results/ics/ exists (`make reproduce-ics`)."""
    path = REPO / "results" / "ics" / "claims.csv"
    if not path.exists():
        pytest.skip("results/ics has not been generated in this checkout")
    printed = stdout(notebook)
    for row in pd.read_csv(path).itertuples():
        assert f"{row.verdict:12s} {row.claim}: {row.measured}" in printed, row.claim
    images = [o.data["image/png"] for o in outputs(notebook) if "image/png" in o.get("data", {})]
    assert len(images) == 4, "accuracy, percentiles, ICS and smoothness once each"


def check_sensitivity(notebook: nbformat.NotebookNode) -> None:
    """Every cell of the map is printed with its three verdicts, and the heatmaps are drawn
    once."""
    members = pd.read_csv(REPO / "results" / "sensitivity" / "members.csv")
    cells = members.groupby(["optimizer", "lr", "init_std"]).size().index
    printed = [line.split() for line in stdout(notebook).splitlines()]
    for optimizer, lr, init_std in cells:
        assert any(
            fields[0] == optimizer
            and float(fields[1]) == pytest.approx(lr)
            and float(fields[2]) == pytest.approx(init_std)
            and all(verdict in VERDICTS for verdict in fields[-3:])
            for fields in printed
            if len(fields) == 10
        ), f"no row for the cell {optimizer}, lr {lr}, init std {init_std}"
    images = [o.data["image/png"] for o in outputs(notebook) if "image/png" in o.get("data", {})]
    assert len(images) == 1, "the heatmaps are shown exactly once"


VERDICTS = {"holds", "reversed", "small", "mixed", "undefined", "diverged"}
CHECKS: dict[str, Callable[[nbformat.NotebookNode], None]] = {
    "figure1.ipynb": check_figure1,
    "claims.ipynb": check_claims,
    "figure2.ipynb": check_figure2,
    "ics.ipynb": check_ics,
    "sensitivity.ipynb": check_sensitivity,
}


def test_the_notebooks_are_there() -> None:
    assert {path.name for path in NOTEBOOKS} >= set(CHECKS)


def package_names(notebook: nbformat.NotebookNode) -> list[tuple[str, str]]:
    """(module, name) for every `from bnrepro... import name` of the notebook's code, and for
    every `module.name` read through a bnrepro module it imported so."""
    tree = ast.parse("\n".join(c.source for c in notebook.cells if c.cell_type == "code"))
    imported = [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    names, modules = [], {}
    for node in imported:
        if (node.module or "").startswith("bnrepro"):
            for alias in node.names:
                names.append((node.module, alias.name))
                submodule = f"{node.module}.{alias.name}"
                if is_module(submodule):
                    modules[alias.asname or alias.name] = submodule
    for node in ast.walk(tree):
        read = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        if read and node.value.id in modules:
            names.append((modules[node.value.id], node.attr))
    return names


def is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_a_notebook_names_only_what_the_package_has(path: Path) -> None:
    """The notebooks run only in the integration suite; a renamed function they call fails
    here, in the fast suite, first."""
    names = package_names(nbformat.read(path, as_version=4))
    assert names, f"{path.name} imports nothing from bnrepro"
    missing = [
        f"{module}.{name}"
        for module, name in names
        if not hasattr(importlib.import_module(module), name) and not is_module(f"{module}.{name}")
    ]
    assert not missing, f"{path.name} uses names the package does not have: {missing}"


@pytest.mark.integration
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_runs(path: Path) -> None:
    if not (REPO / "results" / "figure1" / "summary.csv").exists():
        pytest.skip("results/figure1 has not been generated in this checkout")
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(REPO)}},
    )
    client.execute()  # raises CellExecutionError, with the traceback, when a cell fails
    errors = [output for output in outputs(notebook) if output.output_type == "error"]
    assert not errors, errors
    assert outputs(notebook), f"{path.name} produced no output"
    if path.name in CHECKS:
        CHECKS[path.name](notebook)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata.kernelspec.name == "python3"
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: cell {cell.get('id')} has outputs"
            assert cell.execution_count is None, f"{path.name}: cell {cell.get('id')} was run"
