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
the most distinct temperatures seen for one template in the window. The window's
(template, temperature) pairs are two typed arrays (under 1 KB), and the sweep is
counted when the detector is scored, every few observations, and only when the window
holds enough distinct temperatures for a sweep at all (a dict of temperatures per
template, kept up to date on every request, held some 20 KB per subject).

Minimum evidence: ``min_events`` requests in the window (a sweep needs at
least ``sweep_low`` distinct temperatures by construction).
"""

from __future__ import annotations

from array import array
from collections import Counter
from typing import Any

from hydraguard.assess.config import ExtractionParams
from hydraguard.assess.detectors.base import Ring, Scope, ramp
from hydraguard.assess.events import RequestEvent

_MASK64 = (1 << 64) - 1  # a template fingerprint (0 for no text)


class ExtractionState:
    __slots__ = ("pos", "strength", "temperatures", "templates")

    def __init__(self, strength: Ring) -> None:
        self.strength = strength
        # A ring of (template, temperature) of the requests that set a temperature.
        self.templates = array("Q")
        self.temperatures = array("d")
        self.pos = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "strength": self.strength.to_dict(),
            "pairs": [[t, temp] for t, temp in zip(self.templates, self.temperatures, strict=True)],
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
            state.templates.append(int(template) & _MASK64)
            state.temperatures.append(float(temperature))
        state.pos = int(data.get("pos", 0)) % self.config.window if state.templates else 0
        return state

    def observe(self, state: ExtractionState, event: RequestEvent) -> None:
        state.strength.push(self.probe_strength(event))
        if event.temperature is None:
            return
        template, temperature = event.template & _MASK64, round(event.temperature, 2)
        if len(state.templates) < self.config.window:
            state.templates.append(template)
            state.temperatures.append(temperature)
            return
        pos = state.pos
        state.templates[pos], state.temperatures[pos] = template, temperature
        state.pos = 0 if pos + 1 == self.config.window else pos + 1

    def score(self, state: ExtractionState, now: float) -> float:
        config = self.config
        probes = 0.0
        if len(state.strength) >= config.min_events:
            probes = ramp(state.strength.mean(), config.low, config.high)
        return max(probes, ramp(self._widest(state), config.sweep_low, config.sweep_high))

    def _widest(self, state: ExtractionState) -> int:
        """The most distinct temperatures of one template in the window."""
        distinct = len(set(state.temperatures))
        if distinct < self.config.sweep_low:  # no template can have more: scores 0 either way
            return distinct
        pairs = set(zip(state.templates, state.temperatures, strict=True))
        return max(Counter(template for template, _ in pairs).values())
