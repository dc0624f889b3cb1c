from __future__ import annotations

import gzip
import io
import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from replay_helpers import T0, policy_file, read_lines, record, write_traffic

from hydraguard.cli import main


@pytest.fixture
def traffic(tmp_path: Path) -> Path:
    lines: list[dict[str, object] | str] = []
    for i in range(12):
        lines.append(record("x1" if i % 2 else "b1", T0 + i, output=100))
    lines.insert(5, '{"ts": oops')
    return write_traffic(tmp_path / "traffic.jsonl", lines)


@pytest.fixture
def labels(tmp_path: Path) -> Path:
    path = tmp_path / "labels.json"
    path.write_text(
        json.dumps({"b1": "benign", "x1": {"class": "attacker", "campaign": "hydra-1"}})
    )
    return path


def test_replay_writes_one_decision_per_line_and_the_report(
    tmp_path: Path, traffic: Path, labels: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    strict = policy_file(tmp_path, name="strict", requests="2/minute")
    out, report_path = tmp_path / "d.jsonl", tmp_path / "r.json"
    code = main(
        ["replay", str(traffic), "--policy", str(strict), "--decisions", str(out),
         "--labels", str(labels), "--report", str(report_path)]
    )  # fmt: skip
    assert code == 0
    decisions = read_lines(out)
    assert [d["line"] for d in decisions] == list(range(13))
    assert "error" in decisions[5] and not decisions[5]["admitted"]
    assert set(decisions[0]) == {
        "line",
        "account",
        "cluster",
        "admitted",
        "output_tokens",
        "actions",
        "rule",
        "risk",
    }
    report = json.loads(report_path.read_text())
    section = report["policies"][str(strict)]
    assert section["policy"]["name"] == "strict"
    totals = section["totals"]
    assert totals["lines"] == 13 and totals["invalid"] == 1
    assert totals["admitted"] == 4 and totals["refused"] == 8  # 2 per account per minute
    assert section["invalid_lines"][0]["line"] == 5
    efficacy = section["efficacy"]
    assert efficacy["attacker_output_tokens_requested"] == 600
    assert efficacy["attacker_output_tokens_served"] == 200
    assert efficacy["benign_accounts_affected"] == 1
    captured = capsys.readouterr()
    assert "leak 33.33%" in captured.out
    assert f"{traffic}:6: not valid JSON" in captured.err  # 1-based, like an editor


def test_compare_puts_both_policies_side_by_side_and_html_renders(
    tmp_path: Path, traffic: Path, labels: Path
) -> None:
    strict = policy_file(tmp_path, name="strict", requests="2/minute")
    loose = policy_file(tmp_path, name="loose", requests="100/minute")
    report_path, page = tmp_path / "r.json", tmp_path / "r.html"
    code = main(
        ["replay", str(traffic), "--policy", str(strict), "--decisions", str(tmp_path / "d.jsonl"),
         "--labels", str(labels), "--compare", str(loose),
         "--compare-decisions", str(tmp_path / "d2.jsonl"),
         "--report", str(report_path), "--html", str(page)]
    )  # fmt: skip
    assert code == 0
    policies = json.loads(report_path.read_text())["policies"]
    assert list(policies) == [str(strict), str(loose)]
    assert policies[str(loose)]["totals"]["refused"] == 0
    assert policies[str(strict)]["totals"]["refused"] == 8
    assert len(read_lines(tmp_path / "d2.jsonl")) == 13

    parser = Structure()
    parser.feed(page.read_text())
    assert parser.tags["svg"] >= 4  # two classes x two policies
    assert parser.tags["polyline"] == 2 * parser.tags["svg"]
    assert parser.tags["table"] >= 6
    assert parser.tags.get("script", 0) == 0 and not parser.fetched  # self-contained
    assert "Side by side" in parser.text
    assert "strict" in parser.text and "loose" in parser.text
    assert "0.3333" in parser.text  # the strict policy's leak


class Structure(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[str, int] = {}
        self.fetched: list[str] = []
        self.text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1
        self.fetched += [v or "" for k, v in attrs if k in ("src", "href")]

    def handle_data(self, data: str) -> None:
        self.text += data


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--labels", "missing.json"], "labels"),
        (["--compare", "nope.yaml"], "nope.yaml"),
        # Was silently ignored: the file asked for was never written.
        (["--compare-decisions", "d2.jsonl"], "--compare-decisions needs --compare"),
    ],
)
def test_bad_inputs_exit_2_with_a_message(
    tmp_path: Path,
    traffic: Path,
    extra: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["replay", str(traffic), "--policy", str(policy_file(tmp_path)),
            "--decisions", str(tmp_path / "d.jsonl"), *extra]  # fmt: skip
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_missing_traffic_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["replay", str(tmp_path / "none.jsonl"), "--policy", str(policy_file(tmp_path)),
            "--decisions", str(tmp_path / "d.jsonl")]  # fmt: skip
    assert main(args) == 2
    assert "no such traffic log" in capsys.readouterr().err


def test_every_malformed_line_is_reported_past_the_first_ten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines: list[dict[str, object] | str] = [record("a1", T0, output=10)]
    lines += [f'{{"ts": {i}}}' for i in range(12)]  # no account
    traffic = write_traffic(tmp_path / "traffic.jsonl", lines)
    out = tmp_path / "d.jsonl"
    args = ["replay", str(traffic), "--policy", str(policy_file(tmp_path)), "--decisions", str(out)]
    assert main(args) == 0
    decisions = read_lines(out)
    assert [d["line"] for d in decisions if "error" in d] == list(range(1, 13))
    err = capsys.readouterr().err
    assert f"{traffic}:11: account is missing" in err and f"{traffic}:12:" not in err
    assert f"{traffic}: 2 more malformed lines" in err


def test_several_logs_replay_as_one_and_malformed_lines_name_their_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # An audit log and its rotated file, named newest first as a shell glob lists them.
    older = write_traffic(tmp_path / "audit.jsonl.1", [record("a", T0 + i) for i in range(3)])
    newer = write_traffic(tmp_path / "audit.jsonl", [record("a", T0 + 3), "{oops"])
    out, report_path = tmp_path / "d.jsonl", tmp_path / "r.json"
    code = main(
        ["replay", str(newer), str(older), "--policy", str(policy_file(tmp_path)),
         "--decisions", str(out), "--report", str(report_path)]
    )  # fmt: skip
    assert code == 0
    decisions = read_lines(out)
    # 2/minute: the first two in time are admitted, whichever file was named first.
    assert [d["admitted"] for d in decisions] == [True, True, False, False, False]
    assert [d["source"] for d in decisions] == [
        f"{older}:1", f"{older}:2", f"{older}:3", f"{newer}:1", f"{newer}:2"
    ]  # fmt: skip
    report = json.loads(report_path.read_text())
    assert report["traffic"] == [str(newer), str(older)]
    section = report["policies"][str(policy_file(tmp_path))]
    assert section["invalid_lines"] == [{"line": 4, "error": decisions[4]["error"], "source": f"{newer}:2"}]  # fmt: skip
    assert f"{newer}:2: not valid JSON" in capsys.readouterr().err


def test_a_missing_log_among_several_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    present = write_traffic(tmp_path / "t.jsonl", [record("a", T0)])
    missing = tmp_path / "gone.jsonl"
    code = main(
        ["replay", str(present), str(missing), "--policy", str(policy_file(tmp_path)),
         "--decisions", str(tmp_path / "d.jsonl")]
    )  # fmt: skip
    assert code == 2
    assert f"no such traffic log: {missing}" in capsys.readouterr().err


def test_a_cut_compressed_log_stops_the_replay_with_its_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = write_traffic(tmp_path / "t.jsonl", [record("a", T0 + i) for i in range(400)])
    packed = gzip.compress(whole.read_bytes())
    cut = tmp_path / "audit.jsonl.1.gz"
    cut.write_bytes(packed[: len(packed) // 2])
    report = tmp_path / "r.json"
    code = main(
        ["replay", str(cut), "--policy", str(policy_file(tmp_path)),
         "--decisions", str(tmp_path / "d.jsonl"), "--report", str(report)]
    )  # fmt: skip
    assert code == 2 and not report.exists()  # no report on part of the traffic
    err = capsys.readouterr().err
    assert f"{cut}: cannot read on after line" in err and "Traceback" not in err


class _Stdin:
    """What ``sys.stdin`` offers the command: a binary ``buffer``."""

    def __init__(self, data: bytes) -> None:
        self.buffer = io.BytesIO(data)


@pytest.mark.parametrize("compress", [False, True])
def test_standard_input_replays_as_a_file_would_for_both_policies(
    tmp_path: Path, traffic: Path, monkeypatch: pytest.MonkeyPatch, compress: bool
) -> None:
    strict = policy_file(tmp_path, name="strict", requests="2/minute")
    loose = policy_file(tmp_path, name="loose", requests="100/minute")

    def replay(log: str, tag: str) -> tuple[bytes, bytes, dict[str, Any]]:
        out, out2, report = (
            tmp_path / f"{tag}.jsonl",
            tmp_path / f"{tag}2.jsonl",
            tmp_path / f"{tag}.json",
        )
        code = main(
            ["replay", log, "--policy", str(strict), "--decisions", str(out), "--compare",
             str(loose), "--compare-decisions", str(out2), "--report", str(report)]
        )  # fmt: skip
        assert code == 0
        return out.read_bytes(), out2.read_bytes(), json.loads(report.read_text())

    from_file = replay(str(traffic), "file")
    data = traffic.read_bytes()
    monkeypatch.setattr("sys.stdin", _Stdin(gzip.compress(data) if compress else data))
    from_stdin = replay("-", "stdin")
    assert from_stdin[:2] == from_file[:2]  # both policies: the pipe was read once, kept
    assert from_stdin[2]["traffic"] == "-"
    assert [p["totals"] for p in from_stdin[2]["policies"].values()] == [
        p["totals"] for p in from_file[2]["policies"].values()
    ]


def test_standard_input_named_twice_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["replay", "-", "-", "--policy", str(policy_file(tmp_path)), "--decisions", str(tmp_path / "d.jsonl")])  # fmt: skip
    assert code == 2 and "standard input (-) can be read once" in capsys.readouterr().err


def test_standard_input_merges_with_files_and_is_named_dash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    older = write_traffic(tmp_path / "audit.jsonl.1", [record("a", T0), record("a", T0 + 2)])
    piped = write_traffic(tmp_path / "piped.jsonl", [record("a", T0 + 1)]).read_bytes()
    monkeypatch.setattr("sys.stdin", _Stdin(piped))
    out = tmp_path / "d.jsonl"
    code = main(["replay", "-", str(older), "--policy", str(policy_file(tmp_path)), "--decisions", str(out)])  # fmt: skip
    assert code == 0
    assert [d["source"] for d in read_lines(out)] == [f"{older}:1", "-:1", f"{older}:2"]
