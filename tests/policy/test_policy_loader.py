"""Policy files: the shipped default loads, and every failure mode names file:line and key.

One tiny fixture per failure mode (as envoy's ratelimit does), each asserting the exact
message, so a change in wording or in line tracking shows up here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hydraguard.errors import PolicyError
from hydraguard.policy.compiled import CompiledRoute, Routes
from hydraguard.policy.loader import default_policy_path, load_policy, parse_policy

FIXTURES = Path(__file__).parent / "fixtures"


def problems_of(name: str) -> list[str]:
    path = FIXTURES / name
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return [problem.removeprefix(f"{path}:") for problem in caught.value.problems]


def test_shipped_default_policy_loads_with_the_documented_headers() -> None:
    policy = load_policy(None)
    assert policy.source == str(default_policy_path())
    assert policy.name == "default"
    assert not policy.shadow and policy.sliding
    assert [s.header for s in policy.identity.account if s.header] == ["x-account-id"]
    assert policy.identity.tier.header == "x-account-tier"
    assert set(policy.tiers) >= {"default"}
    assert policy.routes.match("/v1/chat/completions").dialect == "openai-chat"
    assert policy.routes.match("/v1/messages").dialect == "anthropic-messages"
    assert policy.routes.match("/not/limited") is None
    # At least requests, tokens and concurrency per account, plus a global limit.
    kinds = {limit.kind for limit in policy.tiers["default"].limits.windows}
    assert kinds == {"requests", "tokens"}
    assert policy.tiers["default"].limits.concurrency is not None
    assert policy.global_limits.windows


def test_valid_fixture_compiles_every_limit_of_a_multi_limit_string() -> None:
    policy = load_policy(FIXTURES / "valid.yaml")
    windows = policy.tiers["default"].limits.windows
    assert [(w.kind, w.amount, w.window) for w in windows] == [
        ("requests", 60, 60),
        ("tokens", 10000, 60),
        ("tokens", 100000, 86400),
    ]
    assert policy.tiers["default"].limits.concurrency.amount == 2
    assert len(policy.rules) == 4 == len(set(policy.rules))


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        pytest.param(
            "malformed_yaml.yaml",
            ["5: invalid YAML: expected <block end>, but found '<block mapping start>'"],
            id="malformed-yaml",
        ),
        pytest.param(
            "tab_indent.yaml",
            ["3: invalid YAML: found character '\\t' that cannot start any token"],
            id="tab-indent",
        ),
        pytest.param(
            "not_a_mapping.yaml",
            ["1: (top level): a policy is a mapping of keys, not list"],
            id="not-a-mapping",
        ),
        pytest.param("unknown_top_key.yaml", ["2: mdoe: unknown key"], id="unknown-top-key"),
        pytest.param(
            "unknown_nested_key.yaml",
            ["5: tiers.default.concurency: unknown key"],
            id="unknown-nested-key",
        ),
        pytest.param(
            "unknown_global_key.yaml", ["4: global.token: unknown key"], id="unknown-global-key"
        ),
        pytest.param(
            "unknown_route_key.yaml", ["4: routes[0].dialekt: unknown key"], id="unknown-route-key"
        ),
        pytest.param(
            "bad_limit.yaml",
            [
                "6: tiers.default.requests[1]: 'sixty per fortnight' is not in limits notation "
                "(e.g. '60/minute'): couldn't parse rate limit string 'sixty per fortnight'"
            ],
            id="bad-limit",
        ),
        pytest.param(
            "duplicate_key.yaml", ["5: tiers.default.requests: duplicate key"], id="duplicate-key"
        ),
        pytest.param(
            "missing_required.yaml",
            ["4: tiers.default.concurrency.max: required key is missing"],
            id="missing-required",
        ),
        pytest.param(
            "bad_cidr.yaml",
            ["5: identity.trusted_proxies[1]: '300.1.2.0/24' is not an IP address or CIDR network"],
            id="bad-cidr",
        ),
        pytest.param(
            "route_path_and_prefix.yaml",
            ["5: routes[1]: a route needs exactly one of 'path' or 'prefix'"],
            id="route-path-and-prefix",
        ),
        pytest.param(
            "duplicate_route.yaml",
            [
                "7: routes[2].path: path '/v1/chat/completions' is already routes[0]: a second "
                "route for it would never match"
            ],
            id="duplicate-route",
        ),
        pytest.param(
            "route_max_bytes_generic.yaml",
            [
                "5: routes[0].max_bytes: Input should be greater than or equal to 1024",
                "7: routes[1].max_bytes: a generic route never reads its body: "
                "max_bytes has no effect",
            ],
            id="route-max-bytes",
        ),
        pytest.param(
            "tier_default_missing.yaml",
            [
                "5: identity.tier.default: identity.tier.default is 'free', "
                "which is not among the tiers (pro)"
            ],
            id="tier-default-missing",
        ),
        pytest.param(
            "account_from_credentials.yaml",
            [
                "5: identity.account[1]: 'authorization' carries credentials, which are never "
                "kept raw: to identify accounts by API key use 'api_key: true' (kept as a hash)"
            ],
            id="account-from-credentials",
        ),
        pytest.param(
            "signal_from_credentials.yaml",
            [
                "5: clustering.signals.key: 'x-api-key' carries credentials, which are never "
                "kept raw: to identify accounts by API key use 'api_key: true' (kept as a hash)"
            ],
            id="signal-from-credentials",
        ),
        pytest.param(
            "several_errors.yaml",
            [
                "2: mode: Input should be 'enforce' or 'shadow'",
                "6: tiers.default.concurrency: Input should be greater than or equal to 1",
            ],
            id="several-errors-in-line-order",
        ),
    ],
)
def test_each_failure_mode_names_file_line_and_key(fixture: str, expected: list[str]) -> None:
    assert problems_of(fixture) == expected


def test_unreadable_file_is_a_policy_error_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError) as caught:
        load_policy(missing)
    assert caught.value.problems[0].startswith(f"{missing}: cannot read policy:")


def test_parse_policy_uses_the_given_filename() -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy("name: x\nstrategy: leaky-bucket\n", "inline.yaml")
    (problem,) = caught.value.problems
    assert problem.startswith("inline.yaml:2: strategy: Input should be ")


def test_empty_file_is_the_default_policy() -> None:
    policy = parse_policy("", "empty.yaml")
    assert policy.name == "default" and "default" in policy.tiers


@pytest.mark.parametrize(
    "path",
    [
        "//v1/chat/completions",
        "/v1//chat/completions",
        "/v1/chat/completions/",
        "/v1/./chat/completions",
        "/v1/models/../chat/completions",
        "/V1/Chat/Completions",
    ],
)
def test_other_spellings_of_a_route_path_are_the_route(path: str) -> None:
    # An upstream that normalises paths (nginx merges slashes, Express ignores case and
    # a trailing slash) serves these as the route: they must not pass unguarded.
    assert load_policy(None).routes.match(path).dialect == "openai-chat"


def test_canonical_spellings_keep_prefix_routes_and_misses() -> None:
    routes = Routes(
        {"/a": CompiledRoute("openai-chat", "/a")}, (("/p/", CompiledRoute("generic", "/p/*")),)
    )
    assert routes.match("//P//x").name == "/p/*"
    assert (
        routes.match("/p") is None and routes.match("/b/") is None and routes.match("/a/b") is None
    )


def test_legacy_completions_and_responses_are_routed_by_default() -> None:
    routes = load_policy(None).routes
    assert routes.match("/v1/completions").dialect == "openai-chat"
    assert routes.match("/v1/responses").dialect == "openai-responses"


def test_a_route_reads_up_to_its_max_bytes_else_body_max_bytes() -> None:
    routes = load_policy(None).routes
    assert routes.match("/v1/messages/batches").dialect == "anthropic-batches"
    assert routes.match("/v1/messages/batches").max_bytes == 8 * 1024 * 1024
    assert routes.match("/v1/messages").max_bytes == 1_048_576  # body.max_bytes
    # OpenAI batches name a file uploaded earlier: counted in requests only.
    assert routes.match("/v1/batches").dialect == "generic"
    assert routes.match("/v1/files").dialect == "generic"
