"""Deterministic synthetic traffic for the assess tests: benign users and extraction campaigns."""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from typing import Any

from hydraguard.assess.config import AnomalyConfig
from hydraguard.assess.detectors import Detector, Scope, build_detectors
from hydraguard.assess.events import RequestEvent
from hydraguard.inspect.template import fingerprint

DAY = 86400.0
START = 1_764_201_600.0  # 2025-11-27 00:00 UTC

_WORDS = (
    "garden recipe budget travel python email letter history physics poem story meeting "
    "cat dog weather train bike music guitar salary resume interview lunch dinner bread "
    "soup river mountain city museum painting photo camera phone laptop bug error database "
    "query server cloud invoice tax holiday flight hotel beach winter summer spring autumn "
    "friend family birthday gift wedding speech essay chapter novel movie series game chess "
    "football tennis yoga running diet sleep coffee tea wine cheese apple orange market"
).split()
_FORMS = (
    "can you help me write a {} about my {}",
    "what is the best way to {} a {} when the {} is broken",
    "summarise this {} for me please, it is about {} and {}",
    "i need ideas for a {} with a {} theme",
    "why does my {} keep failing with the {} error",
    "translate this {} note about the {} into french",
    "give me a short {} plan for the {}",
    "how long should i {} the {} before {}",
    "compare {} and {} for a beginner",
    "fix the grammar in my {} about {}",
)


def chat_prompt(rng: random.Random) -> str:
    """A one-off prompt of the kind people type: varied form, varied words."""
    form = rng.choice(_FORMS)
    words = [rng.choice(_WORDS) for _ in range(form.count("{}"))]
    tail = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 25)))
    return form.format(*words) + ". " + tail


HYDRA_TEMPLATE = (
    "You are a world-class expert. Solve the following problem. Think step by step and show "
    "your reasoning in full before giving the final answer. Problem: {}"
)


def event(
    ts: float, prompt: str, account: str = "acct-1", cluster: str | None = None, **kw: Any
) -> RequestEvent:
    fields: dict[str, Any] = {
        "max_tokens": None,
        "max_tokens_ceiling": 8192,
        "input_tokens": max(len(prompt) // 4, 1),
        "output_tokens": 300,
        "status": 200,
    }
    fields.update(kw)
    if "template" not in fields:
        fields["template"] = fingerprint(prompt)
    return RequestEvent(ts=ts, account=account, cluster=cluster, prompt=prompt, **fields)


def chat_user(
    seed: int,
    days: int = 3,
    account: str = "acct-chat",
    cluster: str | None = None,
    per_day: int = 30,
    start: float = START,
    elicit_per_day: int = 0,
) -> Iterator[RequestEvent]:
    """Daytime sessions, human pauses, varied prompts; ``elicit_per_day`` say "step by step"."""
    rng = random.Random(seed)
    for day in range(days):
        t = start + day * DAY + rng.uniform(8, 11) * 3600
        for i in range(per_day):
            t += rng.expovariate(1 / 240.0) + (rng.uniform(1800, 7200) if i % 8 == 7 else 0)
            prompt = chat_prompt(rng)
            if i < elicit_per_day:
                prompt += " explain it step by step"
            yield event(
                t,
                prompt,
                account,
                cluster,
                max_tokens=rng.choice([None, 1024, 2048]),
                temperature=rng.choice([None, 0.7, 1.0]),
                output_tokens=rng.randint(80, 900),
                input_tokens=rng.randint(40, 600),
            )


def nat_team(seed: int, people: int = 20, days: int = 2) -> list[RequestEvent]:
    """Colleagues behind one NAT, linked into one cluster; merged in arrival order."""
    events = [
        e
        for p in range(people)
        for e in chat_user(seed * 100 + p, days, account=f"acct-team-{p}", cluster="c-team")
    ]
    return sorted(events, key=lambda e: e.ts)


def nightly_eval(seed: int, nights: int = 3, account: str = "acct-dev") -> Iterator[RequestEvent]:
    """200 distinct benchmark questions at 2 AM each night, sequential, waiting for each answer."""
    rng = random.Random(seed)
    for night in range(nights):
        t = START + night * DAY + 2 * 3600
        for _ in range(200):
            t += rng.uniform(0.8, 6.0)  # response latency varies with the answer
            question = chat_prompt(rng)
            prompt = (
                f"Question: {question}\nA) yes B) no C) maybe D) unsure\nAnswer with one letter."
            )
            yield event(
                t,
                prompt,
                account,
                None,
                max_tokens=16,
                temperature=0.0,
                output_tokens=1,
                input_tokens=max(len(prompt) // 4, 1),
            )


def hydra(
    seed: int, accounts: int = 40, hours: float = 30, period: float = 6.0, start: float = START
) -> Iterator[RequestEvent]:
    """A distillation campaign: round-robin accounts, one cluster, 24/7, templated, max output."""
    rng = random.Random(seed)
    t = start
    i = 0
    while t < start + hours * 3600:
        t += period * rng.uniform(0.97, 1.03)
        place, hour, speed = rng.choice(_WORDS), rng.randint(1, 12), rng.randint(30, 120)
        problem = f"A train leaves {place} at {hour} pm at {speed} km/h. When does it arrive?"
        yield event(
            t,
            HYDRA_TEMPLATE.format(problem),
            f"acct-h{i % accounts}",
            "c-hydra",
            max_tokens=8192,
            temperature=0.7,
            input_tokens=60,
            output_tokens=rng.randint(3000, 6000),
        )
        i += 1


def prober(
    seed: int, n: int = 200, account: str = "acct-probe", start: float = START
) -> Iterator[RequestEvent]:
    """Carlini-style logit-bias probing: one prompt, logprobs + logit_bias, max_tokens=1."""
    rng = random.Random(seed)
    t = start
    prompt = "Repeat the word: the"
    for _ in range(n):
        t += rng.uniform(0.5, 1.5)
        yield event(
            t,
            prompt,
            account,
            None,
            max_tokens=1,
            logprobs=True,
            top_logprobs=20,
            logit_bias=True,
            temperature=0.0,
            input_tokens=6,
            output_tokens=1,
        )


def detector(name: str, scope: Scope = "account", **overrides: Any) -> Detector:
    """One detector built from the default config, with ``overrides`` for its section."""
    config = AnomalyConfig.model_validate({"detectors": {name: overrides}} if overrides else {})
    return next(det for det, _ in build_detectors(config)[scope] if det.name == name)


def final_score(det: Detector, events: Iterable[RequestEvent], now: float | None = None) -> float:
    """Feed every event to one fresh state and score it at ``now`` (default: the last event)."""
    state = det.new_state()
    last = None
    for e in events:
        det.observe(state, e)
        last = e.ts
    assert last is not None, "no events"
    return det.score(state, last if now is None else now)


def score(
    name: str,
    events: Iterable[RequestEvent],
    *,
    scope: Scope = "account",
    now: float | None = None,
    **overrides: Any,
) -> float:
    return final_score(detector(name, scope, **overrides), events, now)
