"""What prompts and parameters reveal: repetition, reasoning, extraction, appetite, diversity."""

from __future__ import annotations

import functools
import itertools

import pytest
from assess_traffic import (
    START,
    chat_user,
    event,
    final_score,
    hydra,
    nightly_eval,
    prober,
    score,
)

from hydraguard.assess.config import AnomalyConfig
from hydraguard.assess.detectors import build_detectors
from hydraguard.assess.events import RequestEvent


@functools.cache
def campaign_account() -> tuple[RequestEvent, ...]:
    """One account of a campaign: its share of the round-robin."""
    return tuple(e for e in hydra(5, accounts=4, hours=2) if e.account == "acct-h0")


def hydra_account(n: int = 200) -> list[RequestEvent]:
    return list(campaign_account()[:n])


def test_template_repetition_fires_on_a_template_campaign() -> None:
    assert score("template_repetition", hydra_account()) >= 0.8


@pytest.mark.parametrize(
    "traffic",
    [
        pytest.param(lambda: chat_user(1, days=3), id="chat-user"),
        pytest.param(lambda: chat_user(2, days=3, elicit_per_day=3), id="student"),
    ],
)
def test_template_repetition_ignores_people(traffic) -> None:
    assert score("template_repetition", traffic()) < 0.1


def test_template_repetition_needs_evidence() -> None:
    assert score("template_repetition", hydra_account(10)) == 0.0


def test_reasoning_elicitation_fires_when_every_prompt_asks_for_the_trace() -> None:
    assert score("reasoning_elicitation", hydra_account()) == 1.0


def test_reasoning_elicitation_tolerates_a_student() -> None:
    # Three "step by step" a day among thirty questions.
    assert score("reasoning_elicitation", chat_user(2, days=3, elicit_per_day=3)) < 0.1


def test_reasoning_elicitation_lexicon_can_be_extended() -> None:
    events = [
        event(START + i * 60, f"question {i}: go deep, narrate every inference") for i in range(30)
    ]
    assert score("reasoning_elicitation", events) == 0.0
    config = AnomalyConfig(lexicon_extra=(r"narrate every inference",))
    extended = next(
        d for d, _ in build_detectors(config)["account"] if d.name == "reasoning_elicitation"
    )
    assert final_score(extended, events) == 1.0


def test_extraction_params_fire_on_logit_bias_probing() -> None:
    assert score("extraction_params", prober(6)) == 1.0


def test_extraction_params_fire_on_a_temperature_sweep() -> None:
    temperatures = [round(0.1 * i, 1) for i in range(11)]
    events = [
        event(START + i, "Write a haiku about the sea.", temperature=t)
        for i, t in enumerate(itertools.islice(itertools.cycle(temperatures), 40))
    ]
    assert score("extraction_params", events) == 1.0


def test_extraction_params_ignore_occasional_logprobs() -> None:
    events = [
        e if i % 25 else event(e.ts, e.prompt, logprobs=True, top_logprobs=3)
        for i, e in enumerate(chat_user(1, days=3))
    ]
    assert score("extraction_params", events) < 0.1


def test_extraction_params_need_evidence() -> None:
    assert score("extraction_params", itertools.islice(prober(6), 5)) == 0.0


def test_output_appetite_fires_on_short_prompts_with_maximal_answers() -> None:
    assert score("output_appetite", hydra_account()) >= 0.9


@pytest.mark.parametrize(
    "traffic",
    [
        pytest.param(lambda: chat_user(1, days=3), id="chat-user"),
        pytest.param(lambda: nightly_eval(3), id="nightly-eval"),
    ],
)
def test_output_appetite_ignores_ordinary_use(traffic) -> None:
    assert score("output_appetite", traffic()) < 0.2


def test_output_appetite_at_the_ceiling_alone_is_half_the_story() -> None:
    # SDKs that always send the maximum but get ordinary answers.
    events = [
        event(
            START + i * 300,
            f"question {i} about gardens",
            max_tokens=8192,
            input_tokens=400,
            output_tokens=300,
        )
        for i in range(60)
    ]
    assert 0.4 <= score("output_appetite", events) <= 0.5


def test_diversity_fires_on_the_same_prompt_at_high_rate() -> None:
    assert score("diversity", prober(6)) == 1.0


@pytest.mark.parametrize(
    "traffic",
    [
        pytest.param(lambda: chat_user(1, days=3), id="chat-user"),
        pytest.param(lambda: nightly_eval(3), id="nightly-eval"),
    ],
)
def test_diversity_ignores_distinct_prompts(traffic) -> None:
    assert score("diversity", traffic()) == 0.0


def test_diversity_ignores_a_slow_repeated_health_check() -> None:
    events = [event(START + i * 600.0, "ping") for i in range(200)]  # every 10 minutes
    assert score("diversity", events) == 0.0
