"""`bnrepro <command> [arguments ...]`: the suite's one command, installed by `pip install .`.

Each command is a tool of the suite, handed the rest of the line as its own arguments:
`bnrepro train ...` is the Hydra training app (`python -m bnrepro.train ...`), `bnrepro figure1
run ...` a driver (`python experiments/figure1.py run ...`), and so on for COMMANDS. This module
only dispatches: it imports the one module a command runs, so `bnrepro --help` starts at once,
without torch. The commands that work on a clone's committed files (CLONE_ONLY) refuse to start
outside one.

Hydra's shell completion: `eval "$(bnrepro train -sc install=bash)"` makes bash complete the
word `bnrepro` by running `bnrepro -sc query=bash` with the line typed so far in COMP_LINE.
That query completes the command's name while the first word is typed, the training app's
groups and keys after `train` (Hydra's own completion, given the line without `train`), and
leaves the words of any other command to the shell's file-name completion.
"""

import difflib
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from bnrepro.paths import CLONE

# command -> (the function it runs, "module:function" or the driver's name; its line in --help)
COMMANDS = {
    "train": ("bnrepro.train:cli", "train one run, or a sweep with -m: the Hydra app"),
    "figure1": ("figure1", "Figure 1 on MNIST, with and without BN: run|collect|draw"),
    "figure2": ("figure2", "Figures 2 and 3, Inception variants on a proxy: run|collect|draw"),
    "sensitivity": ("sensitivity", "Figure 1 over optimizer, lr and init std: run|collect|draw"),
    "ics": ("ics", "internal covariate shift tests on the MNIST net: run|collect|draw"),
    "ics_proxy": ("ics_proxy", "internal covariate shift tests on the proxy: run|collect|draw"),
    "claims": ("claims", "claims about the BN transform, measured: run|draw"),
    "plot": ("bnrepro.plot:main", "curves of your own runs: bnrepro plot <sweep dir>"),
    "fetch": ("bnrepro.fetch:main", "fetch and check MNIST and Fashion-MNIST"),
    "verify": ("bnrepro.verify:main", "rerun the committed results and compare them"),
    "docs": ("bnrepro.docs:main", "rewrite the numbers README.md and docs/ quote"),
    "campaign": ("bnrepro.campaign:main", "a long plan of runs that resumes: run|status"),
}
CLONE_ONLY = ("verify", "docs", "campaign")
COMPLETION_FLAGS = ("-sc", "--shell-completion")


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(
        [
            "usage: bnrepro <command> [arguments ...]",
            "",
            "The Batch Normalization reproduction suite, a command per tool. `bnrepro <command>",
            "--help` describes one; `bnrepro train --help` lists the training app's config groups.",
            "",
            "commands:",
            *lines,
            "",
            'Shell completion (bash): eval "$(bnrepro train -sc install=bash)"',
        ]
    )


def refuse(message: str) -> NoReturn:
    print(f"bnrepro: {message}", file=sys.stderr)
    sys.exit(2)


def run(command: str, arguments: Sequence[str]) -> NoReturn:
    """Runs `command` with `arguments` as its command line (sys.argv[1:]) and exits with the
    status it returns or exits with."""
    if command in CLONE_ONLY and CLONE is None:
        refuse(
            f"`bnrepro {command}` works on the files of a clone of the repository (its "
            "results/, docs/ and experiments/), and this bnrepro is installed outside one. "
            "Nothing was run. Fix: run it in a clone, with bnrepro installed from there "
            "(`pip install -e .`)."
        )
    target = COMMANDS[command][0]
    sys.argv = [sys.argv[0], *arguments]
    if ":" in target:
        module, name = target.split(":")
        function = getattr(importlib.import_module(module), name)
    else:
        from bnrepro.experiments import driver

        function = driver(target).main
    sys.exit(function())


def complete(arguments: Sequence[str]) -> None:
    """Answers the shell's completion query (see the module docstring)."""
    line = os.environ.get("COMP_LINE", "")
    words = line.split()
    new_word = line.endswith(" ")
    if len(words) + new_word <= 2:
        typed = "" if new_word or len(words) < 2 else words[1]
        print(" ".join(name for name in COMMANDS if name.startswith(typed)))
        return
    if words[1] == "train":
        os.environ["COMP_LINE"] = " ".join([words[0], *words[2:]]) + " " * new_word
        run("train", arguments)


def main(argv: Sequence[str] | None = None) -> None:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or arguments[0] in ("-h", "--help"):
        print(usage())
        return
    command, rest = arguments[0], arguments[1:]
    if command in COMPLETION_FLAGS and any(word.startswith("query=") for word in rest):
        complete(arguments)
        return
    if command in COMPLETION_FLAGS:
        run("train", arguments)
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, COMMANDS, n=1)
        refuse(
            f"{command!r} is not a command of bnrepro. Nothing was run. Fix: "
            + (f"did you mean `bnrepro {close[0]}`? " if close else "")
            + f"The commands are {', '.join(COMMANDS)} (`bnrepro --help` says what each does)."
        )
    run(command, rest)
