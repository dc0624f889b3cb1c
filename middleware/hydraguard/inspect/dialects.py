"""The dialects by name, as a policy's routes name them."""

from __future__ import annotations

from .anthropic_batches import AnthropicBatches
from .anthropic_messages import AnthropicMessages
from .dialect import Dialect
from .openai_chat import OpenAIChat
from .openai_responses import OpenAIResponses

DIALECTS: dict[str, Dialect] = {
    "openai-chat": OpenAIChat(),
    "openai-responses": OpenAIResponses(),
    "anthropic-messages": AnthropicMessages(),
    "anthropic-batches": AnthropicBatches(),
    "generic": Dialect(),
}


def dialect_for_path(path: str) -> Dialect:
    """Best guess for paths outside any policy route (used by the gateway's error pages)."""
    if path.endswith("/messages/batches"):
        return DIALECTS["anthropic-batches"]
    if path.endswith("/messages"):
        return DIALECTS["anthropic-messages"]
    if path.endswith("/responses"):
        return DIALECTS["openai-responses"]
    if path.endswith(("/chat/completions", "/completions")):
        return DIALECTS["openai-chat"]
    return DIALECTS["generic"]
