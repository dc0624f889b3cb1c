"""Anthropic Message Batches (``POST /v1/messages/batches``): every entry's ``params`` is a
Messages request, read by the messages dialect and added up into one request.

The upstream runs the entries later and bills them then; the creation response is the batch
object, with no usage. So the dialect says ``usage_later``: a created batch keeps its whole
reservation (``observe/usage.py``), which is why every entry's input and output must be in it.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

from .anthropic_messages import AnthropicMessages
from .facts import RequestFacts, param_int

# Entries the detectors read of one batch. Reading all of them would cost ~0.1 ms each on
# the event loop (lexicon, fingerprint), a second for a batch of 10,000.
SAMPLE = 16
_SEED_CHARS = 256  # of each entry's prompt, hashed into the sample's seed


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


def sample(entries: list[RequestFacts]) -> list[RequestFacts]:
    """Up to ``SAMPLE`` entries, in batch order, drawn independently of one another with a
    seed hashed from every entry's prompt.

    Deterministic (a replay draws the same), yet not something a sender can aim: the draw
    changes with any change to the batch, so to show the detectors only its harmless
    entries a batch must either be mostly harmless or be re-drawn about
    (1 / harmless share) ** 16 times. Evenly spaced or hash-ranked entries could be aimed at.
    """
    if len(entries) <= SAMPLE:
        return entries
    digest = hashlib.blake2b(digest_size=8)
    for entry in entries:
        digest.update(entry.prompt[:_SEED_CHARS].encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    draw = random.Random(int.from_bytes(digest.digest(), "big"))
    return [entries[i] for i in sorted(draw.sample(range(len(entries)), SAMPLE))]


class AnthropicBatches(AnthropicMessages):
    name = "anthropic-batches"
    usage_later = True

    def parse(self, body: dict[str, Any]) -> RequestFacts:
        read = super().parse
        entries = [read(params) for params in _entry_params(body)]
        if not entries:
            return RequestFacts(body, max_tokens=0)  # nothing the upstream would run
        # The detectors read a sample of the entries, each as a request of its own (the
        # template fingerprint of all prompts joined would match no other request, and all
        # of them could be tens of megabytes); every entry counts in the estimate.
        read_by_detectors = sample(entries)
        first = read_by_detectors[0]
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
            tuple(read_by_detectors),
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
