r"""Phrases that ask a model to spell out its reasoning (the lexicon of ``reasoning_elicitation``).

Distillation campaigns want the teacher's reasoning traces, not just its
answers, so their templates ask for them explicitly. Patterns are matched
against the *lower-cased*, folded prompt (``inspect.fold``: zero-width characters,
fullwidth letters, stray combining marks and Latin look-alikes undone; write extra
patterns in lower case). Words may be separated by any whitespace:
a tab or a line break between "show" and "your" asks the same.

A policy's extra patterns (``anomaly.lexicon_extra``) run on RE2 (``google-re2``), whose
time is linear in the text whatever the pattern: on ``re`` an operator's ``(a+)+$`` would
let one crafted prompt hold the event loop for ever. RE2 refuses what it cannot run in
linear time (lookaround, backreferences, atomic groups, possessive quantifiers), and
:func:`compile_extra` turns that into a policy error. Its ``\w``, ``\d``, ``\s`` and
``\b`` are ASCII only (``\pL``, ``\p{Han}``... for other scripts), ``\z`` is
Python's ``\Z``, ``$`` is the end of the text. The shipped patterns stay on ``re``:
they are linear, and its literal-prefixed search is faster (see below).

Speed: CPython's ``re`` scans fast only for a pattern that starts with a
literal; one big alternation costs ~100 us per KB. So each pattern is its own
literal-prefixed regex, the non-ASCII ones run only on non-ASCII text (an O(1)
check), a pattern is searched for only when the literal it starts with occurs
(a substring test costs far less than a search call). A prompt of up to 16 K characters
is read whole (~18 us per KB of English text); a longer one on its first and last 8 K,
where templates put their instructions: an ask hidden deeper in the middle than that
costs its sender over 2,000 tokens of padding on every request.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import re2

from hydraguard.inspect.fold import fold

# Each starts with a literal and can match ASCII text.
ASCII_PATTERNS: tuple[str, ...] = (
    r"step[-_\s]*by[-_\s]*step",
    r"show\s+(?:your|all|the|me\s+your)\s+(?:work|working|reasoning|steps|thought\s+process)",
    r"chain[-_\s]*of[-_\s]*thoughts?",
    r"think\s+(?:aloud|out\s+loud|carefully\s+before|through\s+(?:this|it)\s+(?:step|carefully))",
    r"explain\s+(?:your|the)\s+(?:(?:internal|full|complete)\s+)?(?:reasoning|thought\s+process|thinking)",
    r"reasoning\s+(?:trace|process|steps)",
    r"<(?:/?think|/?thinking|reasoning)>",
    r"before\s+(?:answering|you\s+answer),\s*(?:reason|think)",
    r"let'?s\s+think",
    r"paso\s+a\s+paso",  # es
    r"tu\s+razonamiento",  # es: muestra / explica tu razonamiento
    r" ton\s+raisonnement",  # fr
    r" votre\s+raisonnement",  # fr
    r"zeige\s+deinen\s+(?:rechenweg|gedankengang|l[oö]sungsweg)",  # de
    r"passo\s+(?:a|dopo)\s+passo",  # pt, it
    r"seu\s+racioc[ií]nio",  # pt
)
# Patterns that need non-ASCII text to match.
NON_ASCII_PATTERNS: tuple[str, ...] = (
    r"étape\s+par\s+étape",  # fr
    r"schritt\s+für\s+schritt",  # de
    r"逐步",  # zh
    r"一步一?步",  # zh
    r"思考过程",  # zh
    r"推理过程",  # zh
    r"段階的に",  # ja
    r"ステップバイステップ",  # ja
    r"思考過程",  # ja
    r"шаг\s+за\s+шагом",  # ru
    r"покажи\s+(?:ход|сво[её])\s",  # ru
)
SCAN_CHARS = 8192  # a longer prompt than twice this is scanned on its head and tail


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


def _re2_options() -> Any:
    options = re2.Options()
    options.never_capture = True  # only "does it match" is asked: no group spans to track
    options.log_errors = False  # a refused pattern is reported as a policy error, not on stderr
    return options


_RE2_OPTIONS = _re2_options()


def compile_extra(pattern: str) -> Any:
    """A policy's extra pattern, folded like the text, compiled for RE2 (linear time).

    Raises ValueError naming the pattern and RE2's reason when RE2 refuses it.
    """
    try:
        return re2.compile(fold(pattern), _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "refused"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(
            f"invalid regex {pattern!r}: {reason} (extra patterns run on RE2, in linear time: "
            "no lookaround, backreferences, atomic groups or possessive quantifiers; "
            "write \\z for \\Z)"
        ) from None


class Lexicon:
    """The compiled default patterns plus a policy's extra ones."""

    def __init__(self, extra: Iterable[str] = ()) -> None:
        # Patterns are folded like the text, so a letter the fold maps elsewhere still meets
        # itself; one that folding made ASCII joins the prefix-gated ones.
        gated = [fold(p) for p in ASCII_PATTERNS]
        non_ascii: list[str] = []
        for pattern in map(fold, NON_ASCII_PATTERNS):
            (gated if pattern.isascii() else non_ascii).append(pattern)
        self.ascii = tuple((literal_prefix(p), re.compile(p)) for p in gated)
        self.non_ascii = tuple(re.compile(p) for p in non_ascii)
        self.extra = tuple(compile_extra(p) for p in extra)

    def matches(self, prompt: str) -> bool:
        """Whether ``prompt`` asks for the model's reasoning."""
        if len(prompt) > 2 * SCAN_CHARS:
            prompt = prompt[:SCAN_CHARS] + "\n" + prompt[-SCAN_CHARS:]
        text = fold(prompt).lower()
        for prefix, pattern in self.ascii:
            if prefix in text and pattern.search(text):
                return True
        if not text.isascii():
            for pattern in self.non_ascii:
                if pattern.search(text):
                    return True
        if not self.extra:
            return False
        # RE2 reads UTF-8: one encoding for all the extra patterns, and a bytes search
        # skips the wrapper's own copy and its mapping of match offsets back to characters.
        # surrogatepass: a lone surrogate (json.loads lets one through) must not raise here.
        data = text.encode("utf-8", "surrogatepass")
        return any(pattern.search(data) for pattern in self.extra)
