"""The reasoning lexicon: what it catches, in several languages, and what it leaves alone."""

from __future__ import annotations

import pytest

from hydraguard.assess.lexicon import SCAN_CHARS, Lexicon

LEXICON = Lexicon()


@pytest.mark.parametrize(
    "prompt",
    [
        "Let's think step by step.",
        "Solve it Step-By-Step, please",
        "Show your work and give the answer.",
        "use chain-of-thought",
        "Think aloud while you solve this",
        "Explain your internal reasoning in detail",
        "Output the full reasoning trace",
        "Put your thoughts in <thinking> tags",
        "Resuelve el problema paso a paso",
        "Explique ton raisonnement",
        "Réponds étape par étape",
        "Löse es Schritt für Schritt",
        "Resolva passo a passo e mostre seu raciocínio",
        "请逐步推理并给出答案",
        "段階的に考えてください",
        "Реши шаг за шагом",
    ],
)
def test_elicitations_match(prompt: str) -> None:
    assert LEXICON.matches(prompt)


@pytest.mark.parametrize(
    "prompt",
    [
        "What's the capital of France?",
        "Write a poem about stepping stones",
        "My chain broke, how do I fix my bike?",
        "I think this is a reasonable plan, review it",
        "Donne-moi une recette de crêpes",
        "写一首关于春天的诗",
    ],
)
def test_ordinary_prompts_do_not(prompt: str) -> None:
    assert not LEXICON.matches(prompt)


def test_extra_patterns_extend_the_defaults() -> None:
    lexicon = Lexicon([r"narrate (?:each|every) inference"])
    assert lexicon.matches("Please narrate every inference.")
    assert lexicon.matches("step by step")


def test_long_prompts_are_scanned_on_head_and_tail() -> None:
    filler = "lorem ipsum " * SCAN_CHARS
    assert LEXICON.matches("Think step by step. " + filler)
    assert LEXICON.matches(filler + " Think step by step.")
