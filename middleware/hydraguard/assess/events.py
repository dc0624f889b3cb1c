"""What the assess step learns from one request: the input of every detector."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class RequestEvent:
    """One request as the detectors see it; ``ts`` (arrival, epoch seconds) is their only clock.

    ``Learning`` builds it with positional arguments (cheaper): keep the field order.
    """

    ts: float
    account: str
    cluster: str | None
    prompt: str  # prompt text, possibly truncated
    template: int  # inspect.template.fingerprint(prompt)
    max_tokens: int | None  # requested; None when the request left it to the default
    max_tokens_ceiling: int  # the most the tier allows
    n: int = 1
    logprobs: bool = False
    top_logprobs: int | None = None
    logit_bias: bool = False
    temperature: float | None = None
    input_tokens: int = 0
    output_tokens: int | None = None  # known once the response is complete
    status: int | None = None
    tier: str = "default"
