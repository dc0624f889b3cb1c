"""Prompt builders: every population's prompt text, from the corpora and a caller's rng."""

from __future__ import annotations

import random
import string
from collections.abc import Sequence
from functools import cache

from hydraguard.simulate import corpus, corpus_attack

STEP_SUFFIXES = (
    " Explain step by step.",
    " Show your work.",
    " Please show all the steps.",
    " Can you walk me through it step by step?",
    " Explain step by step so I can follow the method.",
)


@cache
def _fields(template: str) -> tuple[str, ...]:
    return tuple(name for _, name, _, _ in string.Formatter().parse(template) if name)


def _fill(rng: random.Random, template: str, topic: corpus.Topic) -> str:
    values: dict[str, object] = {}
    for name in _fields(template):
        base = name[:-1] if name.endswith("2") else name
        if base == "thing":
            pool: Sequence[str] = topic.things
        elif base in topic.slots:
            pool = topic.slots[base]
        elif base == "audience":
            pool = corpus.AUDIENCES
        else:  # "n"
            values[name] = rng.randint(3, 10)
            continue
        value = rng.choice(pool)
        if name.endswith("2"):  # a second, different subject ("compare X and Y")
            first = values.get(base)
            while value == first and len(pool) > 1:
                value = rng.choice(pool)
        values[name] = value
        values.setdefault(base, value)
    return template.format(**values)


def topic_templates(topic: str) -> tuple[str, ...]:
    return corpus.GENERIC + corpus.TOPICS[topic].templates


def benign_prompt(rng: random.Random, topics: Sequence[str], *, polish: bool = True) -> str:
    """One ordinary question about one of ``topics``, with an occasional opener/closer."""
    topic = corpus.TOPICS[rng.choice(topics)]
    text = _fill(rng, rng.choice(corpus.GENERIC + topic.templates), topic)
    if polish:
        text = rng.choice(corpus.OPENERS) + text + rng.choice(corpus.CLOSERS)
        if rng.random() < 0.15:  # people type in lower case and drop punctuation
            text = text.lower().rstrip("?.!")
    return text


def step_prompt(rng: random.Random, topics: Sequence[str]) -> str:
    """A student's homework question asking for the method, not just the answer."""
    return benign_prompt(rng, topics, polish=False) + rng.choice(STEP_SUFFIXES)


def document(rng: random.Random, topics: Sequence[str], sentences: int) -> str:
    """Pasted text (notes, a report) for summarise/rewrite requests."""
    topic = corpus.TOPICS[rng.choice(topics)]
    return " ".join(
        rng.choice(corpus.DOC_SENTENCES).format(
            thing=rng.choice(topic.things), n=rng.randint(2, 40)
        )
        for _ in range(sentences)
    )


def document_prompt(rng: random.Random, topics: Sequence[str]) -> str:
    ask = rng.choice(
        (
            "Summarize this for me:",
            "Turn these notes into a short email:",
            "What are the action items here?",
            "Rewrite this more clearly:",
            "Find the main risks mentioned in this text:",
        )
    )
    return f"{ask}\n\n{document(rng, topics, rng.randint(4, 40))}"


def follow_up(rng: random.Random) -> str:
    return rng.choice(corpus.FOLLOW_UPS)


def assistant_reply(rng: random.Random, prompt: str) -> str:
    """A stand-in for the model's previous answer in a conversation's history."""
    first = prompt.split("\n", 1)[0][:80].rstrip("?.! ")
    return f"Here is an answer to: {first}. " + document(rng, ("writing",), rng.randint(1, 4))


def eval_prompt(rng: random.Random, kind: str) -> str:
    return corpus_attack.EVAL_TEMPLATES[kind].format(item=corpus_attack.eval_item(rng, kind))


def reasoning_prompt(rng: random.Random, templates: Sequence[str]) -> str:
    problem = rng.choice(corpus_attack.PROBLEM_GENERATORS)(rng)
    return rng.choice(templates).format(problem=problem)


def probe_prompt(rng: random.Random) -> str:
    template = rng.choice(corpus_attack.PROBE_TEMPLATES)
    values: dict[str, object] = {"a": rng.randint(2, 999), "b": rng.randint(2, 999)}
    for name, pool in corpus_attack.PROBE_FILLERS.items():
        values[name] = rng.choice(pool)
    return template.format(**values)
