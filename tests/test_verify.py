"""experiments/verify.py: the CSV comparison on small hand-made files, and the quick mode of
figure1 end to end (rerun, collect, and a reference that no longer matches)."""

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import REPO

spec = importlib.util.spec_from_file_location("verify", REPO / "experiments" / "verify.py")
verify = importlib.util.module_from_spec(spec)
spec.loader.exec_module(verify)

CURVES = "variant,seed,step,test_acc,p50\nbn,0,0,0.1,0.5\nbn,0,100,0.9,0.25\nplain,0,0,0.1,-1.5\n"
TOLERANCES = {"curves.csv": {"test_acc": 1e-3, "p50": 1e-4}}


def compare(tmp_path: Path, committed: str, rerun: str, tolerances=TOLERANCES):
    """Compares a committed and a rerun curves.csv, each written as given, in a new folder."""
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    for folder, text in (("committed", committed), ("rerun", rerun)):
        (root / folder).mkdir()
        (root / folder / "curves.csv").write_text(text)
    return verify.compare_folders(root / "committed", root / "rerun", tolerances)


def test_equal_bytes_are_identical(tmp_path) -> None:
    result = compare(tmp_path, CURVES, CURVES)
    assert result.status == "identical" and result.differences == []


def test_differences_within_the_tolerances(tmp_path) -> None:
    rerun = CURVES.replace("bn,0,100,0.9,0.25", "bn,0,100,0.9005,0.25003")
    result = compare(tmp_path, CURVES, rerun)
    assert result.status == "within tolerance", result.differences
    assert result.largest[("curves.csv", "test_acc")] == pytest.approx(5e-4)
    summary = result.summary(TOLERANCES)
    assert "curves.csv p50 up to 3e-05 (tolerance 0.0001)" in summary
    assert "curves.csv test_acc up to 0.0005 (tolerance 0.001)" in summary


def test_rows_in_another_order_are_within_tolerance(tmp_path) -> None:
    lines = CURVES.splitlines(keepends=True)
    result = compare(tmp_path, CURVES, "".join([lines[0], *reversed(lines[1:])]))
    assert result.status == "within tolerance" and not result.differences


def test_a_number_written_differently_is_within_tolerance(tmp_path) -> None:
    result = compare(tmp_path, CURVES, CURVES.replace("bn,0,0,0.1,0.5", "bn,0,0,0.1,0.50"), {})
    assert result.status == "within tolerance" and not result.differences
    assert result.summary({}) == "the same values, written differently or in another order"


def test_a_difference_beyond_its_tolerance_names_file_row_and_values(tmp_path) -> None:
    rerun = CURVES.replace("bn,0,100,0.9,0.25", "bn,0,100,0.91,0.25")
    result = compare(tmp_path, CURVES, rerun)
    assert result.status == "differs"
    assert result.differences == ["curves.csv variant=bn, seed=0, step=100: test_acc 0.9 vs 0.91"]


def test_a_column_without_tolerance_must_match_exactly(tmp_path) -> None:
    result = compare(tmp_path, CURVES, CURVES.replace("plain,0,0,", "plain,0,0.0,"))
    assert result.status == "differs"
    # `step` is part of the row key: the row is another one, not the same with another value.
    assert result.differences == [
        "curves.csv variant=plain, seed=0, step=0: missing in the rerun",
        "curves.csv variant=plain, seed=0, step=0.0: extra row in the rerun",
    ]


def test_a_missing_row(tmp_path) -> None:
    result = compare(tmp_path, CURVES, CURVES.replace("bn,0,100,0.9,0.25\n", ""))
    assert result.status == "differs"
    assert result.differences == ["curves.csv variant=bn, seed=0, step=100: missing in the rerun"]


def test_an_extra_column(tmp_path) -> None:
    rerun = "".join(
        line.rstrip("\n") + (",wall_s\n" if i == 0 else ",1.5\n")
        for i, line in enumerate(CURVES.splitlines(keepends=True))
    )
    result = compare(tmp_path, CURVES, rerun)
    assert result.status == "differs"
    assert result.differences == ["curves.csv: extra column wall_s in the rerun"]


def test_text_and_empty_values(tmp_path) -> None:
    committed = "variant,status,max_acc\na,completed,0.5\nb,diverged,\n"
    rerun = "variant,status,max_acc\na,diverged,0.5\nb,diverged,0.1\n"
    result = compare(tmp_path, committed, rerun, {"curves.csv": {"max_acc": 1.0}})
    assert result.differences == [
        "curves.csv variant=a: status completed vs diverged",
        "curves.csv variant=b: max_acc empty vs 0.1",
    ]


def test_rows_without_a_key_are_matched_by_line(tmp_path) -> None:
    committed = "x,y\n1,2\n1,2\n"
    result = compare(tmp_path, committed, "x,y\n1,2\n1,3\n", {})
    assert result.differences == ["curves.csv line 3: y 2 vs 3"]
    result = compare(tmp_path, committed, "x,y\n1,2\n", {})
    assert result.differences == ["curves.csv line 3: missing in the rerun"]


def test_a_file_only_one_side_has(tmp_path) -> None:
    (tmp_path / "committed").mkdir()
    (tmp_path / "rerun").mkdir()
    (tmp_path / "committed" / "a.csv").write_text("x\n1\n")
    (tmp_path / "rerun" / "b.csv").write_text("x\n1\n")
    result = verify.compare_folders(tmp_path / "committed", tmp_path / "rerun", {})
    assert result.status == "differs"
    assert result.differences == [
        "a.csv: not written by the rerun",
        "b.csv: written by the rerun, not committed",
    ]


def test_every_driver_states_tolerances_for_its_own_columns() -> None:
    """TOLERANCES name CSV files the committed artifact holds and columns those files have."""
    for name in ("figure1", "figure2"):
        tolerances = verify.load_driver(name).TOLERANCES
        for file, columns in tolerances.items():
            header = (REPO / "results" / name / file).read_text().splitlines()[0].split(",")
            assert set(columns) <= set(header), (name, file)
            assert all(0 < t < 1 for t in columns.values()), (name, file)


def run_verify(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "experiments/verify.py", *args],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--only", "figure9"], "--only names figure9, not an artifact of results/"),
        (["--collect", "figure1"], "--collect 'figure1' names no runs directory"),
        (["--only", "figure1", "--collect", "figure2=x"], "not an artifact being verified"),
    ],
    ids=["unknown artifact", "no runs dir", "not verified"],
)
def test_bad_options_are_refused(args, expected) -> None:
    result = run_verify(*args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("bnrepro: ") and "Fix: " in result.stderr
    assert expected in result.stderr


@pytest.mark.integration
def test_quick_figure1_end_to_end(tmp_path, mnist_root, monkeypatch) -> None:
    """The quick protocol reruns to the committed reference (byte for byte on the CPU model
    that made it, within TOLERANCES on another: CPU kernels round differently); collecting the
    same runs again gives the same; a reference that no longer matches is reported and fails."""
    scratch = tmp_path / "scratch"
    result = run_verify("--quick", "--only", "figure1", "--scratch", str(scratch))
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\| figure1 \| (identical|within tolerance) \|", result.stdout)
    provenance = json.loads((scratch / "figure1" / "provenance.json").read_text())
    assert (
        "wall_s" in provenance and "wall_s" not in (scratch / "figure1" / "summary.csv").read_text()
    )

    runs = scratch / "runs" / "figure1"
    again = run_verify(
        "--quick",
        "--only",
        "figure1",
        "--collect",
        f"figure1={runs}",
        "--scratch",
        str(tmp_path / "b"),
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert re.search(r"\| figure1 \| (identical|within tolerance) \|", again.stdout)
    for name in ("curves.csv", "summary.csv"):  # collecting the same runs: the same bytes
        assert (tmp_path / "b" / "figure1" / name).read_bytes() == (
            scratch / "figure1" / name
        ).read_bytes()

    reference = tmp_path / "reference"
    shutil.copytree(REPO / "results" / "reference", reference)
    summary = reference / "figure1" / "summary.csv"
    summary.write_text(summary.read_text().replace("bn,1,", "bn,7,"))
    monkeypatch.setattr(verify, "REFERENCE", reference)
    (tmp_path / "c").mkdir()
    outcome = verify.verify("figure1", tmp_path / "c", quick=True, runs=runs)
    assert outcome.status == "differs"
    assert outcome.detail.startswith("summary.csv variant=bn, seed=7: missing in the rerun")
