"""A deterministic fake model API: OpenAI chat completions and responses, Anthropic messages.

``hydraguard serve`` fronts it when no ``--upstream`` is given, and tests use it as the
upstream. Bodies, SSE event sequences and usage fields follow the real APIs closely
enough for the official ``openai`` and ``anthropic`` SDKs to parse them; token counts
are described in :mod:`hydraguard.gateway.mock_reply`.
"""

from __future__ import annotations

import json
import time
import uuid
from asyncio import sleep
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from hydraguard.gateway.envelopes import anthropic_error, openai_error
from hydraguard.gateway.mock_reply import (
    MOCK_MODEL,
    BadRequest,
    Reply,
    count_tokens,
    flag,
    generate,
    model_name,
    positive_int,
    prompt_text,
)
from hydraguard.inspect.dialects import DIALECTS

_SSE_HEADERS = {"cache-control": "no-cache"}


def _sse(data: dict[str, Any] | str, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


class _MockModel:
    def __init__(self, latency: float, token_delay: float) -> None:
        self.latency = latency
        self.token_delay = token_delay

    async def _pause(self, seconds: float) -> None:
        if seconds > 0:
            await sleep(seconds)

    def _stream(self, events: AsyncIterator[bytes]) -> StreamingResponse:
        return StreamingResponse(events, media_type="text/event-stream", headers=_SSE_HEADERS)

    # --- OpenAI chat completions -------------------------------------------------------

    async def chat_completions(self, request: Request) -> Response:
        await self._pause(self.latency)
        try:
            body = await _json_object(request)
            prompt = prompt_text(body, system_field=False)
            limit = positive_int(body, "max_completion_tokens") or positive_int(body, "max_tokens")
            n = positive_int(body, "n") or 1
            stream = flag(body, "stream")
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
        except BadRequest as exc:
            return openai_error(400, exc.message, param=exc.param)
        replies = [generate(prompt, limit, choice) for choice in range(n)]
        head = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "created": int(time.time()),
            "model": model_name(body),
            "system_fingerprint": None,
        }
        prompt_tokens = count_tokens(prompt)
        completion_tokens = sum(len(reply.words) for reply in replies)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if stream:
            return self._stream(
                self._openai_events(head, replies, usage if include_usage else None)
            )
        choices = [
            {
                "index": index,
                "message": {"role": "assistant", "content": reply.text, "refusal": None},
                "logprobs": None,
                "finish_reason": "length" if reply.cut else "stop",
            }
            for index, reply in enumerate(replies)
        ]
        return JSONResponse(
            {**head, "object": "chat.completion", "choices": choices, "usage": usage}
        )

    async def _openai_events(
        self, head: dict[str, Any], replies: list[Reply], usage: dict[str, int] | None
    ) -> AsyncIterator[bytes]:
        # With include_usage the real API puts "usage": null on every chunk but the last.
        extra: dict[str, Any] = {"usage": None} if usage is not None else {}

        def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
            return _sse({**head, "object": "chat.completion.chunk", "choices": [choice], **extra})

        for index in range(len(replies)):
            yield chunk(index, {"role": "assistant", "content": "", "refusal": None})
        pieces = [reply.pieces() for reply in replies]
        for position in range(max(len(p) for p in pieces)):
            for index, choice_pieces in enumerate(pieces):
                if position < len(choice_pieces):
                    await self._pause(self.token_delay)
                    yield chunk(index, {"content": choice_pieces[position]})
        for index, reply in enumerate(replies):
            yield chunk(index, {}, "length" if reply.cut else "stop")
        if usage is not None:
            yield _sse({**head, "object": "chat.completion.chunk", "choices": [], "usage": usage})
        yield _sse("[DONE]")

    # --- OpenAI responses -----------------------------------------------------------------

    async def responses(self, request: Request) -> Response:
        await self._pause(self.latency)
        try:
            body = await _json_object(request)
            if not isinstance(body.get("input"), str | list):
                raise BadRequest("input: a string or an array of input items is required", "input")
            prompt = DIALECTS["openai-responses"].parse(body).prompt  # the middleware's reading
            limit = positive_int(body, "max_output_tokens")
            stream = flag(body, "stream")
        except BadRequest as exc:
            return openai_error(400, exc.message, param=exc.param)
        reply = generate(prompt, limit)
        input_tokens, output_tokens = count_tokens(prompt), len(reply.words)
        response: dict[str, Any] = {
            "id": f"resp_{uuid.uuid4().hex}",
            "object": "response",
            "created_at": int(time.time()),
            "status": "incomplete" if reply.cut else "completed",
            "incomplete_details": {"reason": "max_output_tokens"} if reply.cut else None,
            "model": model_name(body),
            "usage": {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + output_tokens,
            },
        }
        item = {
            "id": f"msg_{uuid.uuid4().hex}",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": reply.text, "annotations": []}],
        }
        if stream:
            return self._stream(self._responses_events(response, item, reply))
        return JSONResponse({**response, "output": [item]})

    async def _responses_events(
        self, response: dict[str, Any], item: dict[str, Any], reply: Reply
    ) -> AsyncIterator[bytes]:
        sequence = 0

        def event(kind: str, **fields: Any) -> bytes:
            nonlocal sequence
            sequence += 1
            return _sse({"type": kind, "sequence_number": sequence, **fields}, event=kind)

        where = {"item_id": item["id"], "output_index": 0, "content_index": 0}
        pending = {**response, "status": "in_progress", "incomplete_details": None, "usage": None}
        yield event("response.created", response={**pending, "output": []})
        yield event("response.in_progress", response={**pending, "output": []})
        added = {**item, "status": "in_progress", "content": []}
        yield event("response.output_item.added", output_index=0, item=added)
        empty = {"type": "output_text", "text": "", "annotations": []}
        yield event("response.content_part.added", **where, part=empty)
        for piece in reply.pieces():
            await self._pause(self.token_delay)
            yield event("response.output_text.delta", **where, delta=piece)
        yield event("response.output_text.done", **where, text=reply.text)
        yield event("response.content_part.done", **where, part=item["content"][0])
        yield event("response.output_item.done", output_index=0, item=item)
        yield event(f"response.{response['status']}", response={**response, "output": [item]})

    # --- Anthropic messages --------------------------------------------------------------

    async def messages(self, request: Request) -> Response:
        await self._pause(self.latency)
        try:
            body = await _json_object(request)
            limit = positive_int(body, "max_tokens", required=True)
            prompt = prompt_text(body, system_field=True)
            stream = flag(body, "stream")
        except BadRequest as exc:
            return anthropic_error(400, exc.message)
        reply = generate(prompt, limit)
        message = {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": model_name(body),
            "stop_sequence": None,
        }
        input_tokens = count_tokens(prompt)
        stop_reason = "max_tokens" if reply.cut else "end_turn"
        if stream:
            return self._stream(self._anthropic_events(message, reply, input_tokens, stop_reason))
        return JSONResponse(
            {
                **message,
                "content": [{"type": "text", "text": reply.text}],
                "stop_reason": stop_reason,
                "usage": {"input_tokens": input_tokens, "output_tokens": len(reply.words)},
            }
        )

    async def _anthropic_events(
        self, message: dict[str, Any], reply: Reply, input_tokens: int, stop_reason: str
    ) -> AsyncIterator[bytes]:
        def event(kind: str, **fields: Any) -> bytes:
            return _sse({"type": kind, **fields}, event=kind)

        start_usage = {"input_tokens": input_tokens, "output_tokens": min(1, len(reply.words))}
        start = {**message, "content": [], "stop_reason": None, "usage": start_usage}
        yield event("message_start", message=start)
        yield event("content_block_start", index=0, content_block={"type": "text", "text": ""})
        yield event("ping")
        for piece in reply.pieces():
            await self._pause(self.token_delay)
            yield event("content_block_delta", index=0, delta={"type": "text_delta", "text": piece})
        yield event("content_block_stop", index=0)
        yield event(
            "message_delta",
            delta={"stop_reason": stop_reason, "stop_sequence": None},
            usage={"output_tokens": len(reply.words)},
        )
        yield event("message_stop")

    # --- model list (fields of both APIs' list shapes) -------------------------------------

    async def models(self, request: Request) -> Response:
        await self._pause(self.latency)
        model = {
            "id": MOCK_MODEL,
            "object": "model",
            "created": 0,
            "owned_by": "hydraguard",
            "type": "model",
            "display_name": "hydraguard mock model",
            "created_at": "1970-01-01T00:00:00Z",
        }
        return JSONResponse(
            {
                "object": "list",
                "data": [model],
                "has_more": False,
                "first_id": MOCK_MODEL,
                "last_id": MOCK_MODEL,
            }
        )


def create_mock_app(*, latency: float = 0.0, token_delay: float = 0.0) -> Starlette:
    """The mock as an ASGI app; ``latency`` before each response, ``token_delay`` per delta."""
    model = _MockModel(latency, token_delay)
    post: list[tuple[str, Callable[[Request], Awaitable[Response]]]] = [
        ("/v1/chat/completions", model.chat_completions),
        ("/v1/responses", model.responses),
        ("/v1/messages", model.messages),
    ]
    routes = [Route(path, endpoint, methods=["POST"]) for path, endpoint in post]
    routes.append(Route("/v1/models", model.models, methods=["GET"]))
    return Starlette(routes=routes)
