"""requirements.lock against pyproject.toml: every dependency the project declares (its dev
tools included) is pinned for every supported Python, at a version pyproject.toml allows, so
an edit of pyproject.toml without `make lock` fails here; its matplotlib is the one that drew
the committed figures; and the pre-commit hooks run the lock's ruff, the one `make lint` runs."""

import re
import sys

import pytest
from conftest import REPO
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: pytest's own TOML reader
    import tomli as tomllib

PYTHONS = ("3.10.13", "3.11.7", "3.12.1", "3.13.0")
PLATFORMS = {
    "linux": {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix"},
    "macos": {"sys_platform": "darwin", "platform_system": "Darwin", "os_name": "posix"},
    "windows": {"sys_platform": "win32", "platform_system": "Windows", "os_name": "nt"},
}


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def declared() -> list[Requirement]:
    table = project()
    return [Requirement(r) for r in table["dependencies"] + table["optional-dependencies"]["dev"]]


def pins(python: str, platform: str) -> dict[str, Version]:
    """The lock's pins that apply on `python` and `platform` (x86_64, CPython)."""
    env = {
        "python_version": python.rpartition(".")[0],
        "python_full_version": python,
        "platform_machine": "x86_64",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        **PLATFORMS[platform],
    }
    found = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if not line or line.startswith(("#", " ")):
            continue
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate(env):
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", f"not an exact pin in requirements.lock: {line}"
            name = canonicalize_name(requirement.name)
            assert name not in found, f"{name} pinned twice for Python {python} on {platform}"
            found[name] = Version(specifier.version)
    return found


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
@pytest.mark.parametrize("python", PYTHONS)
def test_the_lock_pins_every_declared_dependency_at_an_allowed_version(python, platform):
    locked = pins(python, platform)
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is not in requirements.lock: run `make lock`"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"requirements.lock pins {name}=={locked[name]} for Python {python}, which "
            f"pyproject.toml's {requirement} excludes: run `make lock`"
        )


def figure_versions() -> set[str]:
    """The matplotlib versions that drew the committed figures, as each PNG and PDF records."""
    recorded = re.compile(rb"Matplotlib (?:version|pdf backend v)(\d+(?:\.\d+)+)")
    found = set()
    for path in sorted((REPO / "results").rglob("*")):
        if path.suffix in (".png", ".pdf"):
            match = recorded.search(path.read_bytes())
            assert match, f"{path} does not record the matplotlib that drew it"
            found.add(match.group(1).decode())
    return found


def test_the_lock_pins_the_matplotlib_that_drew_the_committed_figures():
    """The committed PNG and PDF bytes depend on matplotlib's version: `make figures` redraws
    them byte-identically with the lock's, on Python 3.11 (the one `make venv` prefers)."""
    assert figure_versions() == {str(pins("3.11.7", "linux")["matplotlib"])}


def test_the_floors_are_the_versions_python_3_10_gets():
    """pyproject.toml's floors for the packages the results depend on are those the lock
    gives Python 3.10 (up to the patch release): the oldest versions the suite is run with."""
    oldest = pins("3.10.13", "linux")
    floors = {
        canonicalize_name(r.name): Version(s.version)
        for r in declared()
        for s in r.specifier
        if s.operator == ">="
    }
    for name in ("numpy", "pandas", "matplotlib"):
        assert floors[name].release[:2] == oldest[name].release[:2], name


def test_pre_commit_runs_the_locked_ruff():
    config = (REPO / ".pre-commit-config.yaml").read_text()
    hooks = re.findall(r'"ruff==([^"]+)"', config)
    assert hooks and set(hooks) == {str(pins("3.11.7", "linux")["ruff"])}
