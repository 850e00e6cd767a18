"""The `bnrepro` command (bnrepro.cli): a command for every driver and every tool the Makefile
runs, each reaching what it names; its help, its refusals, and its answers to the shell's
completion queries. tests/test_wheel.py runs it from an installed wheel."""

import os
import re
import sys

import pytest
from conftest import REPO

from bnrepro import cli
from bnrepro.driver import DRIVERS
from bnrepro.experiments import driver


def test_every_driver_and_every_tool_of_the_makefile_is_a_command() -> None:
    makefile = (REPO / "Makefile").read_text()
    tools = set(re.findall(r"-m bnrepro\.(\w+)", makefile))
    scripts = {name for name in re.findall(r"experiments/(\w+)\.py", makefile)}
    benchmarks = {name for name in scripts if name.startswith("bench")}  # clone-only scripts
    assert {"train", *DRIVERS, *tools, *(scripts - benchmarks)} == set(cli.COMMANDS)


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_each_command_reaches_its_function_and_names_its_actions(command: str) -> None:
    target, summary = cli.COMMANDS[command]
    if command in DRIVERS:
        actions = "run|collect|draw" if driver(target).collect else "run|draw"
        assert target == command and summary.endswith(actions)
    else:
        module, name = target.split(":")
        assert callable(getattr(__import__(module, fromlist=[name]), name))


def test_help_lists_every_command_with_its_line(capsys) -> None:
    cli.main(["--help"])
    shown = capsys.readouterr().out
    for command, (_, summary) in cli.COMMANDS.items():
        assert re.search(rf"^  {command} +{re.escape(summary)}$", shown, re.M)
    assert 'eval "$(bnrepro train -sc install=bash)"' in shown


def test_an_unknown_command_is_refused_naming_the_closest(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main(["figuer1", "run"])
    assert stop.value.code == 2
    said = capsys.readouterr().err
    assert "'figuer1' is not a command" in said and "`bnrepro figure1`" in said


def test_outside_a_clone_the_commands_on_its_files_refuse(monkeypatch, capsys) -> None:
    monkeypatch.setattr(cli, "CLONE", None)
    monkeypatch.setattr(sys, "argv", ["bnrepro", "docs", "--check"])
    for command in cli.CLONE_ONLY:
        with pytest.raises(SystemExit) as stop:
            cli.main([command])
        assert stop.value.code == 2
        assert f"`bnrepro {command}` works on the files of a clone" in capsys.readouterr().err
    assert sys.argv == ["bnrepro", "docs", "--check"]  # refused before it was handed on


def test_a_driver_gets_the_rest_of_the_line(monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["bnrepro"])
    with pytest.raises(SystemExit) as stop:
        cli.main(["figure1", "draw", "--steps", "5"])
    assert stop.value.code == 2
    assert "--steps: not taken by `draw`" in capsys.readouterr().err


def test_completion_names_the_commands_and_leaves_a_drivers_words_to_the_shell(
    monkeypatch, capsys
) -> None:
    answers = {}
    for line in ("bnrepro f", "bnrepro ", "bnrepro figure1 "):
        monkeypatch.setenv("COMP_LINE", line)
        cli.main(["-sc", "query=bash"])
        answers[line] = capsys.readouterr().out.split()
    assert answers == {
        "bnrepro f": ["figure1", "figure2", "fetch"],
        "bnrepro ": list(cli.COMMANDS),
        "bnrepro figure1 ": [],  # bash then completes file names
    }


def test_completion_after_train_is_hydras_given_the_line_without_train(monkeypatch) -> None:
    """Hydra's query drops the line's first word (the app) and completes the rest as
    overrides; tests/test_wheel.py sees its answer from an installed `bnrepro`."""
    handed = []

    def run(command, arguments):
        handed.append((command, list(arguments), os.environ["COMP_LINE"]))

    monkeypatch.setattr(cli, "run", run)
    for line in ("bnrepro train paths.r", "bnrepro train model=mlp "):
        monkeypatch.setenv("COMP_LINE", line)
        cli.main(["-sc", "query=bash"])
    assert handed == [
        ("train", ["-sc", "query=bash"], "bnrepro paths.r"),
        ("train", ["-sc", "query=bash"], "bnrepro model=mlp "),
    ]
