"""The policy's ``anomaly:`` section: detectors, risk combination and threshold rules.

Every model forbids unknown keys and is frozen; the lead's policy schema embeds
:class:`AnomalyConfig`. Durations are seconds or strings such as ``"30m"``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from hydraguard.assess.lexicon import compile_extra

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> Any:
    """``"30m"`` -> 1800.0; numbers pass through (seconds); anything else is left to pydantic."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(
                f"not a duration: {value!r} (use seconds or e.g. '500ms', '30s', '15m', '2h', '1d')"
            )
        return float(match[1]) * _UNIT_SECONDS[match[2]]
    return value


Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]


def _runs_on_re2(pattern: str) -> str:
    compile_extra(pattern)  # ValueError naming the pattern and RE2's reason
    return pattern


# An extra pattern for the reasoning lexicon, checked item by item so an error names its index.
LexiconPattern = Annotated[str, AfterValidator(_runs_on_re2)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Detector(_Model):
    enabled: bool = True
    weight: Fraction = 0.3  # the most this detector alone adds to the risk (noisy-OR)
    min_events: Annotated[int, Field(ge=1)] = 20  # below this many observations the score is 0


class TemplateRepetition(_Detector):
    weight: Fraction = 0.25
    window: Annotated[int, Field(ge=2, le=4096)] = 64
    max_distance: Annotated[int, Field(ge=0, le=16)] = 3  # Hamming bits for "same template"
    low: Fraction = 0.3  # share of near-duplicates scoring 0 ...
    high: Fraction = 0.8  # ... and 1


class ReasoningElicitation(_Detector):
    weight: Fraction = 0.55
    min_events: Annotated[int, Field(ge=1)] = 10
    window: Annotated[int, Field(ge=2, le=4096)] = 50
    low: Fraction = 0.25
    high: Fraction = 0.75


class ExtractionParams(_Detector):
    weight: Fraction = 0.5
    min_events: Annotated[int, Field(ge=1)] = 10
    window: Annotated[int, Field(ge=2, le=4096)] = 50
    small_max_tokens: Annotated[int, Field(ge=0)] = 4  # max_tokens at or below this is a probe
    # Scoring multiple choice through logprobs with max_tokens=1 is common and legitimate
    # (probe strength 0.88); the extraction attack adds logit_bias on top (0.97 and more).
    low: Fraction = 0.9  # mean probe strength scoring 0 ...
    high: Fraction = 0.95  # ... and 1
    sweep_low: Annotated[int, Field(ge=1)] = (
        3  # distinct temperatures for one template scoring 0 ...
    )
    sweep_high: Annotated[int, Field(ge=2)] = 8  # ... and 1


class OutputAppetite(_Detector):
    weight: Fraction = 0.5
    min_events: Annotated[int, Field(ge=1)] = 10
    span: Annotated[int, Field(ge=2)] = 50  # EMA over about this many requests
    ratio_low: Annotated[float, Field(gt=0)] = 8.0  # output tokens per input token scoring 0 ...
    ratio_high: Annotated[float, Field(gt=0)] = 30.0  # ... and 1
    max_fraction: Fraction = 0.9  # max_tokens >= ceiling * this asks for "the maximum"
    share_low: Fraction = 0.5
    share_high: Fraction = 0.95


class Volume(_Detector):
    weight: Fraction = 0.2
    fast_half_life: Duration = 300.0
    slow_half_life: Duration = 21600.0
    spike_low: Annotated[float, Field(gt=0)] = 3.0  # fast/slow rate ratio scoring 0 ...
    spike_high: Annotated[float, Field(gt=0)] = 10.0  # ... and 1
    expected_per_minute: dict[str, float] = Field(default_factory=lambda: {"default": 30.0})
    cluster_expected_per_minute: Annotated[float, Field(gt=0)] = 600.0
    excess_low: Annotated[float, Field(gt=0)] = 2.0  # rate / expected scoring 0 ...
    excess_high: Annotated[float, Field(gt=0)] = 6.0  # ... and 1


class TimingRegularity(_Detector):
    weight: Fraction = 0.2
    window: Annotated[int, Field(ge=4, le=4096)] = 32
    max_gap: Duration = 3600.0  # longer pauses end a session and are not intervals
    cv_regular: Annotated[float, Field(ge=0)] = 0.15  # coefficient of variation scoring 1 ...
    cv_human: Annotated[float, Field(gt=0)] = 0.5  # ... and 0


class ActivitySpread(_Detector):
    weight: Fraction = 0.25
    min_events: Annotated[int, Field(ge=1)] = 48
    min_active_hours: Annotated[int, Field(ge=1, le=24)] = 18
    low: Fraction = 0.85  # normalised hour-of-day entropy scoring 0 ...
    high: Fraction = 0.97  # ... and 1


class Diversity(_Detector):
    min_events: Annotated[int, Field(ge=2)] = 64
    window: Annotated[int, Field(ge=4, le=4096)] = 128
    low: Fraction = 0.5  # share of repeats (1 - distinct/total) scoring 0 ...
    high: Fraction = 0.9  # ... and 1
    rate_low: Annotated[float, Field(ge=0)] = 0.5  # requests per minute in the window scoring 0 ...
    rate_high: Annotated[float, Field(gt=0)] = 3.0  # ... and 1


class Detectors(_Model):
    template_repetition: TemplateRepetition = TemplateRepetition()
    reasoning_elicitation: ReasoningElicitation = ReasoningElicitation()
    extraction_params: ExtractionParams = ExtractionParams()
    output_appetite: OutputAppetite = OutputAppetite()
    volume: Volume = Volume()
    timing_regularity: TimingRegularity = TimingRegularity()
    activity_spread: ActivitySpread = ActivitySpread()
    diversity: Diversity = Diversity()


class Risk(_Model):
    half_life: Duration = 1800.0
    # noisy_or: 1 - prod(1 - weight * score), one strong signal is enough and
    # corroborating ones add up; weighted_mean: sum(weight * score) / sum(weight).
    combination: Literal["noisy_or", "weighted_mean"] = "noisy_or"
    # A rule starts at its threshold and ends below threshold - hysteresis.
    hysteresis: Annotated[float, Field(ge=0, le=0.5)] = 0.05
    # effective = account + cluster_influence * max(0, cluster - account)
    cluster_influence: Fraction = 0.5
    # Detectors observe every request but are scored every Nth one per subject:
    # scoring costs more than observing, and every detector needs 10+ requests
    # of evidence anyway. 1 scores every request.
    rescore_every: Annotated[int, Field(ge=1, le=64)] = 4


Action = Literal["throttle", "cap_max_tokens", "strip", "delay", "block", "flag"]
_ACTION_FIELDS: dict[str, tuple[str, ...]] = {
    "throttle": ("factor",),
    "cap_max_tokens": ("max_tokens",),
    "strip": ("params",),
    "delay": ("seconds",),
    "block": ("seconds",),
    "flag": (),
}


class When(_Model):
    risk_gte: Fraction | None = None  # effective risk
    account_risk_gte: Fraction | None = None
    cluster_risk_gte: Fraction | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> When:
        if (
            sum(
                v is not None for v in (self.risk_gte, self.account_risk_gte, self.cluster_risk_gte)
            )
            != 1
        ):
            raise ValueError("give exactly one of risk_gte, account_risk_gte, cluster_risk_gte")
        return self


class Rule(_Model):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    when: When
    action: Action
    factor: Annotated[float, Field(gt=0, lt=1)] | None = None
    max_tokens: Annotated[int | None, Field(ge=1)] = None
    params: Annotated[tuple[str, ...] | None, Field(min_length=1)] = None
    seconds: Duration | None = None
    mode: Literal["enforce", "shadow"] | None = None  # None: the anomaly section's mode

    @model_validator(mode="after")
    def _fields_match_action(self) -> Rule:
        wanted = _ACTION_FIELDS[self.action]
        for field in ("factor", "max_tokens", "params", "seconds"):
            given = getattr(self, field) is not None
            if field in wanted and not given:
                raise ValueError(f"action {self.action} needs {field}")
            if given and field not in wanted:
                raise ValueError(f"{field} does not apply to action {self.action}")
        return self


# The shipped default policy's rules (policies/default.yaml explains them).
DEFAULT_RULES: tuple[Rule, ...] = (
    Rule(name="flag-suspicious", when=When(risk_gte=0.35), action="flag"),
    Rule(
        name="strip-probing",
        when=When(risk_gte=0.58),
        action="strip",
        params=("logprobs", "top_logprobs", "prompt_logprobs", "logit_bias"),
    ),
    Rule(name="cap-output", when=When(risk_gte=0.58), action="cap_max_tokens", max_tokens=1024),
    Rule(name="throttle-risky", when=When(risk_gte=0.58), action="throttle", factor=0.25),
    Rule(name="block-extraction", when=When(account_risk_gte=0.6), action="block", seconds=14400.0),
    Rule(name="block-cluster", when=When(cluster_risk_gte=0.6), action="block", seconds=14400.0),
)


class AnomalyConfig(_Model):
    enabled: bool = True
    mode: Literal["enforce", "shadow"] = "enforce"
    max_subjects: Annotated[int, Field(ge=1)] = (
        100_000  # per level (accounts, clusters), LRU beyond
    )
    lexicon_extra: tuple[LexiconPattern, ...] = ()
    # At most this many requests held by delay actions at once (per process); more are refused.
    max_delayed: Annotated[int, Field(ge=1)] = 1000
    # On shared storage (Redis), publish risks and read the other replicas' (assess/sharing.py).
    share_risk: bool = True
    detectors: Detectors = Detectors()
    risk: Risk = Risk()
    rules: tuple[Rule, ...] = DEFAULT_RULES

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
        names = [rule.name for rule in rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate rule names: {', '.join(duplicates)}")
        return rules
