"""Output appetite: many output tokens per input token, and asking for the maximum every time.

Evidence: distillation harvests completions (Anthropic's 2025-2026 reports on
distillation campaigns; OpenAI's and Google's statements on unauthorised
distillation): short prompts that ask for long, maximal answers, so the
output/input token ratio is high and ``max_tokens`` sits at the tier ceiling.
Either alone is common (SDKs often default ``max_tokens`` to the maximum), so
each contributes half the score.

Both are exponential moving averages over about ``span`` requests; the ratio
needs the response (``output_tokens``), the ceiling share only the request.

Minimum evidence: ``min_events`` requests (and as many responses for the ratio).
"""

from __future__ import annotations

from typing import Any

from hydraguard.assess.config import OutputAppetite
from hydraguard.assess.detectors.base import Scope, ramp
from hydraguard.assess.events import RequestEvent


class AppetiteState:
    __slots__ = ("ceiling_share", "ratio", "requests", "responses")

    def __init__(self) -> None:
        self.ratio = 0.0
        self.ceiling_share = 0.0
        self.requests = 0
        self.responses = 0

    def to_dict(self) -> dict[str, Any]:
        return {s: getattr(self, s) for s in self.__slots__}


class OutputAppetiteDetector:
    name = "output_appetite"
    arrival = False

    def __init__(self, config: OutputAppetite, scope: Scope = "account") -> None:
        self.config = config
        self.alpha = 2.0 / (config.span + 1)

    def new_state(self) -> AppetiteState:
        return AppetiteState()

    def load_state(self, data: dict[str, Any]) -> AppetiteState:
        state = AppetiteState()
        for name in AppetiteState.__slots__:
            kind = type(getattr(state, name))
            setattr(state, name, kind(data.get(name, 0)))
        return state

    def observe(self, state: AppetiteState, event: RequestEvent) -> None:
        alpha = self.alpha
        asked = event.max_tokens
        at_ceiling = (
            1.0
            if asked is not None and asked >= event.max_tokens_ceiling * self.config.max_fraction
            else 0.0
        )
        # The first observation seeds the average instead of dragging it from 0.
        state.ceiling_share = (
            at_ceiling
            if not state.requests
            else state.ceiling_share + alpha * (at_ceiling - state.ceiling_share)
        )
        state.requests += 1
        if event.output_tokens is not None:
            ratio = event.output_tokens / max(event.input_tokens, 1)
            state.ratio = (
                ratio if not state.responses else state.ratio + alpha * (ratio - state.ratio)
            )
            state.responses += 1

    def score(self, state: AppetiteState, now: float) -> float:
        config = self.config
        if state.requests < config.min_events:
            return 0.0
        share = ramp(state.ceiling_share, config.share_low, config.share_high)
        ratio = 0.0
        if state.responses >= config.min_events:
            ratio = ramp(state.ratio, config.ratio_low, config.ratio_high)
        return 0.5 * share + 0.5 * ratio
