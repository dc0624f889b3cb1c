"""``hydraguard simulate``: argument wiring for the CLI.

Every numeric field of :class:`Scenario` is an option (``reasoning_rate`` ->
``--reasoning-rate``), so a new knob needs no CLI change.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from hydraguard.simulate.generate import write
from hydraguard.simulate.scenario import Scenario

_TYPES = {"int": int, "float": float}
_SPECIAL = {"seed", "hours", "start"}


def _knobs() -> list[dataclasses.Field[object]]:
    return [
        f for f in dataclasses.fields(Scenario) if str(f.type) in _TYPES and f.name not in _SPECIAL
    ]


def configure(parser: argparse.ArgumentParser) -> None:
    defaults = Scenario()
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="TRAFFIC.jsonl",
        help="traffic log to write (JSON lines)",
    )
    parser.add_argument(
        "--labels",
        type=Path,
        metavar="L.json",
        help="account labels to write (one JSON object); default: TRAFFIC.labels.json",
    )
    parser.add_argument(
        "--seed", type=int, metavar="N", default=defaults.seed, help=f"default {defaults.seed}"
    )
    parser.add_argument(
        "--hours",
        type=float,
        metavar="H",
        default=defaults.hours,
        help=f"simulated duration (default {defaults.hours:g})",
    )
    parser.add_argument(
        "--start", type=float, default=defaults.start, help="first second (epoch); fixed by default"
    )
    parser.add_argument(
        "--benign", type=int, metavar="N", help="about N benign accounts, every persona scaled"
    )
    parser.add_argument(
        "--attackers",
        type=int,
        metavar="N",
        help="about N attacker accounts, every campaign scaled (rates too)",
    )
    knobs = parser.add_argument_group("scenario knobs (applied after --benign/--attackers)")
    for f in _knobs():
        knobs.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f"knob_{f.name}",
            type=_TYPES[str(f.type)],
            metavar="N",
            help=f"default {getattr(defaults, f.name)}",
        )


def scenario_from(args: argparse.Namespace) -> Scenario:
    base = Scenario(seed=args.seed, hours=args.hours, start=args.start)
    base = base.scaled(benign=args.benign, attackers=args.attackers)
    overrides = {
        f.name: getattr(args, f"knob_{f.name}")
        for f in _knobs()
        if getattr(args, f"knob_{f.name}", None) is not None
    }
    return dataclasses.replace(base, **overrides)


def run(args: argparse.Namespace) -> int:
    try:
        scenario = scenario_from(args)
    except ValueError as exc:
        print(f"hydraguard simulate: {exc}", file=sys.stderr)
        return 2
    out: Path = args.out
    labels: Path = args.labels or out.with_name(out.stem + ".labels.json")
    stats = write(scenario, out, labels)
    print(f"wrote {out} and {labels}: {stats.summary()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hydraguard simulate", description=__doc__)
    configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
