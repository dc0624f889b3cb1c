"""Extraction parameters: requests shaped like probes of the model rather than uses of it.

Evidence: Carlini et al., "Stealing Part of a Production Language Model"
(ICML 2024), recovered the embedding projection layer of production models
through ``logit_bias`` plus ``logprobs``/``top_logprobs`` queries, often
with ``max_tokens=1``; Finlayson et al., "Logits of API-Protected LLMs Leak
Proprietary Information" (2024), showed that full-vocabulary log-probabilities
reveal the hidden size and more. Distillation of output distributions adds
``n > 1`` samples and temperature sweeps over the same prompt.

Each request gets a probe strength (noisy-OR of its parameters); the score is
the larger of the mean strength over the window and the temperature sweep:
the most distinct temperatures seen for one template in the window.

Minimum evidence: ``min_events`` requests in the window (a sweep needs at
least ``sweep_low`` distinct temperatures by construction).
"""

from __future__ import annotations

from typing import Any

from hydraguard.assess.config import ExtractionParams
from hydraguard.assess.detectors.base import Ring, Scope, ramp
from hydraguard.assess.events import RequestEvent


class ExtractionState:
    __slots__ = ("pairs", "pos", "strength", "temps", "widths")

    def __init__(self, strength: Ring) -> None:
        self.strength = strength
        self.pairs: list[tuple[int, float]] = []  # (template, temperature), a ring
        self.pos = 0
        self.temps: dict[int, dict[float, int]] = {}  # template -> temperature -> count
        self.widths: dict[int, int] = {}  # distinct temperatures -> templates with that many

    def to_dict(self) -> dict[str, Any]:
        return {
            "strength": self.strength.to_dict(),
            "pairs": [[t, temp] for t, temp in self.pairs],
            "pos": self.pos,
        }


class ExtractionParamsDetector:
    name = "extraction_params"
    arrival = False

    def __init__(self, config: ExtractionParams, scope: Scope = "account") -> None:
        self.config = config

    def probe_strength(self, event: RequestEvent) -> float:
        max_tokens = event.max_tokens
        if not (
            event.logit_bias
            or event.logprobs
            or event.top_logprobs
            or event.n > 1
            or (max_tokens is not None and max_tokens <= self.config.small_max_tokens)
        ):
            return 0.0  # the common case
        keep = 1.0  # probability that the request is *not* a probe
        if event.logit_bias:
            keep *= 0.2
        if event.logprobs or event.top_logprobs:
            keep *= 0.3 if (event.top_logprobs or 0) >= 5 else 0.5
        if event.max_tokens is not None and event.max_tokens <= self.config.small_max_tokens:
            keep *= 0.4
        if event.n > 1:
            keep *= 0.7
        return 1.0 - keep

    def new_state(self) -> ExtractionState:
        return ExtractionState(Ring(self.config.window))

    def load_state(self, data: dict[str, Any]) -> ExtractionState:
        state = ExtractionState(Ring.from_dict(self.config.window, data.get("strength", {})))
        for template, temperature in data.get("pairs", ())[: self.config.window]:
            self._add_pair(state, (int(template), float(temperature)))
        state.pos = int(data.get("pos", 0)) % self.config.window if state.pairs else 0
        return state

    @staticmethod
    def _add_pair(state: ExtractionState, pair: tuple[int, float]) -> None:
        state.pairs.append(pair)
        _count(state, pair, +1)

    def observe(self, state: ExtractionState, event: RequestEvent) -> None:
        state.strength.push(self.probe_strength(event))
        if event.temperature is None:
            return
        pair = (event.template, round(event.temperature, 2))
        if len(state.pairs) < self.config.window:
            self._add_pair(state, pair)
            return
        _count(state, state.pairs[state.pos], -1)
        _count(state, pair, +1)
        state.pairs[state.pos] = pair
        state.pos = (state.pos + 1) % self.config.window

    def score(self, state: ExtractionState, now: float) -> float:
        config = self.config
        probes = 0.0
        if len(state.strength) >= config.min_events:
            probes = ramp(state.strength.mean(), config.low, config.high)
        widest = max(state.widths) if state.widths else 0
        return max(probes, ramp(widest, config.sweep_low, config.sweep_high))


def _count(state: ExtractionState, pair: tuple[int, float], delta: int) -> None:
    """Add or remove one (template, temperature) and keep the width histogram in step."""
    template, temperature = pair
    seen = state.temps.get(template)
    if seen is None:
        seen = state.temps[template] = {}
    before = len(seen)
    count = seen.get(temperature, 0) + delta
    if count:
        seen[temperature] = count
    else:
        del seen[temperature]
    after = len(seen)
    if after != before:
        widths = state.widths
        if before:
            if widths[before] > 1:
                widths[before] -= 1
            else:
                del widths[before]
        if after:
            widths[after] = widths.get(after, 0) + 1
        else:
            del state.temps[template]
