"""Types for ``hydraguard serve``'s numeric options: argparse then refuses a bad value with
the option's name and the allowed range, instead of a traceback from deep inside uvicorn
or httpx (a port out of range) or a gateway that times out every request (a zero timeout)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def integer(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            allowed = f"{low}-{high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{value} is out of range ({allowed})")
        return value

    return parse


def seconds(*, zero: bool) -> Callable[[str], float]:
    """A finite number of seconds, positive (or, with ``zero``, not negative)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
            allowed = "0 or more" if zero else "more than 0"
            raise argparse.ArgumentTypeError(f"{text} seconds: must be {allowed}")
        return value

    return parse
