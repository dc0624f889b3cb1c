"""Diversity: how many of the recent prompts are distinct, at the rate they arrive.

Evidence: Carlini et al. (2024) and Finlayson et al. (2024) probe a model with
the *same* prompt under many ``logit_bias`` vectors; distillation of output
distributions resamples the same prompt many times. Both show as very few
distinct prompts at high volume. A person rarely repeats a prompt verbatim
dozens of times in minutes.

The window holds the last ``window`` prompt hashes (CRC-32 of the text: the
exact prompt, not the template, which ``template_repetition`` covers) and a
count per hash, so the distinct count is exact for the window and memory is
bounded; a sketch (HyperLogLog, KMV) would only pay off for far larger
windows. The repeat share is gated by the request rate over the window.

Minimum evidence: ``min_events`` prompts in the window.
"""

from __future__ import annotations

import zlib
from typing import Any

from hydraguard.assess.config import Diversity
from hydraguard.assess.detectors.base import EventMemo, Scope, ramp
from hydraguard.assess.events import RequestEvent


class DiversityState:
    __slots__ = ("counts", "hashes", "pos", "times")

    def __init__(self) -> None:
        self.hashes: list[int] = []
        self.times: list[float] = []
        self.pos = 0  # oldest entry once the ring is full
        self.counts: dict[int, int] = {}

    def to_dict(self) -> dict[str, Any]:
        return {"hashes": list(self.hashes), "times": list(self.times), "pos": self.pos}


class DiversityDetector:
    name = "diversity"
    arrival = False

    def __init__(self, config: Diversity, scope: Scope = "account") -> None:
        self.config = config
        self._memo = EventMemo()

    def new_state(self) -> DiversityState:
        return DiversityState()

    def load_state(self, data: dict[str, Any]) -> DiversityState:
        state = DiversityState()
        window = self.config.window
        state.hashes = [int(h) for h in data.get("hashes", ())][:window]
        state.times = [float(t) for t in data.get("times", ())][: len(state.hashes)]
        state.times += [0.0] * (len(state.hashes) - len(state.times))
        state.pos = int(data.get("pos", 0)) % window if state.hashes else 0
        for h in state.hashes:
            state.counts[h] = state.counts.get(h, 0) + 1
        return state

    def observe(self, state: DiversityState, event: RequestEvent) -> None:
        memo = self._memo
        if memo.event is not event:
            memo.event = event
            memo.value = zlib.crc32(event.prompt.encode("utf-8", "surrogatepass"))
        digest: int = memo.value
        counts = state.counts
        if len(state.hashes) < self.config.window:
            state.hashes.append(digest)
            state.times.append(event.ts)
        else:
            pos = state.pos
            old = state.hashes[pos]
            if counts[old] > 1:
                counts[old] -= 1
            else:
                del counts[old]
            state.hashes[pos], state.times[pos] = digest, event.ts
            state.pos = (pos + 1) % self.config.window
        counts[digest] = counts.get(digest, 0) + 1

    def score(self, state: DiversityState, now: float) -> float:
        n = len(state.hashes)
        config = self.config
        if n < config.min_events:
            return 0.0
        newest = state.times[state.pos - 1]
        oldest = state.times[state.pos]
        minutes = max(newest - oldest, 1.0) / 60.0
        repeats = 1.0 - len(state.counts) / n
        return ramp(repeats, config.low, config.high) * ramp(
            (n - 1) / minutes, config.rate_low, config.rate_high
        )
