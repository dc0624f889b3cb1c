from __future__ import annotations

import io

from hydraguard.replay.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_no_bar_unless_stderr_is_a_terminal() -> None:
    assert Progress.maybe(100, "replay", io.StringIO()) is None


def test_the_bar_redraws_in_place_and_ends_with_a_newline() -> None:
    out = Terminal()
    progress = Progress.maybe(4096, "replay default", out)
    assert progress is not None
    for _ in range(4096):
        progress.advance(1)
    progress.close()
    text = out.getvalue()
    assert text.startswith("\rreplay default [") and text.endswith("\n")
    assert "100%" in text and "4096 lines" in text
