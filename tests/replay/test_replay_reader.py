from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from replay_helpers import T0, record, write_traffic

from hydraguard.replay.reader import TrafficLogs, check_record, read_traffic


def test_every_line_yields_one_entry_with_its_number(tmp_path: Path) -> None:
    path = write_traffic(
        tmp_path / "t.jsonl",
        [record("a", T0), "{not json", "", "[1, 2]", record("b", T0 + 1)],
    )
    entries = list(read_traffic(path))
    assert [e.line for e in entries] == [0, 1, 2, 3, 4]
    assert [e.account for e in entries] == ["a", None, None, None, "b"]
    assert entries[0].error is None and entries[4].error is None
    assert "not valid JSON" in (entries[1].error or "")
    assert "not valid JSON" in (entries[2].error or "")  # a blank line is malformed, not skipped
    assert entries[3].error == "not a JSON object"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ts": None}, "ts is missing"),
        ({"ts": True}, "ts is missing"),
        ({"account": ""}, "account is missing"),
        ({"path": 3}, "path is missing"),
        ({"headers": {"x-ja4": 1}}, "headers is not an object of strings"),
        ({"ip": 7}, "ip is not a string"),
        ({"status": "200"}, "status is not an integer"),
        ({"usage": []}, "usage is not an object"),
        ({"usage": {"output_tokens": -1}}, "usage.output_tokens"),
    ],
)
def test_check_record_names_the_bad_field(change: dict[str, object], message: str) -> None:
    bad = {**record("a", T0), **change}
    assert message in (check_record(bad) or "")


def test_unknown_fields_and_missing_optional_fields_are_fine() -> None:
    minimal = {"ts": T0, "account": "a", "path": "/v1/embeddings", "extra": {"x": 1}}
    assert check_record(minimal) is None


def _read_merged(paths: list[Path]) -> list[tuple[str | None, str]]:
    with TrafficLogs(paths) as logs:
        return [(record["account"] if record else None, logs.where()) for record, _ in logs.lines()]


def test_several_logs_merge_by_timestamp_each_keeping_its_own_order(tmp_path: Path) -> None:
    # Two replicas' logs over the same minutes; replica b's second file compressed.
    a = write_traffic(
        tmp_path / "a.jsonl",
        [record("a0", T0), record("a1", T0 + 2), "{broken", record("a3", T0 + 5)],
    )
    b = write_traffic(tmp_path / "b.jsonl", [record("b0", T0 + 1), record("b1", T0 + 2)])
    b2 = tmp_path / "b2.jsonl.gz"
    b2.write_bytes(
        gzip.compress(write_traffic(tmp_path / "b2.jsonl", [record("b2", T0 + 4)]).read_bytes())
    )
    merged = _read_merged([a, b2, b])  # named in any order
    assert merged == [
        ("a0", f"{a}:1"),
        ("b0", f"{b}:1"),
        ("a1", f"{a}:2"),  # the same ts as b1: the file named first comes first
        (None, f"{a}:3"),  # a malformed line stays behind the line before it
        ("b1", f"{b}:2"),
        ("b2", f"{b2}:1"),
        ("a3", f"{a}:4"),
    ]


def test_a_file_out_of_order_within_is_kept_as_written(tmp_path: Path) -> None:
    # Several workers writing one log interleave a little: the merge never reorders a file.
    a = write_traffic(tmp_path / "a.jsonl", [record("a0", T0 + 3), record("a1", T0 + 1)])
    b = write_traffic(tmp_path / "b.jsonl", [record("b0", T0 + 2)])
    assert [account for account, _ in _read_merged([a, b])] == ["b0", "a0", "a1"]


def test_one_log_reads_front_to_back_and_names_no_merge(tmp_path: Path) -> None:
    path = write_traffic(tmp_path / "t.jsonl", [record("a", T0 + 9), record("b", T0)])
    with TrafficLogs(path) as logs:
        assert not logs.merged
        assert [r["account"] for r, _ in logs.lines() if r] == ["a", "b"]
        assert logs.where() == f"{path}:2" and logs.tell() == path.stat().st_size
