"""Admission pieces: storage keys per subject, the decision's refusing rule, header syntax."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hydraguard.admit.headers import go_duration, policy_header
from hydraguard.admit.plan import Planner, account_prefix, subject_tag


def test_subject_tags_keep_one_slot_per_account_and_cannot_be_broken() -> None:
    assert subject_tag("a", "acct-1") == "{a:acct-1}"
    odd = subject_tag("a", "x}{y")
    assert odd.count("{") == 1 and odd.count("}") == 1 and "x}{y" not in odd
    assert len(subject_tag("a", "z" * 500)) < 60
    assert account_prefix("acct-1") == "hg:{a:acct-1}"


def test_plan_costs_and_keys(kit: SimpleNamespace) -> None:
    policy = kit.compile_yaml(
        kit.base_policy(requests="10/minute", tokens="500/minute; 9000/day", concurrency=2)
    )
    plan = Planner(policy).plan("acct-1", "default", 123)
    limits = [c for c in plan.checks if c.window >= 0]  # negative windows are flags, not limits
    assert [(c.key, c.limit, c.window, c.cost) for c in limits] == [
        ("hg:{a:acct-1}:r60", 10, 60, 1),
        ("hg:{a:acct-1}:t60", 500, 60, 123),
        ("hg:{a:acct-1}:t86400", 9000, 86400, 123),
        ("hg:{a:acct-1}:c", 2, 0, 1),
    ]
    assert [plan.checks[i].key for i in plan.token_checks] == [limits[1].key, limits[2].key]
    assert [plan.checks[i].key for i in plan.lease_checks] == [limits[3].key]


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (0.2, "1s"), (59.5, "1m0s"), (360, "6m0s"), (3723, "1h2m3s")]
)
def test_go_durations(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_policy_header_is_a_structured_field_list(kit: SimpleNamespace) -> None:
    policy = kit.compile_yaml(
        kit.base_policy(requests="10/minute", tokens="500/hour", concurrency=2)
    )
    header = policy_header(Planner(policy).plan("x", "default", 0).limits).decode()
    assert header == (
        '"tier.default.requests.10/minute";q=10;w=60, '
        '"tier.default.tokens.500/hour";q=500;w=3600;qu="tokens", '
        '"tier.default.concurrency";q=2;qu="concurrent-requests"'
    )


async def test_request_too_large_for_a_limit_says_so(guarded, kit: SimpleNamespace) -> None:
    g = await guarded(kit.build_upstream(kit.Upstream()), kit.base_policy(tokens="100/minute"))
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5000}
    refused = await g.client.post(
        "/v1/chat/completions", json=body, headers={"x-account-id": "big"}
    )
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["rule"] == "tier.default.tokens.100/minute"
    assert "alone exceeds" in error["message"] and "max_tokens" in error["message"]
    assert set((await g.usage("big")).values()) == {0.0}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"max_tokens": "1' + b"0" * 400 + b'"}', id="max_tokens-a-400-digit-string"),
        pytest.param(b'{"max_tokens": 1e300, "n": 1e300}', id="max_tokens-times-n-past-floats"),
    ],
)
async def test_a_request_asking_past_2_53_tokens_is_refused_as_too_large(
    guarded, kit: SimpleNamespace, body: bytes
) -> None:
    # Found by tests/test_fuzz_requests.py: a reservation past the range of a double raised
    # OverflowError in memory storage's windows (a 500); on Redis packing it failed, which
    # counted as a storage failure: five such requests opened the breaker, and with
    # on_error: open every account's requests were admitted uncounted until it closed.
    g = await guarded(kit.build_upstream(kit.Upstream()), kit.base_policy())
    for _ in range(6):  # the breaker opens after 5 failures
        refused = await g.client.post(
            "/v1/chat/completions", content=body, headers={"x-account-id": "huge"}
        )
        assert refused.status_code == 429
        assert "alone exceeds" in refused.json()["error"]["message"]
    assert g.guard.storage.available()
    assert not g.registry.get_sample_value(
        "hydraguard_storage_errors_total", {"operation": "acquire"}
    )
    assert set((await g.usage("huge")).values()) == {0.0}


def test_rules_over_the_same_window_get_their_own_counters(kit: SimpleNamespace) -> None:
    policy = kit.compile_yaml(
        kit.base_policy(requests="1000/minute").replace(
            'requests: "1000/minute"', "requests: [{limit: 1/minute, mode: shadow}, 3/minute]"
        )
    )
    plan = Planner(policy).plan("a", "default", 0)
    request_keys = [c.key for c in plan.checks if c.key.split(":")[-1].startswith("r")]
    assert len(request_keys) == 2 == len(set(request_keys))


def test_plan_checks_carry_their_keys_layout(kit: SimpleNamespace) -> None:
    # RedisStorage packs a plan's decision from its shape instead of each check (see
    # KeyLayout): every plan must say exactly what its checks hold, throttled or not.
    policy = kit.compile_yaml(
        kit.base_policy(requests="10/minute", tokens="500/minute; 9000/day", concurrency=2)
    )
    planner = Planner(policy)
    plans = [
        planner.plan("acct-1", "default", 123),
        planner.plan("acct-1", "default", 7, "c-1", 0.5, 2.0),
        planner.plan("x}{y", "default", 0, "c{2}"),
    ]
    for plan in plans:
        checks, key_layout = plan.checks, plan.key_layout
        assert key_layout is not None
        subjects, shape = key_layout.subjects, key_layout.shape
        assert shape is plan.layout.shape  # one per tier, whatever the subject
        assert len(set(subjects)) == len(subjects)
        for i, check in enumerate(checks):
            assert subjects[shape.scopes[i]] + shape.names[i] == check.key
            assert (shape.windows[i], shape.shadows[i]) == (check.window, check.shadow)
            # The subject is the key's text up to the end of its hash tag.
            assert subjects[shape.scopes[i]].endswith("}")
            assert subjects[shape.scopes[i]].count("}") == 1


def test_the_planners_cache_of_built_checks_is_bounded() -> None:
    """Built checks are kept per (tier, account, cluster, factors) so an account's next
    request reuses them, but a process seeing ever new accounts must not keep ~2.5 KB for
    each one: after 50,000 accounts the planner holds at most 64 MB (README: ~50 MB).
    Plans built after the cache was cleared are still right."""
    import tracemalloc
    from pathlib import Path

    from hydraguard.policy.loader import load_policy

    default = load_policy(Path(__file__).parents[2] / "policies" / "default.yaml")  # 13 checks
    planner = Planner(default)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(50_000):
            planner.plan(f"acct-{i}", "default", 1)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 64 * 2**20, held
    fresh = Planner(default).plan("acct-3", "default", 7)
    again = planner.plan("acct-3", "default", 7)
    assert again.checks == fresh.checks
