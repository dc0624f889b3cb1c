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
    __slots__ = ("pairs", "pos", "strength", "temps")

    def __init__(self, strength: Ring) -> None:
        self.strength = strength
        self.pairs: list[tuple[int, float]] = []  # (template, temperature), a ring
        self.pos = 0
        self.temps: dict[int, dict[float, int]] = {}  # template -> temperature -> count

    def to_dict(self) -> dict[str, Any]:
        return {
            "strength": self.strength.to_dict(),
            "pairs": [[t, temp] for t, temp in self.pairs],
            "pos": self.pos,
        }


class ExtractionParamsDetector:
    name = "extraction_params"

    def __init__(self, config: ExtractionParams, scope: Scope = "account") -> None:
        self.config = config

    def probe_strength(self, event: RequestEvent) -> float:
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
        seen = state.temps.setdefault(pair[0], {})
        seen[pair[1]] = seen.get(pair[1], 0) + 1

    def observe(self, state: ExtractionState, event: RequestEvent) -> None:
        state.strength.push(self.probe_strength(event))
        if event.temperature is None:
            return
        pair = (event.template, round(event.temperature, 2))
        if len(state.pairs) < self.config.window:
            self._add_pair(state, pair)
            return
        old_template, old_temp = state.pairs[state.pos]
        seen = state.temps[old_template]
        if seen[old_temp] > 1:
            seen[old_temp] -= 1
        elif len(seen) > 1:
            del seen[old_temp]
        else:
            del state.temps[old_template]
        state.pairs[state.pos] = pair
        state.pos = (state.pos + 1) % self.config.window
        seen = state.temps.setdefault(pair[0], {})
        seen[pair[1]] = seen.get(pair[1], 0) + 1

    def score(self, state: ExtractionState, now: float) -> float:
        config = self.config
        probes = 0.0
        if len(state.strength) >= config.min_events:
            probes = ramp(state.strength.mean(), config.low, config.high)
        sweep = 0.0
        if state.temps:
            widest = max(len(seen) for seen in state.temps.values())
            sweep = ramp(widest, config.sweep_low, config.sweep_high)
        return max(probes, sweep)
