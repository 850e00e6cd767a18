"""How a measured claim is judged against its threshold, and the claims.csv row that says so.

The drivers that test claims (bnrepro.experiments.claims, ics, ics_proxy) write claims.csv
files with the same columns and decide their verdicts by the same rule: a claim passes when
every number it is judged on (each seed's, or both ends of an interval) meets its threshold,
fails when none does, and is inconclusive when they disagree. Keeping the rule and the row
here means one claims.csv reads like another, and a verdict cannot mean one thing in one
results folder and another elsewhere.

Each threshold is a file of its own, thresholds/<driver>/<key>.yaml: the claim, the relation
and value it is judged against, and a comment saying why that value. They are kept apart from
configs/, whose folders are the training command's config groups. A file of its
own has a history of its own, so whether a threshold was written before the runs it judges is
a fact git can tell, not a sentence a driver asserts: `fixed` reads it from git for the
`threshold_fixed` column, from the commit the runs were made from (provenance.json's
git.commit). A threshold is dated by the first commit whose file holds its relation and value
(`value_since`), not by the file's last change: a reworded comment is not a new threshold, and
a value is not older than the first commit that states it; a file is followed across the
folders it has been kept in (`FOLDERS`). The text names commits and dates,
so it is provenance, not a result: `make verify` does not compare it
(bnrepro.verify.PROVENANCE_COLUMNS).
"""

import math
import operator
import os
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from bnrepro.errors import BnreproError
from bnrepro.paths import REPO

THRESHOLDS = Path("thresholds")  # relative to the repository, as git names it
# The files as the package reads them: src/bnrepro/thresholds links to the clone's folder, and a
# wheel holds a copy, so that the drivers judge their claims outside a clone too.
SHIPPED = Path(__file__).resolve().parent / "thresholds"
# Every folder the threshold files have been kept in, newest first, so that git dates a
# threshold across a move: configs/thresholds/ until the files left the training command's
# config groups.
FOLDERS = (THRESHOLDS, Path("configs") / "thresholds")
RELATIONS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
FIXED_COLUMN = "threshold_fixed"
NO_HISTORY = "not recorded (no git history)"
# Dates as git records them, in UTC, so that a folder redraws the same text in any time zone.
DATE_FORMAT = "format-local:%Y-%m-%d %H:%M"


class ThresholdError(BnreproError):
    """A threshold file that is missing or does not hold a claim, a relation and a value."""


@dataclass(frozen=True)
class Threshold:
    """One claim's threshold as its file states it: `claim` (the claim's text, with {names}
    its driver fills in), `relation` (one of RELATIONS) and `value`."""

    driver: str
    key: str
    claim: str
    relation: str
    value: float

    @property
    def path(self) -> Path:
        """The file, relative to the repository."""
        return THRESHOLDS / self.driver / f"{self.key}.yaml"

    @property
    def paths(self) -> tuple[str, ...]:
        """The file in each folder of FOLDERS, as git names it: where its history is."""
        return tuple((folder / self.driver / f"{self.key}.yaml").as_posix() for folder in FOLDERS)

    @property
    def text(self) -> str:
        """The threshold as claims.csv shows it, e.g. `>= -0.01`."""
        return f"{self.relation} {self.value:g}"

    def meets(self, measured: float) -> bool:
        """Whether `measured` meets this threshold."""
        return RELATIONS[self.relation](measured, self.value)


def parse(text: str, driver: str, key: str, where: str) -> Threshold:
    """The Threshold a threshold file's `text` states; `where` names the file in errors."""
    fix = (
        f"give {where} the keys claim (the claim's text), relation (one of "
        f"{', '.join(RELATIONS)}) and value (a finite number), as the other files of "
        f"{THRESHOLDS / driver} do"
    )
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        problem = str(error).splitlines()[0]
        raise ThresholdError(f"{where} is not YAML ({problem}). Fix: {fix}.") from None
    if not isinstance(data, dict):
        raise ThresholdError(f"{where} holds no mapping of claim, relation and value. Fix: {fix}.")
    claim, relation, value = data.get("claim"), data.get("relation"), data.get("value")
    problems = []
    if not isinstance(claim, str) or not claim.strip():
        problems.append(f"claim is {claim!r}, not a text")
    if relation not in RELATIONS:
        problems.append(f"relation is {relation!r}, not one of {', '.join(RELATIONS)}")
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        problems.append(f"value is {value!r}, not a finite number")
    if problems:
        raise ThresholdError(f"{where}: {'; '.join(problems)}. Fix: {fix}.")
    return Threshold(driver, key, claim.strip(), relation, float(value))


@cache
def load(driver: str, key: str) -> Threshold:
    """The threshold of `driver`'s claim `key`, read from its file."""
    path = SHIPPED / driver / f"{key}.yaml"
    if not path.is_file():
        raise ThresholdError(
            f"{path.resolve()} does not exist: {driver}'s claim {key!r} has no threshold. "
            f"Fix: restore it with `git checkout -- {THRESHOLDS / driver}`, or write it (claim, "
            "relation, value, and a comment saying why that value) before the runs it judges."
        )
    return parse(path.read_text(), driver, key, str(path))


def verdict(meets: Iterable[bool]) -> str:
    """pass when every one of `meets` holds, fail when none does, inconclusive otherwise."""
    found = set(meets)
    return "pass" if found == {True} else "fail" if found == {False} else "inconclusive"


def row(claim: str, measured: Any, threshold: Threshold, judged: str, fixed_text: str) -> dict:
    """A claims.csv row: the claim, the number as shown, its threshold, verdict `judged` and
    `fixed_text`, what git says of when the threshold was written (`fixed`)."""
    return {
        "claim": claim,
        "measured": measured,
        "threshold": threshold.text,
        "verdict": judged,
        FIXED_COLUMN: fixed_text,
    }


# ---------------------------------------------------------------- when a threshold was fixed


def git(*args: str) -> str | None:
    """git's output for `args` in the repository, stripped; None when git is missing or
    fails (not a clone, an unknown commit, a path never committed)."""
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            env={**os.environ, "TZ": "UTC"},
            check=False,
        )
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@cache
def has_history() -> bool:
    return git("rev-parse", "--is-inside-work-tree") == "true"


def stamp(log_line: str) -> tuple[str, str]:
    """(full hash, 'short hash (date)') of a `git log --format=%H %cd` line."""
    commit, _, date = log_line.partition(" ")
    return commit, f"{commit[:7]} ({date})"


@cache
def commit_stamp(commit: str) -> tuple[str, str] | None:
    """`commit` as (full hash, 'short hash (date)'), or None when this clone lacks it."""
    line = git("log", "-1", "--format=%H %cd", f"--date={DATE_FORMAT}", f"{commit}^{{commit}}")
    return stamp(line) if line else None


@cache
def file_at(path: str, commit: str) -> tuple[str, str] | None:
    """The last commit at or before `commit` that changed `path`, as commit_stamp gives it."""
    line = git("log", "-1", "--format=%H %cd", f"--date={DATE_FORMAT}", commit, "--", path)
    return stamp(line) if line else None


def located(paths: tuple[str, ...], commit: str) -> str | None:
    """Which of `paths` (one threshold file in each folder it has been kept in) exists at
    `commit`; None where none does."""
    return next((path for path in paths if git("cat-file", "-e", f"{commit}:{path}") == ""), None)


def stated(paths: tuple[str, ...], commit: str) -> tuple[str, float] | None:
    """The (relation, value) the threshold file (at whichever of `paths` it has there) holds at
    `commit`; None where it does not exist there or does not hold a threshold."""
    path = located(paths, commit)
    if path is None:
        return None
    driver, key = Path(path).parent.name, Path(path).stem
    text = git("show", f"{commit}:{path}")
    try:
        found = parse(text, driver, key, path) if text is not None else None
    except ThresholdError:
        return None
    return (found.relation, found.value) if found else None


@cache
def value_since(paths: tuple[str, ...], commit: str) -> tuple[str, str] | None:
    """The first commit, at or before `commit`, from which the threshold file (at any of
    `paths`) has held the relation and value it holds at `commit` without a break, as
    commit_stamp gives it: the file's commits are walked from `commit` back to the last one
    that held another threshold (or none). None where it has no commit at or before
    `commit`."""
    lines = git("log", "--format=%H %cd", f"--date={DATE_FORMAT}", commit, "--", *paths)
    since, held = None, None
    for line in (lines or "").splitlines():
        found = stamp(line)
        now = stated(paths, found[0])
        if now is None or (since is not None and now != held):
            break
        since, held = found, now
    return since


def fixed(threshold: Threshold, runs_commit: Any, judge: Callable[[Threshold], str]) -> str:
    """When `threshold` was written, against the commit the runs were made from, from git;
    each threshold is dated by the first commit of its relation and value (`value_since`):

    - `threshold <hash> (<date>) before the runs' <hash> (<date>)`: the file as of the runs'
      commit holds the value used now, first committed at <hash>;
    - `threshold <hash> (<date>) committed after the runs' <hash> (<date>)`: the runs' commit
      has no such file; the hash is the first commit of the value the file holds now;
    - `threshold changed after the runs' <hash> (<date>): was <relation> <value> (<hash>,
      <date>), giving <verdict>`: the file at the runs' commit held another threshold, first
      committed at that hash, and `judge` (the claim's verdict against a threshold) says what
      that one gives;
    - `not recorded (...)`: no git history, no runs' commit, or one this clone lacks.
    """
    if not has_history():
        return NO_HISTORY
    if not isinstance(runs_commit, str) or not runs_commit:
        return "not recorded (provenance.json names no commit)"
    runs = commit_stamp(runs_commit)
    if runs is None:
        return f"not recorded (the runs' commit {runs_commit[:7]} is not in this clone)"
    paths = threshold.paths
    then = value_since(paths, runs[0])
    if then is None:
        now = value_since(paths, "HEAD")
        if now is None:
            return f"not recorded ({threshold.path.as_posix()} is not committed)"
        return f"threshold {now[1]} committed after the runs' {runs[1]}"
    path = located(paths, then[0]) or paths[0]
    earlier = parse(git("show", f"{then[0]}:{path}") or "", threshold.driver, threshold.key, path)
    if (earlier.relation, earlier.value) == (threshold.relation, threshold.value):
        return f"threshold {then[1]} before the runs' {runs[1]}"
    commit, date = then[1].split(" ", 1)
    return (
        f"threshold changed after the runs' {runs[1]}: was {earlier.text} ({commit}, "
        f"{date.strip('()')}), giving {judge(earlier)}"
    )


def runs_commit(provenance: dict) -> str | None:
    """The commit the runs were made from, as a results folder's provenance.json records it:
    what `fixed` dates each threshold against."""
    record = provenance.get("git")
    return record.get("commit") if isinstance(record, dict) else None
