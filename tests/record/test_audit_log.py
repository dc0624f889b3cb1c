from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from hydraguard.identify import Identity, hash_api_key
from hydraguard.record.audit import TRUNCATED, AuditConfig, AuditLog, audit_record, encode_line

SECRET = "sk-live-0123456789abcdef"


def identity(**headers: str) -> Identity:
    return Identity(hash_api_key(SECRET), "default", "203.0.113.7", dict(headers))


def sample(i: int = 0, body: Any = None) -> dict[str, Any]:
    body = (
        body
        if body is not None
        else {"model": "m", "messages": [{"role": "user", "content": f"q{i}"}]}
    )
    return audit_record(
        identity(), "POST", "/v1/chat/completions", body, 200, (10, i), 1_800_000_000.0 + i
    )


def log_files(folder: Path) -> list[Path]:
    """The log and its backups, without the lock file the writers share."""
    return sorted(p for p in folder.iterdir() if not p.name.endswith(".lock"))


def lines_of(*paths: Path) -> list[dict[str, Any]]:
    found = []
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            found.append(json.loads(line))  # every line whole, valid JSON
    return found


def test_audit_record_keeps_context_headers_and_never_credentials() -> None:
    who = identity(
        **{
            "authorization": f"Bearer {SECRET}",
            "x-api-key": SECRET,
            "cookie": f"session={SECRET}",
            "x-payment-fingerprint": "pf_1",
            "x-ja4": "t13d",
            "accept": "*/*",
        }
    )
    # Even a policy that names credential headers as context does not get them written.
    wanted = ("x-payment-fingerprint", "X-JA4", "authorization", "x-api-key", "cookie")
    record = audit_record(
        who, "POST", "/v1/messages", {"max_tokens": 5}, 200, None, 1.23456, wanted
    )
    assert record["headers"] == {"x-payment-fingerprint": "pf_1", "x-ja4": "t13d"}
    assert SECRET not in json.dumps(record)
    assert record["account"].startswith("key-")
    assert record["ts"] == 1.23456 and record["usage"] is None and record["ip"] == "203.0.113.7"
    assert list(record) == [
        "ts",
        "account",
        "ip",
        "headers",
        "method",
        "path",
        "body",
        "status",
        "usage",
    ]


def test_usage_as_tuple_or_mapping() -> None:
    assert sample(3)["usage"] == {"input_tokens": 10, "output_tokens": 3}
    record = audit_record(
        identity(), "POST", "/", None, 429, {"input_tokens": 1, "output_tokens": 2}, 0.0
    )
    assert record["usage"] == {"input_tokens": 1, "output_tokens": 2}


def test_small_bodies_are_written_verbatim() -> None:
    record = sample(1)
    assert orjson.loads(encode_line(record, 10_000)) == record


def test_bodies_over_the_cap_become_a_marker_keeping_small_fields() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "x" * 5000}],
        "max_tokens": 32000,
        "logprobs": True,
        "top_logprobs": 5,
    }
    line = encode_line(sample(body=body), 1024)
    assert len(line) < 1500
    written = orjson.loads(line)["body"]
    assert (
        written["max_tokens"] == 32000 and written["logprobs"] is True and written["model"] == "m"
    )
    assert "messages" not in written
    assert written[TRUNCATED] == {"bytes": len(orjson.dumps(body)), "dropped": ["messages"]}


def test_rotation_by_size_keeps_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, max_bytes=2000, backups=50) as log:
        for i in range(200):
            assert log.write(sample(i))
    files = log_files(tmp_path)
    assert len(files) > 5
    longest = max(len(line) for f in files for line in f.read_bytes().splitlines(True))
    # A file rotates once it reached max_bytes: it passes it by less than one line.
    assert all(f.stat().st_size < 2000 + longest for f in files)
    assert sum(f.stat().st_size >= 2000 - longest for f in files) >= len(files) - 1
    written = lines_of(*files)
    assert sorted(r["usage"]["output_tokens"] for r in written) == list(range(200))


def test_rotation_keeps_at_most_the_backups(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, max_bytes=1000, backups=2) as log:
        for i in range(100):
            log.write(sample(i))
    assert [p.name for p in log_files(tmp_path)] == [
        "audit.jsonl",
        "audit.jsonl.1",
        "audit.jsonl.2",
    ]
    newest = lines_of(path)[-1]
    assert newest["usage"]["output_tokens"] == 99


WRITER = """
import sys
from hydraguard.record.audit import AuditLog, audit_record
from hydraguard.identify import Identity

worker, path = int(sys.argv[1]), sys.argv[2]
who = Identity(f"w{worker}", "default", None, {})
with AuditLog(path, max_bytes=200_000, backups=1000, queue_size=10_000) as log:
    for i in range(1000):
        body = {"i": i, "pad": "x" * (i % 7 * 1500)}
        assert log.write(audit_record(who, "POST", "/v1/messages", body, 200, (1, 2), float(i)))
"""


def test_several_processes_share_one_rotating_log_without_losing_a_line(tmp_path: Path) -> None:
    # `hydraguard serve --workers N` (or gunicorn workers) with the audit log on: every
    # process appends to the same file and rotates it. With the stdlib's rotating handler
    # rotations raced and about one line in five was lost.
    path = tmp_path / "audit.jsonl"
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(w), str(path)]) for w in range(4)
    ]
    assert [writer.wait(timeout=60) for writer in writers] == [0, 0, 0, 0]
    files = log_files(tmp_path)
    assert len(files) > 10  # it rotated, many times
    written = lines_of(*files)
    assert sorted((r["account"], r["body"]["i"]) for r in written) == sorted(
        (f"w{w}", i) for w in range(4) for i in range(1000)
    )


async def test_many_tasks_and_threads_writing_give_only_valid_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, max_bytes=10_000_000, queue_size=100_000)
    big = {"messages": [{"role": "user", "content": "é" * 3000}]}

    async def task(n: int) -> None:
        for i in range(50):
            log.write(sample(n * 1000 + i, big if i % 10 == 0 else None))
            await asyncio.sleep(0)

    def thread(n: int) -> None:
        for i in range(50):
            log.write(sample(n * 1000 + i))

    threads = [threading.Thread(target=thread, args=(100 + n,)) for n in range(4)]
    for t in threads:
        t.start()
    await asyncio.gather(*(task(n) for n in range(40)))
    for t in threads:
        t.join()
    log.close()
    written = lines_of(path)
    assert len(written) == 44 * 50 and log.dropped == 0
    assert len({r["usage"]["output_tokens"] for r in written}) == 44 * 50


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    drops: list[int] = []
    log = AuditLog(tmp_path / "audit.jsonl", queue_size=2, on_drop=lambda: drops.append(1))
    release = threading.Event()
    handle = log._handler.handle

    def stuck(record: Any) -> bool:
        release.wait()
        return handle(record)

    log._handler.handle = stuck  # type: ignore[method-assign]
    accepted = sum(log.write(sample(i)) for i in range(10))
    # The writer holds at most one line, the queue two: the rest are dropped, not waited for.
    assert 2 <= accepted <= 3
    assert log.dropped == 10 - accepted == len(drops)
    release.set()
    log.close()
    assert len(lines_of(tmp_path / "audit.jsonl")) == accepted
    assert not log.write(sample(99)) and log.dropped == 11 - accepted  # closed: dropped


def outputs(path: Path) -> list[int]:
    return [line["usage"]["output_tokens"] for line in lines_of(path)]


def test_lines_are_in_arrival_order_whatever_order_requests_finish(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        places = [log.arrive() for _ in range(5)]
        log.write(sample(2), places[2])
        log.write(sample(1), places[1])
        log.skip(places[3])  # this request ends without a line
        log.write(sample(4), places[4])
        log._listener.queue.join()  # type: ignore[attr-defined]
        assert not path.exists()  # nothing written yet: all wait for the first, still running
        log.write(sample(0), places[0])
    assert outputs(path) == [0, 1, 2, 4]


def test_a_long_request_holds_back_a_bounded_number_of_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, max_waiting=3) as log:
        running = log.arrive()
        for i in range(1, 5):
            log.write(sample(i), log.arrive())  # the fourth waiting line is one too many
        log.write(sample(0), running)  # written late, after the ones it held back
        log.write(sample(5), log.arrive())
    assert outputs(path) == [1, 2, 3, 4, 0, 5]


def test_closing_writes_the_waiting_lines_in_order(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    running = log.arrive()
    for i in (1, 2):
        log.write(sample(i), log.arrive())
    log.close()
    assert outputs(path) == [1, 2]
    assert not log.write(sample(0), running) and log.dropped == 1  # closed: dropped


def test_write_errors_are_counted_not_raised(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "missing-dir" / "audit.jsonl")
    log.write(sample(1))
    log.close()
    assert log.errors == 1


def test_config_forbids_unknown_keys_and_builds_the_log(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="extra_forbidden"):
        AuditConfig(enabled=True, rotate=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="body_cap must be smaller"):
        AuditConfig(max_bytes=10_000, body_cap=10_000)
    config = AuditConfig(enabled=True, path=str(tmp_path / "a.jsonl"), max_bytes=5000, body_cap=100)
    with AuditLog.from_config(config) as log:
        log.write(sample(1, {"messages": ["y" * 500], "max_tokens": 7}))
    [line] = lines_of(tmp_path / "a.jsonl")
    assert line["body"]["max_tokens"] == 7 and TRUNCATED in line["body"]


@pytest.mark.parametrize(
    "record",
    [
        {"body": {"a": 1}},
        {"body": {"a": 1}, "status": 200},
        {"ts": 1.5, "body": {"a": 1}},
        {"ts": 1.5, "body": {"a": [1, "x"]}, "status": 200, "usage": None},
    ],
)
def test_the_spliced_line_is_the_record_in_order(record: dict[str, Any]) -> None:
    line = encode_line(record, 1000)
    assert line == orjson.dumps(record)


def test_raw_body_bytes_are_written_on_one_line_without_reencoding() -> None:
    text = b"a\\nb" + b"x" * 200
    raw = b'{\r\n  "model": "m",\n  "messages": [{"role": "user", "content": "' + text + b'"}]\n}'
    record = {**sample(1), "body": raw}
    line = encode_line(record, 10_000)
    assert b"\n" not in line and b"\r" not in line
    assert orjson.loads(line)["body"] == orjson.loads(raw)
    capped = orjson.loads(encode_line(record, 100))["body"]
    assert capped["model"] == "m" and capped[TRUNCATED]["dropped"] == ["messages"]


def test_the_writer_writes_the_lines_queued_meanwhile_at_once(tmp_path: Path) -> None:
    """While the writer thread is busy (here: its first write held back), lines pile up; it
    then writes them as one batch, one lock round and one write, instead of one each: what
    keeps it from falling behind an event loop that never lets it have the GIL for long.
    Every line arrives, in order, and a failed batch counts each of its lines as an error."""
    release, writes = threading.Event(), []

    def hold_writes(log: AuditLog) -> None:
        emit = log._handler.emit

        def held_emit(record: Any) -> None:
            release.wait(10)
            writes.append(record.lines)
            emit(record)

        log._handler.emit = held_emit  # type: ignore[method-assign]

    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    hold_writes(log)
    for i in range(500):
        assert log.write(sample(i))
    release.set()
    log.close()
    assert sum(writes) == 500 and len(writes) <= 3, writes
    assert [r["usage"]["output_tokens"] for r in lines_of(path)] == list(range(500))

    failing = AuditLog(tmp_path / "missing-dir" / "audit.jsonl")
    hold_writes(failing)
    release.clear()
    for i in range(50):
        failing.write(sample(i))
    release.set()
    failing.close()
    assert failing.errors == 50
