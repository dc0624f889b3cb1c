from __future__ import annotations

import pytest
from replay_helpers import T0

from hydraguard.replay.engine import Outcome
from hydraguard.replay.labels import Label, parse_labels
from hydraguard.replay.report import Tally, degrading

LABELS = {
    "b1": Label("benign"),
    "b2": Label("benign"),
    "b3": Label("benign"),
    "b4": Label("benign"),  # never seen in the traffic
    "x1": Label("attacker", "hydra-1", "reasoning_distiller"),
    "x2": Label("attacker", "hydra-1", "reasoning_distiller"),
    "y1": Label("attacker", "hydra-2", "logprob_prober"),
}


def outcome(
    account: str,
    ts: float,
    *,
    requested: int = 100,
    served: int | None = None,
    admitted: bool = True,
    actions: tuple[str, ...] = (),
    rule: str | None = None,
    cluster: str | None = None,
) -> Outcome:
    if served is None:
        served = requested if admitted else 0
    return Outcome(
        0, account, cluster, admitted, served, actions, rule, 0.0, ts=ts, requested=requested
    )


def tally_of(outcomes: list[Outcome], labels: dict[str, Label] | None = LABELS) -> Tally:
    tally = Tally(labels)
    for item in outcomes:
        tally.add(item)
    return tally


def test_leak_and_benign_accounts_affected() -> None:
    report = tally_of(
        [
            outcome("b1", T0, actions=("flag",)),  # flag only records: not affected
            outcome("b2", T0 + 1, admitted=False, rule="tier.default.requests.2/minute"),
            outcome("b3", T0 + 2, requested=500, served=200, actions=("cap_max_tokens",)),
            outcome("x1", T0 + 3, requested=1000),
            outcome("x2", T0 + 4, requested=1000, admitted=False, rule="block-extraction"),
            outcome("y1", T0 + 5, requested=2000, served=500, actions=("cap_max_tokens", "strip")),
        ]
    ).report()
    efficacy = report["efficacy"]
    assert efficacy["attacker_output_tokens_requested"] == 4000
    assert efficacy["attacker_output_tokens_served"] == 1500
    assert efficacy["leak"] == 0.375
    assert efficacy["benign_accounts"] == 3 and efficacy["benign_accounts_labelled"] == 4
    assert efficacy["benign_accounts_affected"] == 2  # b2 refused, b3 capped
    assert efficacy["benign_requests_refused"] == 1 and efficacy["benign_requests"] == 3
    totals = report["totals"]
    assert (totals["lines"], totals["admitted"], totals["refused"]) == (6, 4, 2)
    assert totals["by_rule"] == {"block-extraction": 1, "tier.default.requests.2/minute": 1}
    assert totals["by_action"] == {"cap_max_tokens": 2, "flag": 1, "strip": 1}
    assert report["classes"]["attacker"]["accounts_affected"] == 2


def test_time_to_first_action_per_campaign() -> None:
    report = tally_of(
        [
            outcome("x1", T0 + 10),
            outcome("x2", T0 + 20, actions=("flag",)),
            outcome("x1", T0 + 40, admitted=False),
            outcome("y1", T0 + 15),
        ]
    ).report()
    hydra1, hydra2 = report["campaigns"]["hydra-1"], report["campaigns"]["hydra-2"]
    assert hydra1["time_to_first_action"] == 10.0
    assert hydra1["first_ts"] == T0 + 10 and hydra1["accounts"] == 2
    assert hydra1["kind"] == "reasoning_distiller" and hydra1["requests"] == 3
    assert hydra2["time_to_first_action"] is None  # never acted on


def test_a_campaign_starts_and_is_first_acted_on_in_log_order() -> None:
    # The log order decides, not the smallest stamp (an audit log can be slightly out
    # of order), and the first action may fall on an account that appeared later.
    report = tally_of(
        [
            outcome("x2", T0 + 30),
            outcome("x1", T0 + 25),
            outcome("x1", T0 + 50, actions=("flag",)),
            outcome("x2", T0 + 45, admitted=False),
            outcome("x2", T0 + 60, actions=("throttle",)),
        ]
    ).report()
    hydra1 = report["campaigns"]["hydra-1"]
    assert hydra1["first_ts"] == T0 + 30 and hydra1["first_action_ts"] == T0 + 50
    assert hydra1["time_to_first_action"] == 20.0
    assert (hydra1["requests"], hydra1["requests_refused"], hydra1["active_accounts"]) == (5, 1, 2)
    assert hydra1["accounts_affected"] == 1  # x2 refused and throttled; x1 only flagged


def test_without_labels_the_top_accounts_and_clusters_by_action() -> None:
    report = tally_of(
        [
            outcome("a", T0, actions=("flag",), cluster="c-1"),
            outcome("b", T0, admitted=False, cluster="c-1"),
            outcome("b", T0 + 1, actions=("throttle",), cluster="c-1"),
            outcome("c", T0 + 2, cluster="c-2"),
        ],
        labels=None,
    ).report()
    assert "efficacy" not in report and "campaigns" not in report
    top = report["top"]
    assert [a["account"] for a in top["accounts"]] == ["b", "a"]  # c: never acted on
    assert top["accounts"][0] == {
        "account": "b",
        "class": None,
        "requests": 2,
        "refused": 1,
        "acted": 2,
    }
    assert top["clusters"] == [
        {"cluster": "c-1", "accounts": 2, "requests": 3, "refused": 1, "acted": 3}
    ]


def test_shadow_actions_are_counted_apart_and_affect_no_one() -> None:
    shadowed = outcome("b1", T0)
    shadowed.shadow_actions = ("block",)
    report = tally_of([shadowed]).report()
    assert report["totals"]["by_shadow_action"] == {"block": 1}
    assert report["totals"]["by_action"] == {}
    assert report["efficacy"]["benign_accounts_affected"] == 0


def test_invalid_lines_count_but_do_not_enter_the_classes() -> None:
    bad = Outcome(3, None, None, False, 0, (), None, 0.0, error="not valid JSON")
    report = tally_of([outcome("b1", T0), bad]).report()
    assert report["totals"]["lines"] == 2 and report["totals"]["invalid"] == 1
    assert report["invalid_lines"] == [{"line": 3, "error": "not valid JSON"}]
    assert report["classes"]["benign"]["requests"] == 1


def test_timeline_sums_match_the_totals() -> None:
    outcomes = [
        outcome(acct, T0 + i * 700.0, requested=100 + i, served=(100 + i) // (1 + i % 3))
        for i, acct in enumerate(["b1", "x1", "y1", "b2"] * 60)
    ]
    report = tally_of(outcomes).report()
    timeline = report["timeline"]
    assert len(timeline["series"]["benign"]["served"]) <= 240
    served = sum(sum(s["served"]) for s in timeline["series"].values())
    withheld = sum(sum(s["withheld"]) for s in timeline["series"].values())
    assert served == report["totals"]["output_tokens_served"]
    assert served + withheld == report["totals"]["output_tokens_requested"]


@pytest.mark.parametrize(
    ("action", "expected"), [("flag", False), ("shadow:block", False), ("strip", True)]
)
def test_degrading_actions(action: str, expected: bool) -> None:
    assert degrading(action) is expected


def test_labels_accept_plain_classes_and_reject_others() -> None:
    labels = parse_labels({"a": "benign", "b": {"class": "attacker", "campaign": "h", "kind": "k"}})
    assert labels == {"a": Label("benign"), "b": Label("attacker", "h", "k")}
    with pytest.raises(ValueError, match="label of 'c'"):
        parse_labels({"c": "suspicious"})
    with pytest.raises(ValueError, match="JSON object"):
        parse_labels(["a"])
