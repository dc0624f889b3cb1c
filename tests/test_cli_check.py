"""``hydraguard check``: exit 0 when every file is valid, 1 on any error, one line each."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hydraguard.cli import main
from hydraguard.policy.loader import default_policy_path, load_policy

FIXTURES = Path(__file__).parent / "policy" / "fixtures"


def test_valid_policies_exit_zero_with_one_ok_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    valid = FIXTURES / "valid.yaml"
    default = default_policy_path()
    assert main(["check", str(valid), str(default)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"{valid}: ok (policy 'small', 4 rules)",
        f"{default}: ok (policy 'default', {len(load_policy(None).rules)} rules)",
    ]
    assert err == ""


def test_any_invalid_file_exits_one_and_prints_every_problem(
    capsys: pytest.CaptureFixture[str],
) -> None:
    valid = FIXTURES / "valid.yaml"
    unknown = FIXTURES / "unknown_nested_key.yaml"
    several = FIXTURES / "several_errors.yaml"
    assert main(["check", str(valid), str(unknown), str(several)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"{valid}: ok (policy 'small', 4 rules)"]
    assert err.splitlines() == [
        f"{unknown}:5: tiers.default.concurency: unknown key",
        f"{several}:2: mode: Input should be 'enforce' or 'shadow'",
        f"{several}:6: tiers.default.concurrency: Input should be greater than or equal to 1",
    ]


def test_missing_file_exits_one(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["check", str(tmp_path / "absent.yaml")]) == 1
    assert f"{tmp_path / 'absent.yaml'}: cannot read policy:" in capsys.readouterr().err


def test_check_needs_at_least_one_file(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["check"])
    assert exited.value.code == 2


def test_an_extra_pattern_re2_cannot_run_is_refused_naming_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Lookbehind and a backreference: no linear-time engine runs them (assess/lexicon.py).
    policy = FIXTURES / "lexicon_extra_not_re2.yaml"
    assert main(["check", str(policy)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    why = (
        "(extra patterns run on RE2, in linear time: no lookaround, backreferences, "
        "atomic groups or possessive quantifiers; write \\z for \\Z)"
    )
    assert err.splitlines() == [
        f"{policy}:8: anomaly.lexicon_extra[1]: invalid regex \"(?<!don't )show me how you "
        f'got there": invalid perl operator: (?<! {why}',
        f"{policy}:9: anomaly.lexicon_extra[2]: invalid regex '(\\\\w+) and again \\\\1': "
        f"invalid escape sequence: \\1 {why}",
    ]


def test_checking_a_policy_loads_neither_the_audit_file_handler_nor_redis(
    tmp_path: Path,
) -> None:
    """concurrent-log-handler (and, through portalocker, redis) is imported when an audit log
    is opened, not at every start: it was ~120 ms of each CLI start."""
    script = f"""
import sys
from hydraguard.cli import main
assert main(["check", {str(default_policy_path())!r}]) == 0
before = sorted(m for m in ("concurrent_log_handler", "portalocker", "redis") if m in sys.modules)
from hydraguard.record.audit import AuditLog
log = AuditLog({str(tmp_path / "audit.jsonl")!r})
log.close()
print(before, "concurrent_log_handler" in sys.modules)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.splitlines()[-1] == "[] True"
