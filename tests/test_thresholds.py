"""Each claim's threshold is a file of its own (thresholds/<driver>/<key>.yaml), and
every committed claims.csv says, from git, when that file was committed against the commit
its runs were made from. These tests check what the rows say against git itself, so a row
cannot claim "before the runs" unless the history shows it; outside a git clone they skip."""

import json
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO

from bnrepro import verdicts
from bnrepro.experiments.claims import analysis as claims
from bnrepro.experiments.ics import analysis as ics
from bnrepro.experiments.ics import proxy_analysis as ics_proxy

# Every committed claims.csv and the analysis of the driver that judged it.
FOLDERS = {
    "results/claims": claims,
    "results/ics": ics,
    "results/ics/proxy": ics_proxy,
    "results/reference/claims": claims,
    "results/reference/ics": ics,
    "results/reference/ics/proxy": ics_proxy,
}
STAMP = r"(?P<{0}>[0-9a-f]{{7}}) \((?P<{0}_date>\d{{4}}-\d{{2}}-\d{{2}} \d{{2}}:\d{{2}})\)"
BEFORE = re.compile(f"threshold {STAMP.format('file')} before the runs' {STAMP.format('runs')}")
AFTER = re.compile(
    f"threshold {STAMP.format('file')} committed after the runs' {STAMP.format('runs')}"
)
CHANGED = re.compile(
    f"threshold changed after the runs' {STAMP.format('runs')}: was (?P<relation>[<>]=?) "
    r"(?P<value>\S+) \((?P<file>[0-9a-f]{7}), (?P<file_date>[\d-]+ [\d:]+)\), giving "
    r"(?P<verdict>pass|fail|inconclusive)"
)


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)


def ancestor(older: str, newer: str) -> bool:
    """Whether `older` is `newer` or one of its ancestors."""
    return git("merge-base", "--is-ancestor", older, newer).returncode == 0


def commit_date(commit: str) -> str:
    shown = git("show", "-s", "--format=%cd", "--date=format-local:%Y-%m-%d %H:%M", commit)
    return shown.stdout.strip()


def file_at(paths: tuple[str, ...], commit: str) -> str | None:
    """Which of `paths` (a threshold file in each folder it has been kept in) `commit` has."""
    return next((p for p in paths if git("cat-file", "-e", f"{commit}:{p}").returncode == 0), None)


def first_of_value(paths: tuple[str, ...], commit: str) -> str:
    """The oldest commit of the file's history (at any of `paths`) at or before `commit` from
    which it has held the relation and value it holds at `commit`, read with git and yaml
    alone."""

    def held(at: str):
        shown = git("show", f"{at}:{file_at(paths, at)}")
        data = yaml.safe_load(shown.stdout) if shown.returncode == 0 else None
        return (data["relation"], float(data["value"])) if isinstance(data, dict) else None

    history = git("log", "--format=%H", commit, "--", *paths).stdout.split()
    first = history[0]
    for older in history[1:]:
        if held(older) != held(history[0]):
            break
        first = older
    return first


@pytest.fixture(scope="module", autouse=True)
def clone() -> None:
    if not verdicts.has_history():
        pytest.skip("not a git clone (or git is missing): no history to check the order against")


@pytest.mark.parametrize("folder", FOLDERS)
def test_each_row_says_what_git_says_of_its_threshold(folder: str, monkeypatch) -> None:
    monkeypatch.setenv("TZ", "UTC")  # dates as the rows show them
    path = REPO / folder
    table = pd.read_csv(path / "claims.csv")
    runs = json.loads((path / "provenance.json").read_text())["git"]["commit"]
    if git("cat-file", "-e", f"{runs}^{{commit}}").returncode != 0:
        pytest.skip(f"{folder}'s runs' commit {runs[:7]} is not in this clone")
    found = FOLDERS[folder].judged(path)
    assert list(table.claim) == [getattr(c, "claim", None) or c.text for c in found]
    for row, judged in zip(table.itertuples(), found, strict=True):
        paths = judged.threshold.paths
        fixed = row.threshold_fixed
        match = BEFORE.fullmatch(fixed) or AFTER.fullmatch(fixed) or CHANGED.fullmatch(fixed)
        assert match, f"{folder}: {row.claim}: {fixed!r} is none of the dated forms"
        assert runs.startswith(match["runs"]) and match["runs_date"] == commit_date(runs)
        assert match["file_date"] == commit_date(match["file"])
        if match.re is AFTER:
            assert file_at(paths, runs) is None, (folder, paths)
            assert first_of_value(paths, "HEAD").startswith(match["file"]), (folder, paths)
            continue
        # the value the file held at the runs' commit, dated by its first commit
        assert ancestor(match["file"], runs), (folder, row.claim, fixed)
        assert first_of_value(paths, runs).startswith(match["file"]), (folder, row.claim, fixed)
        first = match["file"]
        stated = yaml.safe_load(git("show", f"{first}:{file_at(paths, first)}").stdout)
        then = f"{stated['relation']} {stated['value']:g}"
        if match.re is BEFORE:
            assert then == row.threshold, (folder, row.claim, fixed)
        else:
            assert then == f"{match['relation']} {match['value']}" != row.threshold
            earlier = verdicts.Threshold("", "", "", stated["relation"], float(stated["value"]))
            assert judged.verdict(earlier) == match["verdict"]


@pytest.mark.parametrize("folder", FOLDERS)
def test_the_runs_precede_the_commit_of_their_claims(folder: str) -> None:
    """The commit the runs were made from is an ancestor of the commit that last changed the
    folder's claims.csv: results are committed after the runs that made them."""
    path = Path(folder) / "claims.csv"
    last = git("log", "-1", "--format=%H", "--", path.as_posix()).stdout.strip()
    if not last:
        pytest.skip(f"{path} is not committed yet")
    runs = json.loads((REPO / folder / "provenance.json").read_text())["git"]["commit"]
    if git("cat-file", "-e", f"{runs}^{{commit}}").returncode != 0:
        pytest.skip(f"{folder}'s runs' commit {runs[:7]} is not in this clone")
    assert ancestor(runs, last), (folder, runs[:7], last[:7])


def test_every_threshold_file_states_a_claim_a_relation_a_value_and_why() -> None:
    """Each file parses, names its claim and holds a comment saying why that value."""
    files = sorted((REPO / verdicts.THRESHOLDS).glob("*/*.yaml"))
    assert {f.parent.name for f in files} == {"claims", "ics", "ics_proxy"}
    for file in files:
        threshold = verdicts.load(file.parent.name, file.stem)
        assert threshold.relation in verdicts.RELATIONS and threshold.claim, file
        assert file.read_text().startswith("# "), f"{file} says nothing of why its value"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("claim: x\nrelation: '=='\nvalue: 1\n", "relation is '==', not one of <, <=, >, >="),
        ("claim: x\nrelation: '<'\nvalue: one\n", "value is 'one', not a finite number"),
        ("claim: x\nrelation: '<'\nvalue: .inf\n", "value is inf, not a finite number"),
        ("relation: '<'\nvalue: 1\n", "claim is None, not a text"),
        ("- 1\n", "holds no mapping of claim, relation and value"),
        ("claim: [x\n", "is not YAML"),
    ],
    ids=["relation", "value", "infinite", "claim", "not a mapping", "not YAML"],
)
def test_a_bad_threshold_file_is_named_in_one_paragraph(text: str, problem: str) -> None:
    with pytest.raises(verdicts.ThresholdError) as error:
        verdicts.parse(text, "ics", "beta", "thresholds/ics/beta.yaml")
    message = str(error.value)
    assert problem in message and "thresholds/ics/beta.yaml" in message
    assert "Fix: " in message and "\n" not in message


def test_a_missing_threshold_file_is_named_with_its_fix() -> None:
    with pytest.raises(verdicts.ThresholdError, match="no_such_claim.yaml does not exist"):
        verdicts.load("ics", "no_such_claim")


def test_without_git_history_the_row_says_so(monkeypatch) -> None:
    """Outside a clone (or without git) nothing can be dated: the row says it is not
    recorded rather than guess."""
    monkeypatch.setattr(verdicts, "git", lambda *args: None)
    verdicts.has_history.cache_clear()
    try:
        threshold = verdicts.load("ics", "beta")
        assert verdicts.fixed(threshold, "0" * 40, lambda t: "pass") == verdicts.NO_HISTORY
    finally:
        verdicts.has_history.cache_clear()


def test_a_threshold_changed_after_the_runs_gives_its_earlier_outcome(tmp_path) -> None:
    """In a repository of its own: a threshold committed, runs made, then the threshold
    changed. The row names the runs, the earlier value and the verdict that value gives; a
    file first committed after the runs says so; one committed before them, unchanged, says
    before. Each is dated by the first commit of its relation and value: a comment reworded
    later does not move the date, a value tightened later does, and the move of the files
    from their former folder (verdicts.FOLDERS) to the one they are read from moves none."""
    repo = tmp_path / "repo"
    folder = repo / verdicts.FOLDERS[1] / "ics"
    folder.mkdir(parents=True)

    def commit(message: str) -> str:
        for args in (["add", "-A"], ["commit", "-q", "-m", message]):
            subprocess.run(["git", "-C", str(repo), *args], check=True, env=ENV)
        head = ["git", "-C", str(repo), "rev-parse", "HEAD"]
        return subprocess.run(head, capture_output=True, text=True, check=True).stdout.strip()

    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (folder / "beta.yaml").write_text("claim: beta\nrelation: '<'\nvalue: 1\n")
    (folder / "ics.yaml").write_text("claim: ics\nrelation: '>='\nvalue: 1\n")
    (folder / "accuracy.yaml").write_text("claim: acc\nrelation: '>='\nvalue: -0.05\n")
    first = commit("thresholds")
    (folder / "ics.yaml").write_text("# why 1\nclaim: ics\nrelation: '>='\nvalue: 1\n")
    (folder / "accuracy.yaml").write_text("claim: acc\nrelation: '>='\nvalue: -0.01\n")
    tightened = commit("ics's comment reworded, accuracy tightened")
    (folder / "accuracy.yaml").write_text("# why\nclaim: acc\nrelation: '>='\nvalue: -0.01\n")
    commit("accuracy's comment reworded")
    (repo / "runs.txt").write_text("the runs\n")
    runs = commit("runs")
    (folder / "beta.yaml").write_text("claim: beta\nrelation: '<'\nvalue: 2\n")
    (folder / "loss_range.yaml").write_text("claim: loss\nrelation: '<'\nvalue: 1\n")
    added = commit("beta loosened, loss range added")
    (folder / "loss_range.yaml").write_text("# why\nclaim: loss\nrelation: '<'\nvalue: 1\n")
    commit("loss range's comment reworded")
    (repo / verdicts.FOLDERS[1]).rename(repo / verdicts.THRESHOLDS)
    commit("thresholds moved")

    verdict = {1.0: "fail", 2.0: "pass"}  # a measured beta of 1.5 against each value
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(verdicts, "REPO", repo)
        patch.setattr(verdicts, "SHIPPED", repo / verdicts.THRESHOLDS)
        for cached in (verdicts.load, verdicts.has_history, verdicts.commit_stamp,
                       verdicts.value_since):  # fmt: skip
            cached.cache_clear()
        try:
            texts = {
                key: verdicts.fixed(verdicts.load("ics", key), runs, lambda t: verdict[t.value])
                for key in ("beta", "ics", "accuracy", "loss_range")
            }
        finally:
            for cached in (verdicts.load, verdicts.has_history, verdicts.commit_stamp,
                           verdicts.value_since):  # fmt: skip
                cached.cache_clear()
    date = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}"
    stamp = f"{runs[:7]} \\({date}\\)"
    assert re.fullmatch(
        f"threshold changed after the runs' {stamp}: was < 1 \\({first[:7]}, {date}\\), "
        "giving fail",
        texts["beta"],
    ), texts["beta"]
    # dated by the first commit of the value, not by the comment reworded after it
    assert re.fullmatch(
        f"threshold {first[:7]} \\({date}\\) before the runs' {stamp}", texts["ics"]
    ), texts["ics"]
    assert re.fullmatch(
        f"threshold {tightened[:7]} \\({date}\\) before the runs' {stamp}", texts["accuracy"]
    ), texts["accuracy"]
    assert re.fullmatch(
        f"threshold {added[:7]} \\({date}\\) committed after the runs' {stamp}",
        texts["loss_range"],
    ), texts["loss_range"]


ENV = {
    "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.org", "PATH": "/usr/bin:/bin", "HOME": "/tmp",
}  # fmt: skip
