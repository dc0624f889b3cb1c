"""Diversity: how many of the recent prompts are distinct, at the rate they arrive.

Evidence: Carlini et al. (2024) and Finlayson et al. (2024) probe a model with
the *same* prompt under many ``logit_bias`` vectors; distillation of output
distributions resamples the same prompt many times. Both show as very few
distinct prompts at high volume. A person rarely repeats a prompt verbatim
dozens of times in minutes.

The window holds the last ``window`` prompt hashes (CRC-32 of the text: the
exact prompt, not the template, which ``template_repetition`` covers) and their
arrival times, in two typed arrays (1.5 KB for the default window: a count per hash
in a dict held ten times that, per subject); the distinct count, exact for the window,
is taken when the detector is scored, every few observations. A sketch (HyperLogLog,
KMV) would only pay off for far larger windows. The repeat share is gated by the
request rate over the window.

Minimum evidence: ``min_events`` prompts in the window.
"""

from __future__ import annotations

import zlib
from array import array
from typing import Any

from hydraguard.assess.config import Diversity
from hydraguard.assess.detectors.base import EventMemo, Scope, ramp
from hydraguard.assess.events import RequestEvent


class DiversityState:
    __slots__ = ("hashes", "pos", "times")

    def __init__(self) -> None:
        # Typed arrays, a ring each: numbers only, never scanned by the garbage collector.
        self.hashes = array("I")
        self.times = array("d")
        self.pos = 0  # oldest entry once the ring is full

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
        state.hashes = array("I", [int(h) & 0xFFFFFFFF for h in data.get("hashes", ())][:window])
        state.times = array("d", [float(t) for t in data.get("times", ())][: len(state.hashes)])
        state.times.extend([0.0] * (len(state.hashes) - len(state.times)))
        state.pos = int(data.get("pos", 0)) % window if state.hashes else 0
        return state

    def observe(self, state: DiversityState, event: RequestEvent) -> None:
        memo = self._memo
        if memo.event is not event:
            memo.event = event
            memo.value = zlib.crc32(event.prompt.encode("utf-8", "surrogatepass"))
        digest: int = memo.value
        if len(state.hashes) < self.config.window:
            state.hashes.append(digest)
            state.times.append(event.ts)
        else:
            pos = state.pos
            state.hashes[pos], state.times[pos] = digest, event.ts
            state.pos = (pos + 1) % self.config.window

    def score(self, state: DiversityState, now: float) -> float:
        n = len(state.hashes)
        config = self.config
        if n < config.min_events:
            return 0.0
        newest = state.times[state.pos - 1]
        oldest = state.times[state.pos]
        minutes = max(newest - oldest, 1.0) / 60.0
        rate = ramp((n - 1) / minutes, config.rate_low, config.rate_high)
        if not rate:  # too slow to matter: the distinct count is not needed
            return 0.0
        repeats = 1.0 - len(set(state.hashes)) / n
        return ramp(repeats, config.low, config.high) * rate
