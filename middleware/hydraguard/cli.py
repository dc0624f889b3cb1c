"""The ``hydraguard`` command: serve, check, replay, simulate."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .errors import PolicyError
from .gateway.options import integer, seconds


def _check(args: argparse.Namespace) -> int:
    from .policy.loader import load_policy

    failed = False
    for path in args.policies:
        try:
            policy = load_policy(path)
        except PolicyError as exc:
            failed = True
            for problem in exc.problems:
                print(problem, file=sys.stderr)
        else:
            print(f"{path}: ok (policy {policy.name!r}, {len(policy.rules)} rules)")
    return 1 if failed else 0


def _serve(args: argparse.Namespace) -> int:
    from .gateway.serve import serve

    return serve(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hydraguard", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve", help="run the gateway: HydraGuard in front of an upstream model API"
    )
    serve.add_argument("--policy", help="policy file (default: the shipped default policy)")
    serve.add_argument("--upstream", help="upstream base URL (default: the built-in mock model)")
    serve.add_argument("--storage", default="memory://", help="memory:// or a Redis URL")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=integer(0, 65535), default=8000, help="0: any free port")
    serve.add_argument("--workers", type=integer(1), default=1)
    serve.add_argument(
        "--mock-latency",
        type=seconds(zero=True),
        default=0.0,
        help="built-in mock: seconds before answering",
    )
    serve.add_argument(
        "--mock-token-delay",
        type=seconds(zero=True),
        default=0.0,
        help="built-in mock: seconds between streamed tokens",
    )
    serve.add_argument(
        "--connect-timeout",
        type=seconds(zero=False),
        default=10.0,
        help="upstream: seconds to connect (else 502)",
    )
    serve.add_argument(
        "--read-timeout",
        type=seconds(zero=False),
        default=600.0,
        help="upstream: seconds to wait for the next chunk (else 504)",
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
    )
    serve.set_defaults(run=_serve)

    check = commands.add_parser("check", help="validate policy files; exit 1 on any error")
    check.add_argument("policies", nargs="+", metavar="POLICY")
    check.set_defaults(run=_check)

    _optional(
        commands,
        "simulate",
        "hydraguard.simulate.command",
        "write synthetic benign + attack traffic",
    )
    _optional(
        commands, "replay", "hydraguard.replay.command", "backtest a policy on logged traffic"
    )
    return parser


def _optional(commands: argparse._SubParsersAction, name: str, module: str, help_text: str) -> None:
    import importlib

    try:
        command = importlib.import_module(module)
    except ImportError:
        return
    sub = commands.add_parser(name, help=help_text)
    command.configure(sub)
    sub.set_defaults(run=command.run)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
