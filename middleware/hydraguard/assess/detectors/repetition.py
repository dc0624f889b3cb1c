"""Template repetition: the share of recent prompts that near-duplicate another recent one.

Evidence: Anthropic's reports on distillation campaigns (2025-2026) describe
millions of prompts generated from a small set of templates and spread over
"hydra clusters" of fraudulent accounts; OpenAI and Google describe the same
pattern. A person rarely sends the same prompt skeleton dozens of times in a
row; a generator does. Prompts are compared by their template fingerprint
(``inspect.template``): SimHash within ``max_distance`` bits counts as the
same template. LSH band keys find the candidates in O(bands): the latest
few fingerprints of each shared band are compared, so a lookup never scans
the window (an older near-duplicate hidden behind newer far ones in every
band is missed; a real template flood keeps its bands fresh).

Minimum evidence: ``min_events`` prompts in the window.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from hydraguard.assess.config import TemplateRepetition
from hydraguard.assess.detectors.base import EventMemo, Scope, ramp
from hydraguard.assess.events import RequestEvent

_HOLDERS = 4  # latest fingerprints kept per band key and compared


class RepetitionState:
    __slots__ = ("dups", "flags", "fps", "index", "keys", "pos")

    def __init__(self) -> None:
        self.fps: list[int] = []
        self.flags: list[bool] = []  # was a near-duplicate when it arrived
        self.keys: list[list[int]] = []  # band keys of each fingerprint (derived)
        self.pos = 0
        self.dups = 0
        # band key -> [fingerprints in the window carrying it, the latest few of them]
        self.index: dict[int, list[Any]] = {}

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
        width = 64 // self.bands
        self.mask = (1 << width) - 1
        self.layout = tuple((band << 64, band * width) for band in range(self.bands))
        self._memo = EventMemo()  # the account and the cluster share one event's keys

    def _keys(self, fp: int) -> list[int]:
        mask = self.mask
        return [tag | ((fp >> shift) & mask) for tag, shift in self.layout]

    def new_state(self) -> RepetitionState:
        return RepetitionState()

    def load_state(self, data: dict[str, Any]) -> RepetitionState:
        state = RepetitionState()
        fps = [int(f) for f in data.get("fps", ())][: self.window]
        flags = [bool(f) for f in data.get("flags", ())][: len(fps)]
        state.fps, state.flags = fps, flags + [False] * (len(fps) - len(flags))
        state.pos = int(data.get("pos", 0)) % self.window if fps else 0
        state.dups = sum(state.flags)
        state.keys = [self._keys(fp) for fp in fps]
        ordered = fps[state.pos :] + fps[: state.pos] if len(fps) == self.window else fps
        for fp in ordered:
            for key in self._keys(fp):
                entry = state.index.setdefault(key, [0, deque(maxlen=_HOLDERS)])
                entry[0] += 1
                entry[1].append(fp)
        return state

    def observe(self, state: RepetitionState, event: RequestEvent) -> None:
        fp = event.template
        memo = self._memo
        if memo.event is not event:
            memo.event, memo.value = event, self._keys(fp)
        keys: list[int] = memo.value
        index = state.index
        full = len(state.fps) >= self.window
        pos = state.pos
        if full:  # the oldest leaves the window first
            for key in state.keys[pos]:
                entry = index[key]
                if entry[0] > 1:
                    entry[0] -= 1
                    # The window is FIFO: when every holder is still in it, the
                    # leaving fingerprint is the oldest holder. So the holders
                    # stay the latest min(count, _HOLDERS) in the window.
                    if len(entry[1]) > entry[0]:
                        entry[1].popleft()
                else:
                    del index[key]
            state.dups -= state.flags[pos]
        # A prompt repeats a template when it shares a band with a recent one
        # and is within max_distance of one of that band's latest holders.
        limit = self.max_distance
        dup = False
        for key in keys:
            held = index.get(key)
            if held is None:
                index[key] = [1, deque((fp,), _HOLDERS)]
                continue
            if not dup:
                for other in held[1]:
                    if (fp ^ other).bit_count() <= limit:
                        dup = True
                        break
            held[0] += 1
            held[1].append(fp)
        if full:
            state.fps[pos], state.flags[pos], state.keys[pos] = fp, dup, keys
            state.pos = (pos + 1) % self.window
        else:
            state.fps.append(fp)
            state.flags.append(dup)
            state.keys.append(keys)
        state.dups += dup

    def score(self, state: RepetitionState, now: float) -> float:
        n = len(state.fps)
        if n < self.config.min_events:
            return 0.0
        return ramp(state.dups / n, self.config.low, self.config.high)
