"""Template repetition: the share of recent prompts that near-duplicate another recent one.

Evidence: Anthropic's reports on distillation campaigns (2025-2026) describe
millions of prompts generated from a small set of templates and spread over
"hydra clusters" of fraudulent accounts; OpenAI and Google describe the same
pattern. A person rarely sends the same prompt skeleton dozens of times in a
row; a generator does. Prompts are compared by their template fingerprint
(``inspect.template``): SimHash within ``max_distance`` bits counts as the
same template. LSH band keys find candidates in O(bands), so a lookup does not
scan the window.

Minimum evidence: ``min_events`` prompts in the window.
"""

from __future__ import annotations

from typing import Any

from hydraguard.assess.config import TemplateRepetition
from hydraguard.assess.detectors.base import Scope, ramp
from hydraguard.assess.events import RequestEvent


class RepetitionState:
    __slots__ = ("dups", "flags", "fps", "index", "pos")

    def __init__(self) -> None:
        self.fps: list[int] = []
        self.flags: list[bool] = []  # was a near-duplicate when it arrived
        self.pos = 0
        self.dups = 0
        self.index: dict[int, int] = {}  # band key -> fingerprints in the window carrying it

    def to_dict(self) -> dict[str, Any]:
        return {"fps": list(self.fps), "flags": list(self.flags), "pos": self.pos}


class TemplateRepetitionDetector:
    name = "template_repetition"

    def __init__(self, config: TemplateRepetition, scope: Scope = "account") -> None:
        self.config = config
        self.window = config.window
        self.max_distance = config.max_distance
        # Enough bands that fingerprints within max_distance bits share one.
        self.bands = next(b for b in (4, 8, 16, 32, 64) if b > config.max_distance)
        self.width = 64 // self.bands
        self.mask = (1 << self.width) - 1

    def _keys(self, fp: int) -> list[int]:
        width, mask = self.width, self.mask
        return [(band << 64) | ((fp >> (band * width)) & mask) for band in range(self.bands)]

    def new_state(self) -> RepetitionState:
        return RepetitionState()

    def load_state(self, data: dict[str, Any]) -> RepetitionState:
        state = RepetitionState()
        fps = [int(f) for f in data.get("fps", ())][: self.window]
        flags = [bool(f) for f in data.get("flags", ())][: len(fps)]
        state.fps, state.flags = fps, flags + [False] * (len(fps) - len(flags))
        state.pos = int(data.get("pos", 0)) % self.window if fps else 0
        state.dups = sum(state.flags)
        for fp in fps:
            for key in self._keys(fp):
                state.index[key] = state.index.get(key, 0) + 1
        return state

    def observe(self, state: RepetitionState, event: RequestEvent) -> None:
        fp = event.template
        keys = self._keys(fp)
        index = state.index
        dup = False
        for key in keys:
            if key in index:  # candidate: verify the distance
                limit = self.max_distance
                dup = any((fp ^ other).bit_count() <= limit for other in state.fps)
                break
        if len(state.fps) < self.window:
            state.fps.append(fp)
            state.flags.append(dup)
        else:
            pos = state.pos
            for key in self._keys(state.fps[pos]):
                left = index[key] - 1
                if left:
                    index[key] = left
                else:
                    del index[key]
            state.dups -= state.flags[pos]
            state.fps[pos], state.flags[pos] = fp, dup
            state.pos = (pos + 1) % self.window
        state.dups += dup
        for key in keys:
            index[key] = index.get(key, 0) + 1

    def score(self, state: RepetitionState, now: float) -> float:
        n = len(state.fps)
        if n < self.config.min_events:
            return 0.0
        return ramp(state.dups / n, self.config.low, self.config.high)
