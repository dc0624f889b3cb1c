"""The risk engine end to end: campaigns caught, people not; decay, influence, determinism."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable

import pytest
from assess_traffic import START, chat_user, hydra, nat_team, nightly_eval, prober
from assess_traffic import event as make_event

from hydraguard.assess.config import DEFAULT_RULES, AnomalyConfig
from hydraguard.assess.events import RequestEvent
from hydraguard.assess.risk import Assessment, RiskEngine


def replay(engine: RiskEngine, events: Iterable[RequestEvent]) -> list[Assessment]:
    """Assess each request on arrival, then observe it, as the middleware does."""
    out = []
    for event in events:
        out.append(engine.assess(event.account, event.cluster, event.ts))
        engine.observe(event)
    return out


# The default rules without the blocks, which would otherwise decide first: these tests are
# about the degrading actions.
NO_BLOCKS = tuple(rule for rule in DEFAULT_RULES if rule.action != "block")


@functools.cache
def campaign() -> tuple[RequestEvent, ...]:
    return tuple(hydra(5))


def test_a_hydra_campaign_is_throttled_and_capped() -> None:
    engine = RiskEngine(AnomalyConfig(rules=NO_BLOCKS))
    last = replay(engine, campaign())[-1]
    assert last.cluster_risk >= 0.7
    kinds = {action.kind for action in last.actions}
    assert {"throttle", "cap_max_tokens"} <= kinds
    assert last.rule == "throttle-risky"
    assert set(last.top_detectors) <= {
        "template_repetition",
        "reasoning_elicitation",
        "output_appetite",
        "timing_regularity",
        "activity_spread",
    }
    assert len(last.top_detectors) == 3


def test_a_logit_bias_prober_is_caught_alone() -> None:
    last = replay(RiskEngine(AnomalyConfig()), prober(6, n=400))[-1]
    assert last.risk >= 0.7
    assert "extraction_params" in last.top_detectors


@pytest.mark.parametrize(
    "traffic",
    [
        pytest.param(lambda: chat_user(1, days=3), id="chat-user"),
        pytest.param(lambda: chat_user(2, days=3, elicit_per_day=3), id="student"),
        pytest.param(lambda: nightly_eval(3), id="nightly-eval"),
        pytest.param(lambda: nat_team(4), id="nat-team"),
    ],
)
def test_ordinary_traffic_is_never_acted_on(traffic) -> None:
    assessments = replay(RiskEngine(AnomalyConfig()), traffic())
    assert max(a.risk for a in assessments) < 0.35
    assert all(a.actions == () and a.rule is None for a in assessments)


def test_risk_decays_with_the_half_life() -> None:
    engine = RiskEngine(AnomalyConfig.model_validate({"risk": {"half_life": "10m"}}))
    replay(engine, campaign()[:3000])
    end = campaign()[2999].ts
    peak = engine.risk("cluster", "c-hydra", end)
    assert peak > 0.5
    assert engine.risk("cluster", "c-hydra", end + 600) == pytest.approx(peak / 2)
    assert engine.risk("cluster", "c-hydra", end + 1800) == pytest.approx(peak / 8)
    # Asking about the past does not invent risk.
    assert engine.risk("cluster", "c-hydra", end - 600) == pytest.approx(peak)


def set_risk(engine: RiskEngine, scope: str, key: str, risk: float, ts: float) -> None:
    snapshot = engine.snapshot(scope, key) or {}  # type: ignore[arg-type]
    engine.restore(scope, key, {**snapshot, "risk": risk, "ts": ts})  # type: ignore[arg-type]


def steady_engine(**risk: object) -> RiskEngine:
    """Risk that does not decay within a test, so the test sets it exactly."""
    config = AnomalyConfig.model_validate({"risk": {"half_life": 1e9, **risk}})
    return RiskEngine(config.model_copy(update={"rules": NO_BLOCKS}))


@pytest.mark.parametrize(
    ("influence", "account", "cluster", "effective"),
    [
        (0.5, 0.0, 0.8, 0.4),
        (1.0, 0.0, 0.8, 0.8),
        (0.0, 0.0, 0.8, 0.0),
        (0.5, 0.2, 0.6, 0.4),
        (0.5, 0.6, 0.2, 0.6),  # a calm cluster never lowers an account's risk
    ],
)
def test_cluster_influence(
    influence: float, account: float, cluster: float, effective: float
) -> None:
    engine = steady_engine(cluster_influence=influence)
    set_risk(engine, "account", "a", account, START)
    set_risk(engine, "cluster", "c", cluster, START)
    result = engine.assess("a", "c", START)
    assert (result.account_risk, result.cluster_risk) == pytest.approx((account, cluster))
    assert result.risk == pytest.approx(effective)


def test_an_unknown_account_in_a_risky_cluster_inherits_its_risk() -> None:
    engine = steady_engine(cluster_influence=1.0)
    set_risk(engine, "cluster", "c", 0.8, START)
    assert {a.kind for a in engine.assess("new-account", "c", START).actions} >= {"throttle"}


def test_same_traffic_same_decisions() -> None:
    traffic = sorted([*campaign()[:1500], *chat_user(1, days=1), *prober(6)], key=lambda e: e.ts)
    first = replay(RiskEngine(AnomalyConfig()), traffic)
    second = replay(RiskEngine(AnomalyConfig()), traffic)
    assert first == second
    assert any(a.actions for a in first)


def test_snapshots_restore_the_same_future() -> None:
    traffic = sorted([*campaign()[:1500], *prober(6)], key=lambda e: e.ts)
    original = RiskEngine(AnomalyConfig())
    replay(original, traffic[:800])
    restored = RiskEngine(AnomalyConfig())
    for scope, subjects in original.subjects.items():
        for key in subjects:
            restored.restore(scope, key, original.snapshot(scope, key))  # type: ignore[arg-type]
    assert replay(restored, traffic[800:]) == replay(original, traffic[800:])


def test_subjects_are_bounded_lru() -> None:
    engine = RiskEngine(AnomalyConfig(max_subjects=10))
    events = list(itertools.islice(hydra(1, accounts=50), 200))
    replay(engine, events)
    assert len(engine.subjects["account"]) == 10
    # The most recently seen accounts are the ones kept.
    assert set(engine.subjects["account"]) == {e.account for e in events[-10:]}


def test_disabled_engine_observes_nothing() -> None:
    engine = RiskEngine(AnomalyConfig(enabled=False))
    assessments = replay(engine, campaign()[:2000])
    assert not engine.subjects["account"] and not engine.subjects["cluster"]
    assert all(a == Assessment(0.0, 0.0, 0.0) for a in assessments)


def test_weighted_mean_combination() -> None:
    only_reasoning = {
        name: {"enabled": name == "reasoning_elicitation"}
        for name in AnomalyConfig().detectors.model_dump()
    }
    weight = AnomalyConfig().detectors.reasoning_elicitation.weight
    for combination, expected in (("weighted_mean", 1.0), ("noisy_or", weight)):
        config = AnomalyConfig.model_validate(
            {"detectors": only_reasoning, "risk": {"combination": combination, "rescore_every": 1}}
        )
        engine = RiskEngine(config)
        replay(engine, campaign()[:500])
        assert engine.risk("cluster", "c-hydra", campaign()[499].ts) == pytest.approx(expected)


def test_a_batchs_other_entries_feed_what_is_asked_not_when() -> None:
    # One batch: the detectors of content read every sampled entry as a request; those of
    # arrival (volume, timing, hours) see one request, at the batch's time.
    engine = RiskEngine(AnomalyConfig())
    first = make_event(START, prompt="Think step by step: task 0", account="b")
    others = tuple(
        make_event(START, prompt=f"Think step by step: task {i}", account="b") for i in range(1, 16)
    )
    engine.observe(first, others)
    states = dict(zip(engine.names, engine.subjects["account"]["b"].states, strict=True))
    assert len(states["reasoning_elicitation"]) == 16
    assert states["output_appetite"].requests == 16
    assert states["volume"].n == 1
    assert (
        states["timing_regularity"].last == START
        and len(states["timing_regularity"].intervals) == 0
    )


def blocked(assessment: Assessment) -> bool:
    return any(action.kind == "block" for action in assessment.actions)


def serve(engine: RiskEngine, events: Iterable[RequestEvent]) -> list[Assessment]:
    """As the middleware does: a refused request is not observed (it teaches nothing)."""
    out = []
    for event in events:
        assessment = engine.assess(event.account, event.cluster, event.ts)
        out.append(assessment)
        if not blocked(assessment):
            engine.observe(event)
    return out


def test_a_cluster_sending_every_quarter_hour_is_blocked() -> None:
    # The distillation signature scores 0.78 at each rescore (every 4th request); 15 minutes
    # later, when the next request is assessed, it has decayed to 0.55, under the 0.6 of the
    # block. A block started only at assessment never fired on a slow cluster, however
    # strong its evidence; it starts at the rescore that crosses the threshold.
    slow = list(hydra(11, accounts=12, hours=8, period=900.0))
    assessments = serve(RiskEngine(AnomalyConfig()), slow)
    first = next((i for i, a in enumerate(assessments) if blocked(a)), None)
    assert first is not None and first <= 13  # scored at the 12th request, refused at the 13th
    assert all(blocked(a) for a in assessments[first : first + 15])  # the next 4 hours


def test_a_lapsed_block_is_rescored_on_the_next_request() -> None:
    # 10 requests an hour for 14 hours: blocked after the first dozen, the 4-hour block lapses
    # (the risk decayed while every request was refused) and the first request served after
    # the lapse is scored at once: one request leaks per lapse, not rescore_every.
    engine = RiskEngine(AnomalyConfig())
    assessments = serve(engine, hydra(12, accounts=12, hours=14, period=360.0))
    first = next(i for i, a in enumerate(assessments) if blocked(a))
    served_after = [i for i, a in enumerate(assessments[first:], first) if not blocked(a)]
    assert len(served_after) >= 2  # the block lapsed at least twice in the day
    # each lapse served exactly one request before the block started again
    assert all(blocked(assessments[i + 1]) for i in served_after if i + 1 < len(assessments))
