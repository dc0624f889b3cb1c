"""``hydraguard replay TRAFFIC.jsonl|- [MORE.jsonl ...] --policy P --decisions OUT.jsonl
[--report R.json] [--labels L.json] [--compare P2] [--html R.html]``: backtest a policy on
logged traffic.

Writes one decision line per traffic line, in order; the same input always gives the
same bytes. Several logs (an audit log and its rotated files, the logs of several
replicas; ``.gz`` ones too; ``-`` for standard input) are replayed as one, merged by
timestamp (``TrafficLogs``). ``--compare`` replays a second policy on the same traffic
and puts both, side by side, under ``"policies"`` in the report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import PolicyError
from ..policy.compiled import CompiledPolicy
from ..policy.loader import load_policy
from .html import render
from .labels import Label, load_labels
from .progress import Progress
from .reader import TrafficError
from .run import replay_file


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "traffic",
        type=Path,
        nargs="+",
        metavar="TRAFFIC.jsonl",
        help="traffic log (JSON lines, .gz too; - for standard input); several are merged by "
        "timestamp, e.g. an audit log and its rotated files in any order",
    )
    parser.add_argument("--policy", required=True, metavar="P", help="policy file to replay")
    parser.add_argument(
        "--decisions",
        required=True,
        type=Path,
        metavar="OUT.jsonl",
        help="decision lines to write",
    )
    parser.add_argument("--report", type=Path, metavar="R.json", help="report to write (JSON)")
    parser.add_argument(
        "--labels",
        type=Path,
        metavar="L.json",
        help="account labels: benign / attacker (and campaign), as simulate writes them",
    )
    parser.add_argument(
        "--compare", metavar="P2", help="a second policy, replayed on the same traffic"
    )
    parser.add_argument(
        "--compare-decisions",
        type=Path,
        metavar="OUT2.jsonl",
        help="decision lines of the --compare policy",
    )
    parser.add_argument(
        "--html", type=Path, metavar="R.html", help="report to write as a self-contained HTML page"
    )


def policy_key(source: str, taken: dict[str, Any]) -> str:
    key, n = source, 2
    while key in taken:
        key, n = f"{source} ({n})", n + 1
    return key


STDIN = "-"


def spool_stdin(folder: str) -> Path:
    """Standard input copied to a file in ``folder``: each policy replays the log afresh
    (``--compare``), and a pipe can be read only once. Gzip data is kept compressed."""
    stream = sys.stdin.buffer
    head = stream.read(2)
    path = Path(folder) / ("stdin.jsonl.gz" if head == b"\x1f\x8b" else "stdin.jsonl")
    with open(path, "wb") as out:
        out.write(head)
        shutil.copyfileobj(stream, out, 1 << 20)
    return path


async def replay_policies(
    traffic: list[Path],
    runs: list[tuple[str, CompiledPolicy, BinaryIO | None]],
    labels: dict[str, Label] | None,
    size: int,
    names: list[str],
) -> dict[str, Any]:
    """Replay each (source, policy, decisions file) in turn; the report's ``policies`` part."""
    policies: dict[str, Any] = {}
    for source, policy, decisions in runs:
        progress = Progress.maybe(size, f"replay {policy.name}")
        started = time.perf_counter()
        tally = await replay_file(
            traffic, policy, decisions=decisions, labels=labels, progress=progress, names=names
        )
        elapsed = time.perf_counter() - started
        rate = tally.lines / max(elapsed, 1e-9)
        print(
            f"{source}: {tally.lines} lines in {elapsed:.1f} s ({rate:,.0f}/s); admitted "
            f"{tally.admitted}, refused {tally.refused}, invalid {tally.invalid}",
            file=sys.stderr,
        )
        for problem in tally.invalid_lines[:10]:
            where = problem.get("source") or f"{names[0]}:{problem['line'] + 1}"
            print(f"{where}: {problem['error']}", file=sys.stderr)
        if tally.invalid > 10:
            print(
                f"{' '.join(names)}: {tally.invalid - 10} more malformed lines; the "
                "decision line of each carries its line number and the error",
                file=sys.stderr,
            )
        policies[policy_key(source, policies)] = {
            "policy": {"name": policy.name, "source": source},
            **tally.report(),
        }
    return policies


def run(args: argparse.Namespace) -> int:
    if args.compare_decisions and not args.compare:
        print("hydraguard replay: --compare-decisions needs --compare P2", file=sys.stderr)
        return 2
    sources = [args.policy] + ([args.compare] if args.compare else [])
    compiled: list[CompiledPolicy] = []
    for source in sources:
        try:
            compiled.append(load_policy(source))
        except PolicyError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            return 2
    try:
        labels = load_labels(args.labels) if args.labels else None
    except (OSError, ValueError) as exc:
        print(f"hydraguard replay: labels {args.labels}: {exc}", file=sys.stderr)
        return 2
    names = [str(path) for path in args.traffic]
    if names.count(STDIN) > 1:
        print("hydraguard replay: standard input (-) can be read once", file=sys.stderr)
        return 2
    for path in args.traffic:
        if str(path) != STDIN and not path.is_file():
            print(f"hydraguard replay: no such traffic log: {path}", file=sys.stderr)
            return 2
    with ExitStack() as files:
        paths = list(args.traffic)
        if STDIN in names:
            spooled = spool_stdin(files.enter_context(tempfile.TemporaryDirectory()))
            paths[names.index(STDIN)] = spooled
        outputs = [args.decisions, args.compare_decisions if args.compare else None]
        runs = [
            (
                source,
                policy,
                files.enter_context(open(out, "wb", buffering=1 << 20)) if out else None,
            )
            for source, policy, out in zip(sources, compiled, outputs, strict=False)
        ]
        size = sum(path.stat().st_size for path in paths)
        try:
            policies = asyncio.run(replay_policies(paths, runs, labels, size, names))
        except TrafficError as exc:
            print(f"hydraguard replay: {exc}; no report written", file=sys.stderr)
            return 2
    report = {
        # One log: its path, as before several could be given; several: the list.
        "traffic": names[0] if len(names) == 1 else names,
        "labels": str(args.labels) if args.labels else None,
        "policies": policies,
    }
    if args.report:
        args.report.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if args.html:
        args.html.write_text(render(report), encoding="utf-8")
    for key, section in policies.items():
        efficacy = section.get("efficacy")
        if efficacy:
            print(
                f"{key}: leak {_pct(efficacy['leak'])} of attacker output tokens; "
                f"benign accounts affected "
                f"{efficacy['benign_accounts_affected']}/{efficacy['benign_accounts']} "
                f"({_pct(efficacy['benign_accounts_affected_share'])}); benign requests refused "
                f"{efficacy['benign_requests_refused']}/{efficacy['benign_requests']}"
            )
    return 0


def _pct(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.2%}"
