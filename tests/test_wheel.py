"""bnrepro installed as a user installs it, outside the clone: `pip wheel` builds the wheel from
the clone's sources, a fresh virtual environment in a temporary folder installs it, and from
another folder `bnrepro` trains a tiny run into that folder's runs/, lists its commands, shows
the training app's help and completes its overrides. The environment reaches torch and the
other dependencies in this one's site-packages through a .pth file (nothing is downloaded),
and its `bnrepro` is the wheel's: this environment's PYTHONPATH and editable install are not
on its path. `pip install -e` of a copy of the clone is checked the same way: its configs are
the copy's."""

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
from conftest import REPO
from omegaconf import OmegaConf

from bnrepro import verdicts
from bnrepro.driver import DRIVERS

pytestmark = pytest.mark.integration

SOURCES = ("pyproject.toml", "README.md", "LICENSE", "src", "configs", "thresholds")
TINY_RUN = [
    "steps=20", "eval_every=10", "seeds=[0]", "device=cpu", "checkpoint_every=0",
    "logger.wandb.mode=disabled", "logger.tensorboard=false",
]  # fmt: skip


def copy_sources(target: Path) -> Path:
    """What a build reads from the clone, copied (the links src/bnrepro/configs and
    src/bnrepro/thresholds kept links)."""
    target.mkdir()
    for name in SOURCES:
        source = REPO / name
        if source.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
            shutil.copytree(source, target / name, symlinks=True, ignore=ignore)
        elif source.exists():
            shutil.copy2(source, target / name)
    return target


def environment(data: Path) -> dict[str, str]:
    """This process's environment without its path to the clone's sources."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return {**env, "BNREPRO_DATA": str(data.resolve())}


def run(command: list, cwd: Path, env: dict[str, str], timeout: int = 300):
    done = subprocess.run(
        [str(word) for word in command], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done


def fresh_venv(folder: Path, env: dict[str, str]) -> Path:
    """A virtual environment whose path also holds this one's site-packages; its python."""
    venv.EnvBuilder(with_pip=False).create(folder)
    python = folder / "bin" / "python"
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
               folder, env).stdout.strip()  # fmt: skip
    ours = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (Path(site) / "outer-site-packages.pth").write_text("\n".join(ours) + "\n")
    return python


def offline_build() -> list[str]:
    """Builds with this environment's setuptools where it has one, else from PyPI."""
    return ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []


def pip_install(python: Path, cwd: Path, env: dict[str, str], *what: str) -> None:
    """`what` installed into `python`'s environment alone: --ignore-installed, so that pip
    never uninstalls the bnrepro it sees through the .pth file from this environment."""
    command = ["-m", "pip", "install", "--no-deps", "--ignore-installed", *offline_build()]
    run([python, *command, *what], cwd, env)


@pytest.fixture(scope="module")
def installed(tmp_path_factory, mnist_root):
    """The wheel in a fresh environment: its `bnrepro`, the folder it runs in, its env."""
    tmp = tmp_path_factory.mktemp("wheel")
    env = environment(mnist_root)
    sources = copy_sources(tmp / "sources")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", *offline_build(), "-w",
         tmp / "dist", sources], tmp, env)  # fmt: skip
    (wheel,) = (tmp / "dist").glob("bnrepro-*.whl")
    python = fresh_venv(tmp / "venv", env)
    pip_install(python, tmp, env, str(wheel))
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    return python.parent / "bnrepro", python, elsewhere, env


def test_the_installed_package_is_the_wheels_and_knows_it_is_outside_a_clone(installed):
    bnrepro, python, elsewhere, env = installed
    said = run([python, "-c", "import bnrepro.paths as p; print(p.__file__, p.CLONE, p.REPO, "
                "p.CONFIGS)"], elsewhere, env).stdout.split()  # fmt: skip
    venv_dir = python.parents[1]
    assert Path(said[0]).is_relative_to(venv_dir)
    assert said[1:3] == ["None", str(elsewhere)]
    assert Path(said[3]).is_relative_to(venv_dir) and (Path(said[3]) / "train.yaml").is_file()


def test_bnrepro_train_trains_into_the_current_directory(installed):
    bnrepro, _, elsewhere, env = installed
    done = run([bnrepro, "train", *TINY_RUN], elsewhere, env)
    assert "completed" in done.stdout
    (metrics,) = (elsewhere / "runs" / "train").glob("*/metrics.csv")
    assert len(metrics.read_text().splitlines()) > 2
    config = OmegaConf.load(metrics.parent / "config.yaml")
    assert config.paths.root == str(elsewhere) and config.data.root == env["BNREPRO_DATA"]


def test_bnrepro_help_lists_the_drivers_and_train_help_the_apps_options(installed):
    bnrepro, _, elsewhere, env = installed
    listed = run([bnrepro, "--help"], elsewhere, env).stdout
    assert all(f"\n  {name} " in listed for name in DRIVERS)
    app = run([bnrepro, "train", "--help"], elsewhere, env).stdout
    assert "mlp_bn" in app  # the model group's options, read from the wheel's configs


def test_the_wheel_judges_claims_by_the_clones_thresholds(installed):
    """The claims drivers read their thresholds from the package, so they judge outside a
    clone as in one."""
    _, python, elsewhere, env = installed
    keys = sorted(f"{p.parent.name}/{p.stem}" for p in (REPO / "thresholds").glob("*/*.yaml"))
    code = (
        "import sys; from bnrepro import verdicts\n"
        "for key in sys.argv[1:]: print(verdicts.load(*key.split('/')).text)"
    )
    shown = run([python, "-c", code, *keys], elsewhere, env).stdout.splitlines()
    assert shown == [verdicts.load(*key.split("/")).text for key in keys] and len(keys) > 20


def test_completion_installs_for_bnrepro_and_completes_the_apps_overrides(installed):
    bnrepro, _, elsewhere, env = installed
    script = run([bnrepro, "train", "-sc", "install=bash"], elsewhere, env).stdout
    assert script.rstrip().endswith("-F hydra_bash_completion bnrepro")
    env = {**env, "PATH": f"{bnrepro.parent}:{env['PATH']}", "COMP_LINE": "bnrepro train mo"}
    assert "model=" in run([bnrepro, "-sc", "query=bash"], elsewhere, env).stdout.split()


def test_an_editable_install_reads_the_clones_configs(tmp_path, mnist_root):
    env = environment(mnist_root)
    clone = copy_sources(tmp_path / "clone")
    python = fresh_venv(tmp_path / "venv", env)
    pip_install(python, tmp_path, env, "-e", str(clone))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    said = run([python, "-c", "import bnrepro.paths as p; print(p.CLONE, p.CONFIGS)"],
               elsewhere, env).stdout.split()  # fmt: skip
    assert said == [str(clone), str(clone / "configs")]
    job = run([python.parent / "bnrepro", "train", "--cfg", "job", "--resolve"], elsewhere, env)
    assert OmegaConf.create(job.stdout).paths.runs == str(clone / "runs")
