"""Agentic-task episodes: a long multi-step task, then one request per agent step whose
history carries the previous tool calls and tool results, in either API dialect.
"""

from __future__ import annotations

import json
import random
from typing import Any

AGENT_SYSTEM = (
    "You are an autonomous agent with tools. Before each tool call, explain your reasoning "
    "and plan in detail. Continue until the task is fully complete, then summarise every "
    "step you took and why."
)
_TOOLS: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("run_shell", "Run a shell command in the workspace.", {"command": "string"}),
    ("read_file", "Read a file from the workspace.", {"path": "string"}),
    ("write_file", "Write a file in the workspace.", {"path": "string", "content": "string"}),
    ("web_search", "Search the web and return the top results.", {"query": "string"}),
)
_REPOS = ("acme/billing-service", "data-pipeline", "webshop-backend", "ml-feature-store")
_MODULES = ("auth", "billing", "export", "config", "http_client", "scheduler", "search")
_GOALS = (
    "add cursor pagination to the /users endpoint and document it",
    "migrate the config loader from JSON to TOML without breaking existing deployments",
    "find and fix the flaky test in tests/test_{module}.py",
    "implement retry with exponential backoff and jitter in the {module} client",
    "add type hints to the {module} package and make mypy pass in strict mode",
    "replace the hand-written CSV parser in {module} with the standard library",
    "add a --dry-run flag to the CLI and cover it with tests",
)
_SUBJECTS = (
    "vector databases for production search",
    "obligations of model providers under the EU AI Act",
    "battery chemistries for grid storage",
    "open-source observability stacks",
    "carbon accounting methods for cloud workloads",
)


def tools(dialect: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name, description, params in _TOOLS:
        schema = {
            "type": "object",
            "properties": {p: {"type": t} for p, t in params.items()},
            "required": list(params),
        }
        if dialect == "openai":
            fn = {"name": name, "description": description, "parameters": schema}
            out.append({"type": "function", "function": fn})
        else:
            out.append({"name": name, "description": description, "input_schema": schema})
    return out


def task(rng: random.Random) -> str:
    module = rng.choice(_MODULES)
    if rng.random() < 0.35:
        return (
            f"Research {rng.choice(_SUBJECTS)} using the web_search tool. Read at least "
            f"{rng.randint(5, 15)} sources, then write a structured report with citations, a "
            "comparison table, open questions and a recommendation. Plan first, then execute "
            "each step, verifying facts across sources."
        )
    return (
        f"You have a Linux workspace with the repository {rng.choice(_REPOS)} checked out. "
        f"Task: {rng.choice(_GOALS).format(module=module)}. Work autonomously: explore the "
        "codebase, write a plan, make the changes in small steps, run the test suite after "
        "each change and iterate until everything passes. Finish with a summary of each step."
    )


def _step(rng: random.Random) -> tuple[str, dict[str, str], str, str]:
    """(thought, tool name, arguments, tool result) for one agent step."""
    module = rng.choice(_MODULES)
    kind = rng.randrange(4)
    if kind == 0:
        args = {"command": rng.choice(("pytest -q", f"grep -rn {module} src/", "git diff"))}
        failed = rng.randint(0, 4)
        result = f"{failed} failed, {rng.randint(20, 300)} passed in {rng.uniform(1, 40):.2f}s"
        if failed:
            result += f"\nFAILED tests/test_{module}.py::test_case_{rng.randint(1, 40)}"
        return "Let me run this to see the current state.", args, "run_shell", result
    if kind == 1:
        path = f"src/{module}/{rng.choice(('core', 'api', 'models', 'utils'))}.py"
        body = "\n".join(
            f"def {module}_{i}(value):\n    return transform(value, level={rng.randint(1, 9)})"
            for i in range(rng.randint(3, 12))
        )
        return "I need to read the implementation first.", {"path": path}, "read_file", body
    if kind == 2:
        path = f"src/{module}/patch_{rng.randint(1, 99)}.py"
        args = {
            "path": path,
            "content": f"# updated {module} logic\nRETRIES = {rng.randint(2, 9)}\n",
        }
        return "Now I will apply the change.", args, "write_file", "ok"
    query = f"{rng.choice(_SUBJECTS)} {rng.choice(('benchmark', 'comparison', '2025', 'risks'))}"
    results = "\n".join(
        f"{i + 1}. https://example.org/{module}/{rng.randint(100, 999)} - {query} overview"
        for i in range(rng.randint(3, 8))
    )
    return "I'll search for sources.", {"query": query}, "web_search", results


class Episode:
    """One agent run: call :meth:`next_messages` once per request, in order."""

    def __init__(self, rng: random.Random, dialect: str, max_history: int = 6) -> None:
        self._rng = rng
        self._dialect = dialect
        self._max_history = max_history
        self._task: dict[str, Any] = {"role": "user", "content": task(rng)}
        self._history: list[list[dict[str, Any]]] = []

    def next_messages(self) -> list[dict[str, Any]]:
        messages = [self._task, *(m for pair in self._history[-self._max_history :] for m in pair)]
        self._history.append(self._exchange())
        return messages

    def _exchange(self) -> list[dict[str, Any]]:
        thought, args, name, result = _step(self._rng)
        if self._dialect == "openai":
            call_id = f"call_{self._rng.getrandbits(48):012x}"
            fn = {"name": name, "arguments": json.dumps(args)}
            call = {"id": call_id, "type": "function", "function": fn}
            return [
                {"role": "assistant", "content": thought, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": call_id, "content": result},
            ]
        use_id = f"toolu_{self._rng.getrandbits(48):012x}"
        return [
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": thought},
                    {"type": "tool_use", "id": use_id, "name": name, "input": args},
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use_id, "content": result}],
            },
        ]
