"""What hydraguard learns after a response: the prompt's template (a linking signal)
and the detector features behind the risk score.

Fingerprinting a prompt and updating eight detectors costs more than a decision, so on
the live path it runs after the response has been sent, batched on the event loop
(``defer``); replay runs it inline so a backtest is deterministic.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..inspect.template import band_ids, band_key, fingerprint
from .events import RequestEvent

if TYPE_CHECKING:
    from ..admit.gate import Decision
    from ..cluster.linker import Linker
    from ..inspect.facts import RequestFacts
    from ..policy.compiled import CompiledPolicy
    from .risk import RiskEngine
    from .sharing import RiskSharing

_BATCH = 256  # lessons handled per loop turn, so a backlog never starves requests
_RECENT_TEMPLATES = 8  # an account's latest prompts a template must recur among to link
_ACCOUNTS = 200_000  # accounts whose latest templates are remembered (cleared when full)


class Learning:
    def __init__(
        self, policy: CompiledPolicy, linker: Linker | None, risk: RiskEngine | None
    ) -> None:
        self.policy = policy
        self.linker = linker
        self.risk = risk
        self.bands = 0
        if linker is not None and policy.clustering.enabled:
            for spec in policy.clustering.signals.values():
                if spec.template is not None:
                    self.bands = spec.template.bands
        self.active = risk is not None or self.bands > 0
        self.ceilings = {name: tier.max_output_tokens for name, tier in policy.tiers.items()}
        # account -> its latest prompts' LSH bands, as ints (band_ids): most prompts never
        # recur, so only a recurring band is spelled out as a linking value (band_key)
        self._recent: dict[str, tuple[int, ...]] = {}
        self._queue: list[tuple[Any, ...]] = []
        self._scheduled = False
        self.sharing: RiskSharing | None = None  # set by the Guard on shared storage

    def learn(
        self,
        decision: Decision,
        facts: RequestFacts,
        input_tokens: int,
        output_tokens: int,
        status: int,
        defer: bool,
    ) -> None:
        # Only what learning needs: a queued lesson must not keep the decision's plan alive.
        identity = decision.identity
        cluster = (
            decision.cluster if decision.cluster_size > 1 else None
        )  # a lone account: one subject
        lesson = (
            identity.account,
            identity.tier,
            cluster,
            decision.ts,
            facts,
            input_tokens,
            output_tokens,
            status,
        )
        if not defer:
            self._learn(*lesson)
            return
        self._queue.append(lesson)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._drain)

    def _drain(self) -> None:
        batch, self._queue = self._queue[:_BATCH], self._queue[_BATCH:]
        for lesson in batch:
            self._learn(*lesson)
        if self._queue:
            asyncio.get_running_loop().call_soon(self._drain)
        else:
            self._scheduled = False

    def flush(self) -> None:
        """Learn everything queued now (tests, shutdown)."""
        while self._queue:
            batch, self._queue = self._queue, []
            for lesson in batch:
                self._learn(*lesson)

    def _recurring(self, account: str, template: int) -> dict[str, tuple[str, ...]]:
        """The template's linking signals, once the account sends it (or, with several
        bands, a near-duplicate) a second time among its last ``_RECENT_TEMPLATES`` prompts.

        Templated traffic repeats its templates by design; a one-off prompt links nobody, and
        indexing every one of them would grow the linking index (memory or Redis) with every
        distinct prompt served, forever.
        """
        keys = tuple(band_ids(template, self.bands))
        recent = self._recent.get(account, ())
        again = [key for key in keys if key in recent]
        if len(self._recent) >= _ACCOUNTS and account not in self._recent:
            self._recent.clear()
        self._recent[account] = (recent + keys)[-_RECENT_TEMPLATES * len(keys) :]
        if not again:
            return {}
        return self.linker.extractor.template([band_key(key) for key in again])  # type: ignore[union-attr]

    def _learn(
        self,
        account: str,
        tier: str,
        cluster: str | None,
        ts: float,
        facts: RequestFacts,
        input_tokens: int,
        output_tokens: int,
        status: int,
    ) -> None:
        # A batch is read as its sampled entries, the first standing for the batch's arrival
        # (and its usage); a single request is its own only entry.
        entries = facts.entries
        first = entries[0] if entries else facts
        template = self._template(account, first.prompt, ts)
        # (entry, template) of a batch's other entries; the generators are skipped for one
        # request (their set-up alone cost a detector's observe).
        rest = [(e, self._template(account, e.prompt, ts)) for e in entries[1:]] if entries else ()
        if self.risk is None:
            return
        # Positional: keyword arguments cost a third of building the event.
        event = RequestEvent(
            ts,
            account,
            cluster,
            first.prompt,
            template,
            first.max_tokens,
            self.ceilings[tier],
            first.n,
            first.logprobs,
            first.top_logprobs,
            first.logit_bias,
            first.temperature,
            input_tokens,
            output_tokens,
            status,
            tier,
        )
        # The other entries: what they ask, arriving with the first; the batch's usage is
        # the first event's.
        others = (
            tuple(
                replace(
                    event,
                    prompt=entry.prompt,
                    template=fp,
                    max_tokens=entry.max_tokens,
                    n=entry.n,
                    logprobs=entry.logprobs,
                    top_logprobs=entry.top_logprobs,
                    logit_bias=entry.logit_bias,
                    temperature=entry.temperature,
                    input_tokens=0,
                    output_tokens=None,
                )
                for entry, fp in rest
            )
            if rest
            else ()
        )
        self.risk.observe(event, others)
        if self.sharing is not None:
            self.sharing.learned(account, cluster)

    def _template(self, account: str, prompt: str, ts: float) -> int:
        """The prompt's template fingerprint, learnt as a linking signal once it recurs."""
        template = fingerprint(prompt)
        if self.bands and self.linker is not None and template:
            signals = self._recurring(account, template)
            if signals:
                self.linker.learn(account, signals, ts)
        return template
