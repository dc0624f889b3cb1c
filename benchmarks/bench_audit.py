"""Audit-log lines dropped when the event loop's thread leaves the writer little of the GIL.

    python benchmarks/bench_audit.py [--lines 40000] [--busy-us 150] [--queue-size 10000]

The audit log's writer is a thread (record/audit.py): it gets the GIL when the request
path releases it, and against a thread that never waits, only at the interpreter's switch
interval (5 ms). This drives ``AuditLog.write`` from a loop that spends ``--busy-us`` of
pure Python per line (a request's work, without any I/O that would release the GIL), with
a line like the traffic log's (a 300-byte prompt), and reports the rate reached, how many
lines the full queue dropped and how many reached the file.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from hydraguard.record.audit import AuditLog

RECORD = {
    "ts": 1_800_000_000.0,
    "account": "acct-1",
    "method": "POST",
    "path": "/v1/chat/completions",
    "status": 200,
    "usage": {"input_tokens": 80, "output_tokens": 200},
    "body": {"model": "m", "messages": [{"role": "user", "content": "hello " * 50}]},
}


def busy(microseconds: float) -> None:
    end = time.perf_counter() + microseconds / 1e6
    while time.perf_counter() < end:
        pass


def run(lines: int, busy_us: float, queue_size: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "audit.jsonl"
        log = AuditLog(path, queue_size=queue_size)
        start = time.perf_counter()
        for _ in range(lines):
            busy(busy_us)
            log.write(RECORD)
        elapsed = time.perf_counter() - start
        log.close()
        written = sum(1 for _ in path.open("rb"))
    return {"rate": lines / elapsed, "dropped": log.dropped, "written": written}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=40_000)
    parser.add_argument("--busy-us", type=float, default=150.0)
    parser.add_argument("--queue-size", type=int, default=10_000)
    args = parser.parse_args()
    found = run(args.lines, args.busy_us, args.queue_size)
    print(
        f"{args.lines} lines at {found['rate']:,.0f}/s ({args.busy_us:g} us busy a line): "
        f"dropped {found['dropped']:,.0f}, written {found['written']:,.0f}"
    )


if __name__ == "__main__":
    main()
