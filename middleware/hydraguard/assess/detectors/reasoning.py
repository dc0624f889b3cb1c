"""Reasoning elicitation: the share of recent prompts asking the model to show its reasoning.

Evidence: Anthropic's 2025-2026 reports on distillation campaigns note that the
templates ask for chain-of-thought ("think step by step", "show your
reasoning", reasoning traces) because the reasoning is the capability being
copied; OpenAI has said the same of attempts to extract its reasoning models'
hidden chains of thought. People write "step by step" too, so the score is a
share over a window: a student's occasional request stays low, a campaign
whose every prompt asks for the trace does not.

The lexicon (``assess.lexicon``, extendable by ``lexicon_extra``) is compiled
once and matched against the lower-cased prompt, once per event even though
the account and the cluster both observe it.

Minimum evidence: ``min_events`` prompts in the window.
"""

from __future__ import annotations

from typing import Any

from hydraguard.assess.config import ReasoningElicitation
from hydraguard.assess.detectors.base import EventMemo, Ring, Scope, ramp
from hydraguard.assess.events import RequestEvent
from hydraguard.assess.lexicon import Lexicon


class ReasoningElicitationDetector:
    name = "reasoning_elicitation"
    arrival = False

    def __init__(
        self,
        config: ReasoningElicitation,
        scope: Scope = "account",
        lexicon_extra: tuple[str, ...] = (),
    ) -> None:
        self.config = config
        self.lexicon = Lexicon(lexicon_extra)
        self._memo = EventMemo()

    def elicits(self, prompt: str) -> bool:
        return self.lexicon.matches(prompt)

    def new_state(self) -> Ring:
        return Ring(self.config.window)

    def load_state(self, data: dict[str, Any]) -> Ring:
        return Ring.from_dict(self.config.window, data)

    def observe(self, state: Ring, event: RequestEvent) -> None:
        memo = self._memo
        if memo.event is not event:
            memo.event, memo.value = event, 1.0 if self.elicits(event.prompt) else 0.0
        state.push(memo.value)

    def score(self, state: Ring, now: float) -> float:
        if len(state) < self.config.min_events:
            return 0.0
        return ramp(state.mean(), self.config.low, self.config.high)
