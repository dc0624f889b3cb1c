from __future__ import annotations

import io
from pathlib import Path

from replay_helpers import T0, record, small_policy, write_traffic

from hydraguard.replay.progress import Progress
from hydraguard.replay.run import BATCH, replay_file


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_no_bar_unless_stderr_is_a_terminal() -> None:
    assert Progress.maybe(100, "replay", io.StringIO()) is None


def test_the_bar_redraws_in_place_and_ends_with_a_newline() -> None:
    out = Terminal()
    progress = Progress.maybe(4096, "replay default", out)
    assert progress is not None
    for done in range(0, 4097, 512):
        progress.update(done, done)
    progress.close()
    text = out.getvalue()
    assert text.startswith("\rreplay default [") and text.endswith("\n")
    assert "100%" in text and "4096 lines" in text


async def test_a_replay_draws_the_bar_to_the_end_of_the_log(tmp_path: Path) -> None:
    # The loop tells the bar where it is only every few thousand lines; the last line
    # still shows the whole log done.
    lines = BATCH + 5
    traffic = write_traffic(
        tmp_path / "t.jsonl", [record(f"a{i % 50}", T0 + i) for i in range(lines)]
    )
    out = Terminal()
    progress = Progress.maybe(traffic.stat().st_size, "replay small", out)
    await replay_file(traffic, small_policy(tmp_path, requests="1000/minute"), progress=progress)
    last = out.getvalue().rstrip("\n").rsplit("\r", 1)[-1]
    assert "100%" in last and f"{lines} lines" in last
