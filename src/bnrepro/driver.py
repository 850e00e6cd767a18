"""The frame every experiment driver shares: its command line, option checks, sweeps and records.

A driver (one module of bnrepro.experiments, started as `python experiments/<name>.py`)
declares a `Driver`: its name, where its results go, the options it takes beyond the common
ones with their committed-protocol and `--quick` values, its TOLERANCES for `make verify`,
and its actions:
- run(invocation): train into `invocation.runs` (through `multirun`, or in-process);
- collect(invocation): gather the finished runs under `invocation.runs` into CSV files in
  `invocation.out` (a driver whose `run` writes its CSV files itself has none);
- draw(out): figures and README.md from the CSV files in `out`, and nothing else.
`run` is followed by `collect` and `draw`, `collect` by `draw`.

The frame owns everything around them. One parser takes the common options (action,
`--quick`, `--out`, `--runs`) and the driver's; every value is checked before anything
starts, and a bad one (`--steps 0`, `--jobs -1`, a seed given twice, an option the action does
not take, a misspelt option, an `--out` that is a file, a GPU the machine does not have, an
override Hydra cannot read) is refused with one paragraph naming it and the fix, exit status
2, nothing written. While an action runs, a `BnreproError` (a bad input found later: a sweep
that is not whole, a damaged CSV file) ends it the same way, and `SweepFailed` (jobs of a sweep
failed) names each failed job with the first sentence of its error and exits with status 1.
Words that are not options go to every training run as Hydra overrides. SIGINT or SIGTERM
stops the driver and every process of its sweep (bnrepro.sweep), exit status 128 + its number.

A results folder is never replaced by runs of another protocol: before `collect` writes, the
protocol its provenance.json records (bnrepro.run_protocol: PROTOCOL_KEYS of the runs'
configs) is compared with that of the runs it gathers, and a difference is refused naming
both, unless `--replace`.
"""

import argparse
import json
import math
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd

from bnrepro import presets
from bnrepro.atomic import atomic_write_text
from bnrepro.errors import BnreproError
from bnrepro.hydra_callbacks import check_overrides
from bnrepro.paths import REPO, RESULTS, RUNS
from bnrepro.run_protocol import (
    PROTOCOL_KEYS,
    describe_protocol,
    recorded_protocol,
    trained_protocol,
)
from bnrepro.sweep import Stopped, SweepFailed, check_sweep_end, run_group
from bnrepro.tables import read_json

# The drivers, in the order `make verify` reruns them: module bnrepro.experiments.<name>.
DRIVERS = ("claims", "figure1", "figure2", "ics", "ics_proxy", "sensitivity")
ACTIONS = ("run", "collect", "draw")


class UsageError(BnreproError):
    """A bad option value on a driver's command line, found before anything started."""


# ---------------------------------------------------------------- option values


def positive_int(flag: str, what: str, example: int) -> Callable[[str], int]:
    """The parser of an option that takes a whole number above 0 (`what` it counts)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < 1:
            raise UsageError(
                f"{flag} {text} is not a number of {what}: it takes a whole number above 0. "
                f"Nothing was run or written. Fix: e.g. {flag} {example}, or leave {flag} out "
                "for the protocol's own value."
            )
        return value

    return parse


def seed_list(text: str) -> tuple[int, ...]:
    """`--seeds 0,1,2`: distinct whole numbers from 0 up, comma-separated."""
    words = [word.strip() for word in text.split(",")]
    if not all(re.fullmatch(r"\d+", word) for word in words):
        raise UsageError(
            f"--seeds {text!r} is not a list of seeds: it takes whole numbers from 0 up, "
            "separated by commas. Nothing was run or written. Fix: e.g. --seeds 0,1,2."
        )
    seeds = tuple(int(word) for word in words)
    # Imported here: bnrepro.config brings torch, which draw and collect start without.
    from bnrepro.config import MAX_SEED

    if max(seeds) > MAX_SEED:
        raise UsageError(
            f"--seeds {text} names the seed {max(seeds)}, above {MAX_SEED}, the largest seed a "
            "run takes (its random generators take 32 bits). Nothing was run or written. Fix: "
            f"give seeds from 0 to {MAX_SEED}, e.g. --seeds 0,1,2."
        )
    if len(set(seeds)) != len(seeds):
        raise UsageError(
            f"--seeds {text} names a seed twice: each seed is one run, and a second one would "
            "train the same run again. Nothing was run or written. Fix: name each seed once, "
            f"e.g. --seeds {','.join(map(str, sorted(set(seeds))))}."
        )
    return seeds


def value_list(flag: str, example: str) -> Callable[[str], tuple[float, ...]]:
    """The parser of an option that takes distinct finite numbers above 0, comma-separated."""

    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(word) for word in text.split(","))
        except ValueError:
            values = ()
        if not values or not all(math.isfinite(v) and v > 0 for v in values):
            raise UsageError(
                f"{flag} {text!r} is not a list of finite numbers above 0, separated by "
                f"commas. Nothing was run or written. Fix: e.g. {flag} {example}."
            )
        if len(set(values)) != len(values):
            raise UsageError(
                f"{flag} {text} names a value twice: each value is one cell of the grid. "
                f"Nothing was run or written. Fix: name each value once, e.g. {flag} {example}."
            )
        return values

    return parse


def device_name(text: str) -> str:
    """`--device`: auto, cpu, cuda or cuda:N, passed on to every run as device=."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text):
        raise UsageError(
            f"--device {text!r} is not a device this suite trains on. Nothing was run or "
            "written. Fix: give auto, cpu, cuda or cuda:N (e.g. --device cuda:0)."
        )
    return text


def file_in_the_way(folder: Path) -> Path | None:
    """The file at `folder`, or at a folder above it, where a folder is wanted; None if none."""
    return next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)


def trained_device(options: Mapping[str, Any], overrides: Sequence[str]) -> tuple[str, str, str]:
    """The device a `run` trains on, what names it, and how to name the CPU instead: the last
    `device=` override, else `--device`, else the device of the `--preset`'s
    configs/preset/<name>.yaml; "auto" where none names one."""
    for word in reversed(overrides):
        key, _, value = word.partition("=")
        if key.lstrip("+") == "device":
            return value, f"The override {word}", "write the override device=cpu"
    if options.get("device"):
        return options["device"], f"--device {options['device']}", "give --device cpu"
    preset = options.get("preset")
    device = preset and presets.device(preset)
    if not device:
        return "auto", "", ""
    return (
        device,
        f"--preset {preset} (configs/preset/{preset}.yaml: device: {device})",
        "choose a CPU preset (e.g. --preset cpu), or add --device cpu",
    )


def check_device(options: Mapping[str, Any], overrides: Sequence[str]) -> None:
    """Refuses a `run` on a CUDA device this machine does not have, before anything is made
    (each job would otherwise fail at its start and leave its folder behind)."""
    device, named_by, on_the_cpu = trained_device(options, overrides)
    if not device.startswith("cuda"):
        return
    # Imported here: torch takes a second and a half to import, and only a GPU run needs it.
    import torch

    count = torch.cuda.device_count()
    if int(device.partition(":")[2] or 0) < count:
        return
    have = f"{count} CUDA GPU(s), cuda:0 to cuda:{count - 1}" if count else "no CUDA GPU"
    raise UsageError(
        f"{named_by} trains on {device}, and this machine has {have}. Nothing was run or "
        f"written. Fix: run it on a machine with that GPU, or train on the CPU: {on_the_cpu}."
    )


def hydra_list(values: Iterable) -> str:
    """`values` as a Hydra list override's value, each as Python writes it (every digit of a
    float kept): [0,1,2], [0.01,0.1,1.0]."""
    return "[" + ",".join(str(v) for v in values) + "]"


@dataclass(frozen=True)
class Option:
    """One option of a driver beyond the common ones.

    `parse` turns the text into its value or raises UsageError; `default` is the committed
    protocol's value and `quick` the `--quick` protocol's (None: the default's), either of
    them possibly a function of the options declared before it (the chosen preset's seeds);
    `actions` are the actions that take it. A `choices` option takes one of those words."""

    flag: str
    help: str
    parse: Callable[[str], Any] = str
    default: Any = None
    quick: Any = None
    actions: tuple[str, ...] = ("run",)
    choices: tuple[str, ...] = ()

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


def seeds_option(default: Sequence[int], quick: Sequence[int] | None = None) -> Option:
    return Option(
        "--seeds",
        f"comma-separated seeds (default {','.join(map(str, default))})",
        seed_list,
        tuple(default),
        None if quick is None else tuple(quick),
    )


def steps_option(default: int | None, quick: int | None, protocol: str) -> Option:
    return Option(
        "--steps",
        f"training steps of every run (default: {protocol})",
        positive_int("--steps", "training steps", 1000),
        default,
        quick,
    )


def jobs_option(default: int) -> Option:
    return Option(
        "--jobs",
        f"training processes at a time (default {default})",
        positive_int("--jobs", "processes at a time", 2),
        default,
    )


def device_option(default: str | None = None) -> Option:
    return Option(
        "--device",
        "device of every run: auto, cpu, cuda or cuda:N (default: the protocol's)",
        device_name,
        default,
    )


def preset_options(added: Mapping[str, Any], default: str) -> tuple[Option, ...]:
    """`--preset NAME` (configs/preset/NAME.yaml, the proxy's size and length; `quick` under
    `--quick`), and `--seeds` and `--jobs`, whose defaults are the chosen preset's: `added`
    maps each name the driver takes to what it adds to it (its `seeds` and `jobs`)."""

    def listing(attribute: str) -> str:
        return "; ".join(
            f"{name} {','.join(map(str, value)) if isinstance(value, tuple) else value}"
            for name, value in ((n, getattr(p, attribute)) for n, p in added.items())
        )

    return (
        Option(
            "--preset",
            f"the proxy's size and length, configs/preset/<name>.yaml (default {default})",
            default=default,
            quick="quick",
            choices=tuple(name for name in presets.names() if name in added and name != "quick"),
        ),
        Option(
            "--seeds",
            f"comma-separated seeds (default: the preset's, {listing('seeds')})",
            seed_list,
            lambda options: added[options["preset"]].seeds,
        ),
        Option(
            "--jobs",
            f"training processes at a time (default: the preset's, {listing('jobs')})",
            positive_int("--jobs", "processes at a time", 2),
            lambda options: added[options["preset"]].jobs,
        ),
    )


# ---------------------------------------------------------------- the command line


@dataclass
class Invocation:
    """What an action is given: the options' values (the protocol's where not given), the
    Hydra overrides, the results folder, the runs folder and the command as typed."""

    action: str
    quick: bool
    options: dict[str, Any]
    overrides: list[str]
    out: Path
    runs: Path
    command: str
    replace: bool = False

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["options"][name]
        except KeyError:
            raise AttributeError(name) from None


class Parser(argparse.ArgumentParser):
    """argparse with its errors as UsageError, which the frame prints as one paragraph."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(
            f"{message}. Nothing was run or written. Fix: see `{self.prog} --help` for the "
            "actions and options."
        )


def script_args(parser: Parser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The checked command line of a script beside the drivers (the benchmarks): `parser`'s
    arguments, each option checked by the frame's parsers (`positive_int`, ...), or the
    refusal's paragraph on stderr and exit status 2 before anything starts."""
    try:
        return parser.parse_args(argv)
    except UsageError as error:
        print(f"bnrepro: {error}", file=sys.stderr)
        sys.exit(2)


@dataclass(frozen=True)
class Driver:
    """One experiment: see the module docstring for what each field is for."""

    name: str
    doc: str
    draw: Callable[[Path], None]
    run: Callable[[Invocation], None]
    collect: Callable[[Invocation], None] | None = None
    options: tuple[Option, ...] = ()
    tolerances: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    # Rows that time the machine (CSV file -> the text their first cell starts with): their
    # numbers and verdicts belong to the machine that timed them; `make verify` reports how
    # they differ without counting them as differences.
    timed: Mapping[str, str] = field(default_factory=dict)
    # The folder of its results under results/, of its `--quick` results (runs/<folder>-quick)
    # and of its training runs (runs/<folder>/<time>): the driver's name unless it names
    # another, or a function of the options that names it (figure1's --experiment).
    folder: str | Callable[[dict[str, Any]], str] = ""

    def folder_of(self, options: Mapping[str, Any]) -> str:
        if callable(self.folder):
            return self.folder(options)
        return self.folder or self.name

    @property
    def results_dir(self) -> Path:
        """The committed results: results/<folder> with the protocol's default options."""
        return RESULTS / self.folder_of({o.dest: o.default for o in self.options})

    @property
    def script(self) -> str:
        return f"experiments/{self.name}.py"

    def parser(self) -> Parser:
        parser = Parser(
            prog=f"python {self.script}",
            description=self.doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        actions = [a for a in ACTIONS if a != "collect" or self.collect]
        parser.add_argument("action", choices=actions)
        parser.add_argument(
            "--quick",
            action="store_true",
            help=f"run: the short protocol; --out defaults to runs/{self.folder_of({})}-quick",
        )
        parser.add_argument(
            "--out",
            type=Path,
            help=f"results folder (default {self.results_dir.relative_to(REPO)})",
        )
        parser.add_argument(
            "--runs", type=Path, help="training runs' folder (default runs/<results folder>/<time>)"
        )
        parser.add_argument(
            "--replace",
            action="store_true",
            help="run/collect: replace the results in --out even where they are of another "
            "protocol (steps, seeds, preset) than the runs collected",
        )
        for option in self.options:
            kind = {"choices": option.choices} if option.choices else {}
            parser.add_argument(
                option.flag, help=f"{'/'.join(option.actions)}: {option.help}", **kind
            )
        return parser

    def invocation(self, argv: Sequence[str]) -> Invocation:
        """The checked command line: every value valid, or UsageError before anything runs."""
        args, overrides = self.parser().parse_known_args(argv)
        self.check_combination(args, overrides)
        options = self.option_values(args)
        folder = self.folder_of(options)
        out = args.out or (RUNS / f"{folder}-quick" if args.quick else RESULTS / folder)
        file = file_in_the_way(out.resolve())
        if file is not None:
            raise UsageError(
                f"--out {out}: {file} is a file, and --out names the folder of the results "
                "(their CSV files, figures and README.md). Nothing was run or written. Fix: give "
                f"--out a folder, new or existing, e.g. --out runs/{folder}-mine."
            )
        if args.action == "run":
            check_overrides(overrides)
            check_device(options, overrides)
        runs = args.runs or RUNS / folder / time.strftime("%Y-%m-%d_%H-%M-%S")
        return Invocation(
            action=args.action,
            quick=args.quick,
            options=options,
            overrides=overrides,
            out=out.resolve(),
            runs=runs.resolve(),
            command=shlex.join(["python", self.script, *argv]),
            replace=args.replace,
        )

    def check_combination(self, args: argparse.Namespace, overrides: list[str]) -> None:
        """Refuses a misspelt option, an option or override the action does not take, --quick
        beside another protocol, and collect without the runs to gather."""
        stray = [word for word in overrides if word.startswith("-")]
        if stray:
            raise UsageError(
                f"{' '.join(stray)} is not an option of {self.script} {args.action}. Nothing "
                f"was run or written. Fix: see `python {self.script} --help`; anything else is "
                "a Hydra override for every run, written key=value (e.g. data.input=binary)."
            )
        given = {o.dest for o in self.options if getattr(args, o.dest) is not None}
        given |= {"overrides"} if overrides else set()
        given |= {"runs"} if args.runs else set()
        given |= {"replace"} if args.replace else set()
        allowed = {o.dest for o in self.options if args.action in o.actions}
        allowed |= {"overrides"} if args.action == "run" else set()
        allowed |= {"runs", "replace"} if args.action != "draw" else set()
        wrong = sorted(given - allowed)
        if wrong:
            named = ", ".join(
                "Hydra overrides " + " ".join(overrides)
                if w == "overrides"
                else f"--{w.replace('_', '-')}"
                for w in wrong
            )
            does = (
                "redraws the figures and README from the CSV files in --out"
                if args.action == "draw"
                else "gathers the runs in --runs into CSV files"
            )
            raise UsageError(
                f"{named}: not taken by `{args.action}`, which {does}. Nothing was run or "
                "written. Fix: drop them, or use `run` to train."
            )
        protocols = [o.flag for o in self.options if o.quick and o.choices and o.dest in given]
        if args.quick and protocols:
            raise UsageError(
                f"--quick is a protocol of its own and {protocols[0]} names another. Nothing "
                f"was run or written. Fix: drop {protocols[0]} or --quick."
            )
        if args.action == "collect" and args.runs is None:
            raise UsageError(
                f"collect needs the runs to gather. Nothing was written. Fix: give --runs the "
                f"folder that `python {self.script} run` trained into (runs/<folder>/<time>)."
            )

    def option_values(self, args: argparse.Namespace) -> dict[str, Any]:
        """Each option's value: as given, else the `--quick` protocol's, else the default (a
        function of the options before it, where it is one)."""
        options: dict[str, Any] = {}
        for option in self.options:
            text = getattr(args, option.dest)
            if text is not None:
                options[option.dest] = option.parse(text)
            else:
                value = option.quick if args.quick and option.quick is not None else option.default
                options[option.dest] = value(options) if callable(value) else value
        return options

    def main(self, argv: Sequence[str] | None = None) -> None:
        """The driver's command line: parse, check, then the action and what follows it."""
        argv = list(sys.argv[1:] if argv is None else argv)
        try:
            invocation = self.invocation(argv)
            if invocation.action == "run":
                self.run(invocation)
            if invocation.action in ("run", "collect") and self.collect:
                check_protocol(invocation)
                self.collect(invocation)
            self.draw(invocation.out)
        except Stopped as error:
            print(f"bnrepro: {error}", file=sys.stderr)
            sys.exit(error.exit_code)
        except SweepFailed as error:
            print(f"bnrepro: {error}", file=sys.stderr)
            sys.exit(1)
        except BnreproError as error:
            print(f"bnrepro: {error}", file=sys.stderr)
            sys.exit(2)


# ---------------------------------------------------------------- sweeps


def multirun(overrides: Sequence[str], sweep_dir: Path, subdir: str, jobs: int) -> None:
    """`python -m bnrepro.train -m <overrides>` into `sweep_dir`/`subdir`, `jobs` runs at a
    time through Hydra's joblib launcher (every driver launches this one way). Raises
    Stopped when SIGINT or SIGTERM stopped it, SweepFailed naming each failed job, or
    BnreproError when Hydra refused the sweep before any job started (its own message is
    printed above)."""
    command = [
        sys.executable, "-m", "bnrepro.train", "-m", *overrides, f"hydra.sweep.dir={sweep_dir}",
        f"hydra.sweep.subdir={subdir}", "hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}",
        "hydra.launcher.pre_dispatch=n_jobs",
    ]  # fmt: skip
    print("+", shlex.join(command), flush=True)
    code, signum = run_group(command, sweep_dir, REPO)
    check_sweep_end(command, sweep_dir, code, signum)


# ---------------------------------------------------------------- records


def check_protocol(invocation: Invocation) -> None:
    """Refuses to collect the runs in `--runs` into a results folder whose provenance.json
    records another protocol, unless `--replace`: a short or quick sweep collected without
    `--out` would otherwise replace the committed results of the full protocol."""
    out = invocation.out
    if invocation.replace or not (out / "provenance.json").exists():
        return
    fix = (
        f"collect into another folder with --out, or give --replace to replace the results in {out}"
    )
    record = read_json(out / "provenance.json", fix)
    old, new = recorded_protocol(record), trained_protocol(invocation.runs)
    differ = [key for key in PROTOCOL_KEYS if key in old and key in new and old[key] != new[key]]
    if differ:
        raise UsageError(
            f"{out} holds results of another protocol than the runs in {invocation.runs}: its "
            f"provenance.json records {describe_protocol(old, differ)} (made by "
            f"`{record.get('command', 'a command not recorded')}`), the runs were trained with "
            f"{describe_protocol(new, differ)}. Nothing was written. Fix: {fix} with these runs."
        )


def provenance(run_dir: Path, runs_dir: Path, command: str, **fields: Any) -> dict[str, Any]:
    """What changes from one faithful run to the next: the command as typed, the runs'
    folder (relative to the repository where it lies inside it), the code's commit and the
    machine (from `run_dir`'s run.json), the date, the protocol of the runs under `runs_dir`
    (what `check_protocol` compares) and the driver's own `fields` (wall times, configs)."""
    first = json.loads((Path(run_dir) / "run.json").read_text())
    return {
        "command": command,
        "runs_dir": str(runs_dir.relative_to(REPO) if runs_dir.is_relative_to(REPO) else runs_dir),
        "git": first["git"],
        "hardware": first["hardware"],
        "date": time.strftime("%Y-%m-%d"),
        "protocol": trained_protocol(runs_dir),
        **fields,
    }


def sweep_fix(name: str, folder: str = "") -> str:
    """The fix for a `--runs` folder that does not hold driver `name`'s whole sweep."""
    return (
        f"give --runs the sweep directory that `python experiments/{name}.py run` trained into "
        f"(runs/{folder or name}/<time>)"
    )


def draw_fix(name: str, folder: str = "") -> str:
    """The fix for a results folder whose CSV files `draw` cannot use."""
    return (
        f"rebuild the CSV files with `python experiments/{name}.py collect --runs <sweep dir>`, "
        f"or restore the committed ones with `git checkout -- results/{folder or name}`"
    )


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    """`frame` as `path` (no index), atomically."""
    atomic_write_text(path, frame.to_csv(index=False))
    print(f"wrote {path}", flush=True)
