"""OpenAI Responses (``/v1/responses``): request fields, usage (JSON and the stream's final
``response.completed`` event), streamed output; errors in OpenAI's envelope."""

from __future__ import annotations

from typing import Any

from .dialect import StreamTally
from .facts import RequestFacts, param_flag, param_float, param_int, text_of
from .openai_chat import OpenAIChat, tally_text

# Input items whose text the model reads as data (like tool results in chat): counted in the
# estimate, kept out of the detectors' prompt text.
_DATA_FIELDS = {"function_call_output": "output", "function_call": "arguments"}
_LOGPROBS = "message.output_text.logprobs"  # the ``include`` entry that asks for logprobs
# Stream events whose ``delta`` is output the model generated (answer, refusal, tool-call
# arguments, reasoning text and summaries).
_OUTPUT_DELTAS = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.reasoning_text.delta",
        "response.reasoning_summary_text.delta",
    }
)
# The stream's last event, carrying the whole response and its usage.
_FINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


class OpenAIResponses(OpenAIChat):
    name = "openai-responses"
    cap_keys = ("max_output_tokens",)
    asks_stream_usage = False  # the final event always carries the usage
    # input_tokens includes cached input; output_tokens includes reasoning tokens.
    usage_keys = ("input_tokens", "output_tokens")

    def parse(self, body: dict[str, Any]) -> RequestFacts:
        nested: list[str] = []
        texts: list[str] = []
        count = 0
        instructions = body.get("instructions")
        if isinstance(instructions, str):
            texts.append(instructions)
            count += 1
        items = body.get("input")
        if isinstance(items, str):
            texts.append(items)
            count += 1
        elif isinstance(items, list):
            for item in items:
                if not isinstance(item, dict):
                    continue
                if "role" in item:  # a message, with or without "type": "message"
                    count += 1
                    texts.append(text_of(item.get("content"), nested))
                    continue
                kind = item.get("type")  # any JSON value: a list is no key
                field = _DATA_FIELDS.get(kind) if isinstance(kind, str) else None
                if field is not None:
                    data = item.get(field)
                    if isinstance(data, str):
                        nested.append(data)
                    else:
                        nested.append(text_of(data))
        top = param_int(body.get("top_logprobs"))
        include = body.get("include")
        logprobs = bool(top) or (isinstance(include, list) and _LOGPROBS in include)
        model = body.get("model")
        # Positional, in field order: keyword arguments cost twice as much (per request).
        return RequestFacts(
            body,
            "\n".join(t for t in texts if t),  # prompt
            count,  # messages
            param_int(body.get("max_output_tokens")),  # max_tokens
            param_flag(body.get("stream")),  # stream
            1,  # n
            logprobs,  # logprobs
            top,  # top_logprobs
            False,  # logit_bias: the Responses API has none
            param_float(body.get("temperature")),  # temperature
            model if isinstance(model, str) else None,  # model
            sum(map(len, nested)),  # extra_chars
        )

    def strip(self, data: dict[str, Any], name: str) -> bool:
        """Logprobs are asked for by an ``include`` entry too: stripping ``logprobs`` removes it."""
        removed = super().strip(data, name)
        include = data.get("include")
        if name == "logprobs" and isinstance(include, list) and _LOGPROBS in include:
            data["include"] = [entry for entry in include if entry != _LOGPROBS]
            removed = True
        return removed

    def stream_event(self, event: Any, into: StreamTally) -> None:
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if not isinstance(kind, str):  # a list or an object is no event type (nor hashable)
            return
        if kind in _OUTPUT_DELTAS:
            tally_text(event.get("delta"), into)
        elif kind in _FINAL:
            found = self.usage(event.get("response"))
            if found is not None:
                into.input_tokens, into.output_tokens = found
