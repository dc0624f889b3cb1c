"""`hydraguard serve` refuses what cannot work before starting any worker."""

from __future__ import annotations

import pytest

from hydraguard.cli import main


def test_unknown_storage_is_refused_before_workers_start(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve", "--storage", "bogus://x", "--workers", "2", "--port", "1"]) == 2
    error = capsys.readouterr().err
    assert "unknown storage 'bogus://x'" in error
    assert "redis://" in error


def test_upstream_timeouts_are_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = capsys.readouterr().out
    assert "--connect-timeout" in text and "--read-timeout" in text
