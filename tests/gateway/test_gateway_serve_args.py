"""`hydraguard serve` refuses what cannot work before starting any worker."""

from __future__ import annotations

import socket

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


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "99999"], "argument --port: 99999 is out of range (0-65535)"),
        (["--port", "http"], "argument --port: 'http' is not a whole number"),
        (["--workers", "0"], "argument --workers: 0 is out of range (at least 1)"),
        (["--read-timeout", "0"], "argument --read-timeout: 0 seconds: must be more than 0"),
        (
            ["--connect-timeout", "-1"],
            "argument --connect-timeout: -1 seconds: must be more than 0",
        ),
        (["--mock-latency", "nan"], "argument --mock-latency: nan seconds: must be 0 or more"),
        (["--log-level", "loud"], "argument --log-level: invalid choice: 'loud'"),
    ],
)
def test_bad_numbers_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", *argv])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("upstream", "message"),
    [
        ("ftp://api.example", "upstream must be an http(s) base URL"),
        ("api.example", "upstream must be an http(s) base URL"),
        ("http://[::1", "upstream 'http://[::1' is not a URL"),
        ("http://api.example:99999", "has port 99999, not in 1-65535"),
        ("https://api.example/v1?key=1", "without query or fragment"),
    ],
)
def test_bad_upstream_is_refused_before_starting(
    upstream: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--upstream", upstream, "--port", "1"]) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


def test_port_in_use_is_refused_before_workers_start(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = [
            "serve",
            "--workers",
            "2",
            "--storage",
            "redis://127.0.0.1:1/0",
            "--port",
            str(port),
        ]
        assert main(argv) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
