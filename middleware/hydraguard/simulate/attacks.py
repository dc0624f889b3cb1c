"""Hydra campaign traffic, each generator in time order:

- reasoning distillers: one dispatcher, round-robin over hundreds of accounts at a steady
  24/7 cadence, a few chain-of-thought templates, high max_tokens, a proxy per request;
- agentic distillers: each account runs agent episodes (tools, growing history) between
  ordinary-looking chats, around the clock, from a sticky residential address;
- logprob probers: sweeps of one short prompt over temperatures or logit biases with
  logprobs, top_logprobs=20 and max_tokens=1, each sweep from the next account.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from typing import Any

from hydraguard.simulate import agentic, bodies, corpus_attack, prompts, timing
from hydraguard.simulate.accounts import Account, Campaign
from hydraguard.simulate.scenario import Scenario

TEMPERATURE_SWEEP = tuple(round(0.2 * i, 1) for i in range(11))  # 0.0 .. 2.0
BIAS_SWEEP = (-100, -50, -10, -5, 0, 5, 10, 50, 100)


def reasoning(campaign: Campaign, scenario: Scenario) -> Iterator[dict[str, Any]]:
    rng = random.Random(f"{scenario.seed}/{campaign.name}/traffic")
    templates = rng.sample(corpus_attack.REASONING_TEMPLATES, rng.randint(3, 4))
    accounts = campaign.accounts
    max_tokens = {a.id: rng.choice((8192, 16000, 32000)) for a in accounts}
    turn = rng.randrange(len(accounts))
    for ts in timing.steady(rng, scenario.start, scenario.end, 3600.0 / campaign.rate):
        acct = accounts[turn % len(accounts)]
        turn += 1
        request = bodies.body(
            acct.dialect,
            bodies.MODELS[acct.dialect][-1],
            [bodies.user(prompts.reasoning_prompt(rng, templates))],
            system=corpus_attack.REASONING_SYSTEM if rng.random() < 0.3 else None,
            max_tokens=max_tokens[acct.id],
            temperature=0.7 if rng.random() < 0.5 else None,
        )
        output = bodies.answer_length(rng, 2500.0, 0.5)
        yield bodies.record(ts, acct, rng.choice(campaign.proxies), acct.dialect, request, output)


def _agent(
    acct: Account, campaign: Campaign, scenario: Scenario, per_hour: float
) -> Iterator[dict[str, Any]]:
    rng = random.Random(f"{scenario.seed}/{acct.key}/traffic")
    chat_share, mean_steps = 0.4, 7.5
    per_activity = chat_share + (1 - chat_share) * mean_steps
    idle = 3600.0 * per_activity / per_hour
    t = scenario.start + rng.expovariate(1.0 / idle)
    while t < scenario.end:
        ip = rng.choice(campaign.proxies) if rng.random() < 0.1 else acct.ips[0]
        if rng.random() < chat_share:
            text = prompts.benign_prompt(rng, acct.topics)
            request = bodies.body(
                acct.dialect, bodies.MODELS[acct.dialect][0], [bodies.user(text)], max_tokens=1024
            )
            yield bodies.record(t, acct, ip, acct.dialect, request, bodies.answer_length(rng, 350))
        else:
            episode = agentic.Episode(rng, acct.dialect)
            tools = agentic.tools(acct.dialect)
            max_tokens = rng.choice((8192, 16384))
            for _ in range(rng.randint(3, 12)):
                if t >= scenario.end:
                    break
                request = bodies.body(
                    acct.dialect,
                    bodies.MODELS[acct.dialect][-1],
                    episode.next_messages(),
                    system=agentic.AGENT_SYSTEM,
                    max_tokens=max_tokens,
                    tools=tools,
                    stream=rng.random() < 0.3,
                )
                output = bodies.answer_length(rng, 900.0)
                yield bodies.record(t, acct, ip, acct.dialect, request, output)
                t += rng.uniform(5.0, 40.0)  # model latency plus tool execution
        t += rng.expovariate(1.0 / idle)


def agentic_campaign(campaign: Campaign, scenario: Scenario) -> Iterator[dict[str, Any]]:
    per_hour = campaign.rate / max(1, len(campaign.accounts))
    streams = [_agent(a, campaign, scenario, per_hour) for a in campaign.accounts]
    return heapq.merge(*streams, key=lambda r: r["ts"])


def probing(campaign: Campaign, scenario: Scenario) -> Iterator[dict[str, Any]]:
    rng = random.Random(f"{scenario.seed}/{campaign.name}/traffic")
    accounts = campaign.accounts
    turn = rng.randrange(len(accounts))
    per_probe = 3600.0 / campaign.rate
    t = scenario.start + rng.uniform(0.0, 10 * per_probe)
    while t < scenario.end:
        acct = accounts[turn % len(accounts)]
        turn += 1
        ip = rng.choice(campaign.proxies)
        prompt = prompts.probe_prompt(rng)
        tokens = [str(rng.randint(100, 100_000)) for _ in range(rng.randint(1, 5))]
        by_temperature = rng.random() < 0.5
        sweep = TEMPERATURE_SWEEP if by_temperature else BIAS_SWEEP
        next_sweep = t + len(sweep) * per_probe * rng.uniform(0.9, 1.1)
        for step in sweep:
            if t >= scenario.end:
                break
            temperature = float(step) if by_temperature else 1.0
            bias = rng.choice(BIAS_SWEEP) if by_temperature else step
            extra: dict[str, Any] = {
                "logprobs": True,
                "top_logprobs": 20,
                "logit_bias": {tok: bias for tok in tokens},
            }
            if temperature > 0 and rng.random() < 0.2:
                extra["n"] = rng.choice((4, 8, 16))
            request = bodies.body(
                "openai",
                bodies.MODELS["openai"][0],
                [bodies.user(prompt)],
                max_tokens=1,
                temperature=temperature,
                extra=extra,
            )
            yield bodies.record(t, acct, ip, "openai", request, int(extra.get("n", 1)))
            t += rng.uniform(0.2, 0.8)
        t = max(t, next_sweep)


ACTORS = {
    "reasoning_distiller": reasoning,
    "agentic_distiller": agentic_campaign,
    "logprob_prober": probing,
}
