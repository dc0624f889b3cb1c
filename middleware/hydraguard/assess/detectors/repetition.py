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

The state is flat, sized by the window, whatever the traffic: the ring of
fingerprints, a count and the latest slot per band key, and per slot and band
a link to the previous slot carrying the same key. Walking ``count`` links
from the latest slot visits exactly the window's holders of a key, newest
first, with no per-key containers to allocate, free and garbage-collect.

Minimum evidence: ``min_events`` prompts in the window.
"""

from __future__ import annotations

from typing import Any

from hydraguard.assess.config import TemplateRepetition
from hydraguard.assess.detectors.base import EventMemo, Scope, ramp
from hydraguard.assess.events import RequestEvent

_HOLDERS = 4  # latest fingerprints compared per shared band key
_SLOT_BITS = 16  # index value: count << _SLOT_BITS | latest slot (window <= 4096)
_SLOT_MASK = (1 << _SLOT_BITS) - 1
_ONE = 1 << _SLOT_BITS


class RepetitionState:
    __slots__ = ("dups", "flags", "fps", "index", "keys", "links", "pos")

    def __init__(self) -> None:
        self.fps: list[int] = []  # a ring of the window's fingerprints
        self.flags: list[bool] = []  # was a near-duplicate when it arrived
        self.pos = 0  # the oldest slot once the ring is full
        self.dups = 0
        # Derived, bands entries per slot: its band keys, and per key the previous slot
        # carrying that key.
        self.keys: list[int] = []
        self.links: list[int] = []
        self.index: dict[int, int] = {}  # band key -> count in the window << 16 | latest slot

    def to_dict(self) -> dict[str, Any]:
        return {"fps": list(self.fps), "flags": list(self.flags), "pos": self.pos}


class TemplateRepetitionDetector:
    name = "template_repetition"
    arrival = False

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
        flags += [False] * (len(fps) - len(flags))
        pos = int(data.get("pos", 0)) % self.window if fps else 0
        n = len(fps)
        state.fps = fps
        state.keys = [key for fp in fps for key in self._keys(fp)]
        state.links = [0] * len(state.keys)
        bands = self.bands
        # Relink in the order the fingerprints arrived: oldest first.
        for slot in [*range(pos, n), *range(pos)] if n == self.window else range(n):
            self._link_at(state, slot, state.keys[slot * bands : (slot + 1) * bands])
        state.flags, state.pos, state.dups = flags, pos, sum(flags)
        return state

    def observe(self, state: RepetitionState, event: RequestEvent) -> None:
        memo = self._memo
        if memo.event is not event:
            memo.event, memo.value = event, self._keys(event.template)
        keys: list[int] = memo.value
        self._link(state, event.template, keys)

    def _link(self, state: RepetitionState, fp: int, keys: list[int]) -> None:
        """Add ``fp`` to the window (the oldest leaves a full one) and flag it."""
        bands = self.bands
        fps = state.fps
        if len(fps) >= self.window:  # the oldest leaves the window first
            slot = state.pos
            index = state.index
            base = slot * bands
            for key in state.keys[base : base + bands]:
                value = index[key]
                if value >= 2 * _ONE:
                    index[key] = value - _ONE
                else:
                    del index[key]
            state.dups -= state.flags[slot]
            fps[slot] = fp
            state.keys[base : base + bands] = keys
            state.pos = 0 if slot + 1 == self.window else slot + 1
        else:
            slot = len(fps)
            fps.append(fp)
            state.flags.append(False)
            state.keys += keys
            state.links += keys  # placeholders, set by _link_at
        dup = self._link_at(state, slot, keys)
        state.flags[slot] = dup
        state.dups += dup

    def _link_at(self, state: RepetitionState, slot: int, keys: list[int]) -> bool:
        """Count ``slot``'s keys in the index; whether its fingerprint repeats a holder's.

        A prompt repeats a template when it shares a band with a recent one and is
        within max_distance of one of that band's latest holders.
        """
        fp = state.fps[slot]
        fps, index, links = state.fps, state.index, state.links
        limit = self.max_distance
        bands = self.bands
        base = slot * bands
        dup = False
        for band, key in enumerate(keys):
            value = index.get(key)
            if value is None:
                index[key] = _ONE | slot
                continue
            latest = value & _SLOT_MASK
            if not dup:
                other = latest
                for _ in range(min(value >> _SLOT_BITS, _HOLDERS)):
                    if (fp ^ fps[other]).bit_count() <= limit:
                        dup = True
                        break
                    other = links[other * bands + band]
            links[base + band] = latest
            index[key] = ((value & ~_SLOT_MASK) + _ONE) | slot
        return dup

    def score(self, state: RepetitionState, now: float) -> float:
        n = len(state.fps)
        if n < self.config.min_events:
            return 0.0
        return ramp(state.dups / n, self.config.low, self.config.high)
