"""Anthropic Message Batches (``POST /v1/messages/batches``): every entry's ``params`` is a
Messages request, read by the messages dialect and added up into one request.

The upstream runs the entries later and bills them then; the creation response is the batch
object, with no usage. So the dialect says ``usage_later``: a created batch keeps its whole
reservation (``observe/usage.py``), which is why every entry's input and output must be in it.
"""

from __future__ import annotations

from typing import Any

from .anthropic_messages import AnthropicMessages
from .facts import RequestFacts, param_int


def _entry_params(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``params`` of each well-formed entry; the upstream rejects a batch with any other,
    so skipping one never lets a request through uncounted."""
    entries = body.get("requests")
    if not isinstance(entries, list):
        return []
    found = []
    for entry in entries:
        params = entry.get("params") if isinstance(entry, dict) else None
        if isinstance(params, dict):
            found.append(params)
    return found


class AnthropicBatches(AnthropicMessages):
    name = "anthropic-batches"
    usage_later = True

    def parse(self, body: dict[str, Any]) -> RequestFacts:
        read = super().parse
        entries = [read(params) for params in _entry_params(body)]
        if not entries:
            return RequestFacts(body, max_tokens=0)  # nothing the upstream would run
        # The detectors read the first entry's prompt, the rest count in the estimate only:
        # their cost grows with the text they read, and a batch is typically one template
        # filled with many inputs, which the first entry shows (the template fingerprint of
        # all prompts joined would match no other request). All prompts joined could also
        # be tens of megabytes kept in the detectors' state.
        first = entries[0]
        # An entry without a usable max_tokens is rejected by the upstream and costs nothing.
        asked = tuple(entry.max_tokens or 0 for entry in entries)
        return RequestFacts(
            body,
            first.prompt,
            sum(entry.messages for entry in entries),
            sum(asked),  # max_tokens
            False,  # stream: a batch answers with the batch object
            1,  # n
            False,  # logprobs
            None,  # top_logprobs
            False,  # logit_bias
            first.temperature,
            first.model,
            sum(len(entry.prompt) + entry.extra_chars for entry in entries) - len(first.prompt),
            0,  # prompt_tokens
            asked,  # entry_max_tokens
        )

    def cap(self, data: dict[str, Any], cap: int) -> bool:
        """Caps each entry that says max_tokens; one that does not is rejected upstream and
        counted 0, so it is left alone (giving it the cap would make it run unreserved)."""
        changed = False
        for params in _entry_params(data):
            if param_int(params.get("max_tokens")) is not None and super().cap(params, cap):
                changed = True
        return changed

    def strip(self, data: dict[str, Any], name: str) -> bool:
        """Removes ``name`` from every entry's params."""
        removed = False
        for params in _entry_params(data):
            if super().strip(params, name):
                removed = True
        return removed

    def usage(self, body: Any) -> tuple[int, int] | None:
        return None  # the batch object: its entries' usage comes with their results
