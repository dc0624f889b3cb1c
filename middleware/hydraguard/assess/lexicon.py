"""Phrases that ask a model to spell out its reasoning (the lexicon of ``reasoning_elicitation``).

Distillation campaigns want the teacher's reasoning traces, not just its
answers, so their templates ask for them explicitly. Patterns are matched
against the *lower-cased* prompt (write extra patterns in lower case).

Speed: CPython's ``re`` scans fast only for a pattern that starts with a
literal; one big alternation costs ~100 us per KB. So each pattern is its own
literal-prefixed regex, the non-ASCII ones run only on non-ASCII text (an O(1)
check), a pattern is searched for only when the literal it starts with occurs
(a substring test costs far less than a search call), and a long prompt is
scanned on its head and tail, where templates put their instructions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Each starts with a literal and can match ASCII text.
ASCII_PATTERNS: tuple[str, ...] = (
    r"step[- ]by[- ]step",
    r"show (?:your|all|the|me your) (?:work|working|reasoning|steps|thought process)",
    r"chain[- ]of[- ]thoughts?",
    r"think (?:aloud|out loud|carefully before|through (?:this|it) (?:step|carefully))",
    r"explain (?:your|the) (?:internal |full |complete )?(?:reasoning|thought process|thinking)",
    r"reasoning (?:trace|process|steps)",
    r"<(?:/?think|/?thinking|reasoning)>",
    r"before (?:answering|you answer), (?:reason|think)",
    r"let'?s think",
    r"paso a paso",  # es
    r"tu razonamiento",  # es: muestra / explica tu razonamiento
    r" ton raisonnement",  # fr
    r" votre raisonnement",  # fr
    r"zeige deinen (?:rechenweg|gedankengang|l[oö]sungsweg)",  # de
    r"passo (?:a|dopo) passo",  # pt, it
    r"seu racioc[ií]nio",  # pt
)
# Patterns that need non-ASCII text to match.
NON_ASCII_PATTERNS: tuple[str, ...] = (
    r"étape par étape",  # fr
    r"schritt für schritt",  # de
    r"逐步",  # zh
    r"一步一?步",  # zh
    r"思考过程",  # zh
    r"推理过程",  # zh
    r"段階的に",  # ja
    r"ステップバイステップ",  # ja
    r"思考過程",  # ja
    r"шаг за шагом",  # ru
    r"покажи (?:ход|сво[её]) ",  # ru
)
SCAN_CHARS = 1024  # head and tail scanned of a longer prompt


_META = frozenset("\\.^$*+?{}[]()|")


def literal_prefix(pattern: str) -> str:
    """The literal text every match of ``pattern`` starts with ("" if none is evident).

    Meant for the shipped patterns (no top-level ``|``): a substring test for the
    prefix rules most prompts out for a fraction of a regex search's call cost.
    """
    for i, char in enumerate(pattern):
        if char in _META:
            # A quantifier makes the character before it optional.
            return pattern[: i - 1] if char in "*?{" else pattern[:i]
    return pattern


class Lexicon:
    """The compiled default patterns plus a policy's extra ones."""

    def __init__(self, extra: Iterable[str] = ()) -> None:
        self.ascii = tuple((literal_prefix(p), re.compile(p)) for p in ASCII_PATTERNS)
        self.non_ascii = tuple(re.compile(p) for p in NON_ASCII_PATTERNS)
        self.extra = tuple(re.compile(p) for p in extra)

    def matches(self, prompt: str) -> bool:
        """Whether ``prompt`` asks for the model's reasoning."""
        if len(prompt) > 2 * SCAN_CHARS:
            prompt = prompt[:SCAN_CHARS] + "\n" + prompt[-SCAN_CHARS:]
        text = prompt.lower()
        for prefix, pattern in self.ascii:
            if prefix in text and pattern.search(text):
                return True
        if not text.isascii():
            for pattern in self.non_ascii:
                if pattern.search(text):
                    return True
        return any(pattern.search(text) for pattern in self.extra)
