"""The ``hydraguard`` command: serve, check, replay, simulate."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .errors import PolicyError
from .gateway.options import integer, seconds

DESCRIPTION = "hydraguard: rate limiting against capability extraction for model APIs."


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
    parser = argparse.ArgumentParser(prog="hydraguard", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve", help="run the gateway: HydraGuard in front of an upstream model API"
    )
    serve.add_argument(
        "--policy", metavar="P", help="policy file (default: the shipped default policy)"
    )
    serve.add_argument(
        "--upstream", metavar="URL", help="upstream base URL (default: the built-in mock model)"
    )
    serve.add_argument(
        "--storage",
        metavar="URI",
        default="memory://",
        help="memory:// (default) or a Redis URL; several workers need Redis",
    )
    serve.add_argument("--host", metavar="H", default="127.0.0.1", help="default 127.0.0.1")
    serve.add_argument(
        "--port",
        metavar="N",
        type=integer(0, 65535),
        default=8000,
        help="default 8000; 0: any free port",
    )
    serve.add_argument(
        "--workers", metavar="N", type=integer(1), default=1, help="worker processes (default 1)"
    )
    serve.add_argument(
        "--mock-latency",
        type=seconds(zero=True),
        default=0.0,
        metavar="SECONDS",
        help="built-in mock: seconds before answering",
    )
    serve.add_argument(
        "--mock-token-delay",
        type=seconds(zero=True),
        default=0.0,
        metavar="SECONDS",
        help="built-in mock: seconds between streamed tokens",
    )
    serve.add_argument(
        "--connect-timeout",
        type=seconds(zero=False),
        default=10.0,
        metavar="SECONDS",
        help="upstream: seconds to connect (else 502; default 10)",
    )
    serve.add_argument(
        "--read-timeout",
        type=seconds(zero=False),
        default=600.0,
        metavar="SECONDS",
        help="upstream: seconds to wait for the next chunk (else 504; default 600)",
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
        help="uvicorn's log level (default info)",
    )
    serve.set_defaults(run=_serve)

    check = commands.add_parser("check", help="validate policy files; exit 1 on any error")
    check.add_argument("policies", nargs="+", metavar="POLICY", help="policy file (YAML)")
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
