"""Benign traffic: one generator per account, records in time order, each persona with
its own rhythm (diurnal sessions, cron batches) and its own kind of prompts."""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hydraguard.simulate import bodies, corpus_attack, prompts, timing
from hydraguard.simulate.accounts import Account
from hydraguard.simulate.scenario import Scenario


@dataclass(frozen=True)
class Rhythm:
    profile: str
    per_day: float  # median sessions per active day (varies per user, log-normal)
    length_mean: float  # mean requests per session
    gap_median: float  # seconds between requests of a session
    weekend: float = 0.7
    document_share: float = 0.1  # prompts that paste a text to work on
    stream_share: float | None = None  # None: the scenario's stream_share


RHYTHMS = {
    "ordinary": Rhythm("ordinary", 3.0, 5.0, 45.0),
    "student": Rhythm("student", 1.5, 3.0, 70.0, weekend=0.8, document_share=0.05),
    "team": Rhythm("work", 3.0, 4.0, 50.0, weekend=0.05, document_share=0.3),
    "heavy": Rhythm("heavy", 14.0, 25.0, 30.0, weekend=0.9, document_share=0.25, stream_share=0.5),
    "developer": Rhythm("work", 1.2, 3.0, 40.0, weekend=0.2, document_share=0.0),
}
_SYSTEMS = ("You are a helpful assistant.", "You are a concise assistant.", "Answer in English.")
_EVAL_OUTPUT = {"sentiment": 2, "mcq": 1, "extract": 40, "translate": 30, "ticket": 35}
_EVAL_MAX = {"sentiment": (5, 16), "mcq": (1, 5), "extract": (256, 512), "translate": (128, 256),
             "ticket": (64, 128)}  # fmt: skip


class _Persona:
    """Per-account habits drawn once, then one record per request."""

    def __init__(self, account: Account, scenario: Scenario) -> None:
        self.account = account
        self.scenario = scenario
        self.rng = rng = random.Random(f"{scenario.seed}/{account.key}/traffic")
        self.rhythm = RHYTHMS[account.kind]
        self.model = rng.choice(bodies.MODELS[account.dialect])
        self.max_choices: tuple[int | None, ...] = (
            (None, None, None, 512, 1024, 2048, 4096)
            if account.dialect == "openai"
            else (1024, 1024, 2048, 4096, 8192)
        )
        self.stream_share = self.rhythm.stream_share or scenario.stream_share

    def session_device(self) -> tuple[dict[str, str], str]:
        rng, acct = self.rng, self.account
        device = acct.devices[1] if len(acct.devices) > 1 and rng.random() < 0.35 else acct.headers
        roam = len(acct.ips) > 1 and rng.random() < 0.15
        return device, rng.choice(acct.ips[1:]) if roam else acct.ips[0]

    def chat(
        self, ts: float, headers: dict[str, str], ip: str, history: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """A human request; ``history`` (the session so far) is extended in place."""
        rng, acct = self.rng, self.account
        median = 350.0
        if history and rng.random() < 0.4:
            text, median = prompts.follow_up(rng), 250.0
        elif acct.kind == "student" and rng.random() < self.scenario.student_step_share:
            text, median = prompts.step_prompt(rng, acct.topics), 600.0
            history.clear()
        elif rng.random() < self.rhythm.document_share:
            text, median = prompts.document_prompt(rng, acct.topics), 400.0
            history.clear()
        else:
            text = prompts.benign_prompt(rng, acct.topics)
            history.clear()
        messages = [*history[-4:], bodies.user(text)]
        request = bodies.body(
            acct.dialect,
            self.model if rng.random() < 0.9 else rng.choice(bodies.MODELS[acct.dialect]),
            messages,
            system=rng.choice(_SYSTEMS) if rng.random() < 0.2 else None,
            max_tokens=rng.choice(self.max_choices),
            temperature=rng.choice((0.2, 0.5, 0.7, 1.0)) if rng.random() < 0.3 else None,
            stream=rng.random() < self.stream_share,
        )
        history.extend(
            (
                bodies.user(text),
                {"role": "assistant", "content": prompts.assistant_reply(rng, text)},
            )
        )
        return bodies.record(
            ts, acct, ip, acct.dialect, request, bodies.answer_length(rng, median), headers
        )

    def sessions(self) -> Iterator[dict[str, Any]]:
        rng, r, s = self.rng, self.rhythm, self.scenario
        per_day = r.per_day * rng.lognormvariate(0.0, 0.6)
        length = max(1.0, r.length_mean * rng.lognormvariate(0.0, 0.3))
        shift = rng.randint(-2, 2)
        found = timing.sessions(
            rng,
            s.start,
            s.end,
            self.account.tz,
            r.profile,
            per_day=per_day,
            length_mean=length,
            gap_median=r.gap_median,
            weekend=r.weekend,
            shift=shift,
        )
        for times in found:
            headers, ip = self.session_device()
            history: list[dict[str, Any]] = []
            for ts in times:
                yield self.chat(ts, headers, ip, history)


class _Developer(_Persona):
    """Daytime chat plus a nightly evaluation batch: temperature 0, small max_tokens,
    one or two templates; some score multiple choice through logprobs."""

    def nightly(self) -> Iterator[dict[str, Any]]:
        rng, s, acct = self.rng, self.scenario, self.account
        kinds = rng.sample(sorted(corpus_attack.EVAL_TEMPLATES), rng.choice((1, 1, 2)))
        logprobs = acct.dialect == "openai" and rng.random() < s.developer_logprob_share
        if logprobs and "mcq" not in kinds:
            kinds[0] = "mcq"
        limits = {k: rng.choice(_EVAL_MAX[k]) for k in kinds}
        model = bodies.MODELS[acct.dialect][2]  # the small model: cheap nightly evals
        items = [rng.choice(kinds) for _ in range(rng.randint(100, 400))]
        evalset = [(kind, prompts.eval_prompt(rng, kind)) for kind in items]
        times = timing.nightly(
            rng,
            s.start,
            s.end,
            acct.tz,
            local_time=rng.randint(0, 5) + rng.choice((0, 15, 30, 45)) / 60,
            items=len(evalset),
            spacing=rng.uniform(0.8, 3.0),
        )
        for ts, item in times:
            kind, prompt = evalset[item]
            extra = {"logprobs": True, "top_logprobs": 5} if logprobs and kind == "mcq" else None
            request = bodies.body(
                acct.dialect,
                model,
                [bodies.user(prompt)],
                max_tokens=1 if extra else limits[kind],
                temperature=0.0,
                extra=extra,
            )
            output = max(1, round(_EVAL_OUTPUT[kind] * rng.uniform(0.7, 1.3)))
            yield bodies.record(ts, acct, acct.ips[0], acct.dialect, request, output)


def _merge(a: Iterator[dict[str, Any]], b: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    return heapq.merge(a, b, key=lambda r: r["ts"])


def traffic(account: Account, scenario: Scenario) -> Iterator[dict[str, Any]]:
    """Every request of one benign account, in time order."""
    if account.kind == "developer":
        dev = _Developer(account, scenario)
        # Separate rngs keep the batch identical whatever the daytime chat draws.
        batch = _Developer(account, scenario)
        batch.rng = random.Random(f"{scenario.seed}/{account.key}/nightly")
        return _merge(dev.sessions(), batch.nightly())
    return _Persona(account, scenario).sessions()
