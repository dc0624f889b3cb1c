from __future__ import annotations

from pathlib import Path

import pytest
from replay_helpers import T0, record, write_traffic

from hydraguard.replay.reader import check_record, read_traffic


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
