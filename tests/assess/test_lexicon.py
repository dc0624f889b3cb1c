"""The reasoning lexicon: what it catches, in several languages, and what it leaves alone."""

from __future__ import annotations

import re
import time

import pytest

from hydraguard.assess.config import AnomalyConfig
from hydraguard.assess.lexicon import (
    ASCII_PATTERNS,
    SCAN_CHARS,
    Lexicon,
    compile_extra,
    literal_prefix,
)
from hydraguard.inspect.fold import fold

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


@pytest.mark.timeout(20)  # on ``re`` these backtrack for ever: fail, don't hang the suite
@pytest.mark.parametrize(
    ("pattern", "prompt", "expected"),
    [
        (r"(a+)+$", "a" * 30000 + "!", False),
        (r"(a+)+$", "a" * 30000, True),
        (r"(\w+\s?)*x", "word " * 6000 + "!", False),
        (r"(\w+\s?)*x", "word " * 6000 + "x", True),
    ],
    ids=["nested-plus-miss", "nested-plus-hit", "words-miss", "words-hit"],
)
def test_an_operators_catastrophic_pattern_runs_in_linear_time(
    pattern: str, prompt: str, expected: bool
) -> None:
    # Accepted by the policy (RE2 runs it), then one crafted 30 KB prompt: answered at once.
    lexicon = Lexicon(AnomalyConfig(lexicon_extra=(pattern,)).lexicon_extra)
    started = time.perf_counter()
    assert lexicon.matches(prompt) is expected
    assert time.perf_counter() - started < 1.0


# Sample prompts, folded and lower-cased as the lexicon reads them.
_SAMPLES = [
    fold(prompt).lower()
    for prompt in (
        "Please narrate every inference you make.",
        "Walk me through the logic, then answer.",
        "walk me through logic\nREASON: first the premise",
        "Reason: it is raining. Derive the answer from first principles.",
        "Use 12 steps of deduction, then 1 step of analysis.",
        "Réponds étape par étape et narrate each inference",
        "请展示你的思考和推理过程",
        "An ordinary question about the weather in Lisbon.",
        "narrate\teach inference and derivebut not derive",
    )
]


@pytest.mark.parametrize(
    "pattern",
    [
        r"narrate (?:each|every) inference",
        r"walk\s+me\s+through\s+(?:the\s+)?logic",
        r"^reason:",
        r"\bderive\b.*from first principles",
        r"[0-9]+ steps? of (?:analysis|deduction)",
        r"etape par (é|e)tape",
        r"思考.{0,4}过程",
        r"narrate\seach|derive$",
    ],
)
def test_extra_patterns_match_on_re2_as_they_would_on_re(pattern: str) -> None:
    on_re = re.compile(fold(pattern))
    on_re2 = compile_extra(pattern)
    answers = [bool(on_re.search(text)) for text in _SAMPLES]
    assert [bool(on_re2.search(text.encode())) for text in _SAMPLES] == answers
    assert any(answers)  # each pattern meets at least one sample


def test_extra_patterns_classes_are_ascii_and_unicode_properties_reach_other_scripts() -> None:
    # RE2's \w is [0-9A-Za-z_] (Python's is Unicode): the documented way to other scripts is \pL.
    assert not Lexicon([r"опиши\s+\w+\s+решения"]).matches("Опиши ход решения")
    assert Lexicon([r"опиши\s+\pL+\s+решения"]).matches("Опиши ход решения")


def test_a_lone_surrogate_does_not_break_the_extra_patterns() -> None:
    assert Lexicon([r"narrate"]).matches("a\ud800 narrate")


def test_long_prompts_are_scanned_on_head_and_tail() -> None:
    filler = "lorem ipsum " * SCAN_CHARS
    assert LEXICON.matches("Think step by step. " + filler)
    assert LEXICON.matches(filler + " Think step by step.")
    # Deeper than SCAN_CHARS from both ends of a prompt longer than twice that: not read.
    assert not LEXICON.matches(filler + " Think step by step. " + filler)


def test_an_ask_a_few_kilobytes_into_the_prompt_is_read() -> None:
    # A template hiding its ask behind 3 KB of padding on both sides (~750 tokens each) is
    # still read: the scan covers SCAN_CHARS from each end, the whole of a shorter prompt.
    padding = "lorem ipsum dolor sit amet " * 120  # 3,240 characters
    assert LEXICON.matches(padding + " Now think step by step. " + padding)
    assert LEXICON.matches(padding * 2 + " Show your reasoning. " + padding * 2)
    assert not LEXICON.matches(padding + " Now answer briefly. " + padding)


@pytest.mark.parametrize("pattern", ASCII_PATTERNS)
def test_every_shipped_pattern_has_the_literal_prefix_its_prefilter_tests(pattern: str) -> None:
    # The prefilter skips a pattern whose prefix is absent: that is only sound when
    # every match starts with the prefix (no top-level alternation).
    prefix = literal_prefix(pattern)
    assert prefix
    depth = 0
    for char in pattern:  # shipped patterns escape no parentheses
        depth += {"(": 1, ")": -1}.get(char, 0)
        assert not (char == "|" and depth == 0), "top-level alternation"


@pytest.mark.parametrize(
    ("pattern", "prefix"),
    [("let'?s think", "let"), ("step[- ]by", "step"), ("a{2}b", ""), ("plain", "plain")],
)
def test_literal_prefix(pattern: str, prefix: str) -> None:
    assert literal_prefix(pattern) == prefix


@pytest.mark.parametrize(
    "prompt",
    [
        "Think st\u200bep by st\u200dep.",  # zero-width space / joiner inside the words
        "Think step\u200bby\u2060step.",  # invisible characters instead of the spaces
        "Think \uff53\uff54\uff45\uff50 \uff42\uff59 \uff53\uff54\uff45\uff50.",  # fullwidth letters
        "Think \U0001d42c\U0001d42d\U0001d41e\U0001d429 \U0001d41b\U0001d432 \U0001d42c\U0001d42d\U0001d41e\U0001d429.",  # mathematical bold letters
        "Think s\u0308te\u0301p by ste\u0336p.",  # combining marks
        "Think \u0455t\u0435\u0440 b\u0443 \u0455t\u0435\u0440.",  # Cyrillic dze, er and u for s, p and y
        "\u0405h\u043ew \u0443\u043eur w\u043erk.",  # Cyrillic capital dze and small o, u
        "Show\tyour\nreasoning.",  # any whitespace between the words
        "solve it stepbystep",
        "use chain\u00a0of\u00a0thought",  # no-break spaces
    ],
)
def test_unicode_and_spacing_disguises_still_match(prompt: str) -> None:
    assert LEXICON.matches(prompt)


def test_folding_keeps_other_scripts_and_extra_patterns_matching() -> None:
    assert LEXICON.matches("Реши шаг за шагом")  # Cyrillic text is not folded to Latin
    # "Write a story about a dog": Cyrillic, with letters that look Latin, stays Cyrillic
    assert not LEXICON.matches(
        "\u041d\u0430\u043f\u0438\u0448\u0438 \u0440\u0430\u0441\u0441\u043a\u0430\u0437 \u043e \u0441\u043e\u0431\u0430\u043a\u0435"
    )
    assert Lexicon([r"narrate every inference"]).matches(
        "Narrate \u0435v\u0435ry inf\u0435r\u0435nce"
    )
