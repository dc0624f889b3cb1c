"""Unicode folding (``inspect.fold``): the same result as the plain one-pattern rewrite,
and linear on the long non-Latin prompts that pattern took seconds over."""

from __future__ import annotations

import random
import re
import threading
import unicodedata

import pytest

from hydraguard.assess.lexicon import Lexicon
from hydraguard.inspect import fold as fold_module
from hydraguard.inspect.fold import fold
from hydraguard.inspect.template import fingerprint

# The rewrite as first written: every word holding a Latin letter next to a non-ASCII
# letter, mapped whole. Right, but it backtracks over every start of a long word.
_REFERENCE_MIXED = re.compile(r"\w*(?:[A-Za-z][^\W\x00-\x7f]|[^\W\x00-\x7f][A-Za-z])\w*")


def reference_fold(text: str) -> str:
    if text.isascii():
        return text
    text = fold_module._INVISIBLE.sub("", text)
    text = unicodedata.normalize("NFKD", text)
    text = fold_module._MARKS.sub("", text)
    text = unicodedata.normalize("NFKC", text)
    table = fold_module._latin_table()
    return _REFERENCE_MIXED.sub(lambda m: m.group().translate(table), text)


# Latin letters, Cyrillic and Greek look-alikes, CJK, accents, digits, "_", separators,
# an invisible character and a combining mark: every kind of boundary the rewrite meets.
_ALPHABET = (
    "abcpxyzAB09_ ,.-'\n\u0430\u0435\u0440\u0441\u043e\u03bf\u03b1我们中éü\u200b\u0301\uff53"
)


@pytest.mark.parametrize("seed", range(4))
def test_fold_rewrites_mixed_words_exactly_as_the_one_pattern_rewrite(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(500):
        text = "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(1, 40)))
        assert fold(text) == reference_fold(text), repr(text)


def test_fold_maps_look_alikes_only_inside_mixed_words() -> None:
    # Cyrillic ie and er (U+0435, U+0440) inside a Latin word are undone; a Russian word stays Russian.
    assert fold("st\u0435\u0440 by step, шаг") == "step by step, шаг"
    assert fold("中文 st\u0435p 中文") == "中文 step 中文"
    assert fold("_st\u0435p_") == "_step_"  # "_" is a word character, as in \w


def _finishes_within(seconds: float, work: object) -> bool:
    """Whether ``work()`` returns within ``seconds`` (a hang guard, not a speed figure:
    the pattern this replaces ran for minutes on these inputs, the fix for milliseconds)."""
    done = threading.Event()
    thread = threading.Thread(target=lambda: (work(), done.set()), daemon=True)  # type: ignore[operator]
    thread.start()
    return done.wait(seconds)


@pytest.mark.parametrize(
    "text",
    [
        "".join(
            random.Random(1).choice("我们你他的是在有个人这中大为上来说国到会")
            for _ in range(65536)
        ),
        "é" * 65536,
        "a\u0301" * 32768,
        "a\u200b" * 32768,
    ],
    ids=["chinese", "accents", "combining-marks", "zero-width"],
)
def test_long_unspaced_non_latin_text_folds_without_backtracking(text: str) -> None:
    # Before: ~200 s for the Chinese one (quadratic backtracking inside one 64 K-letter word).
    assert _finishes_within(10.0, lambda: fold(text))


def test_a_chinese_prompt_is_read_by_the_lexicon_and_the_fingerprint_without_stalling() -> None:
    prompt = "".join(
        random.Random(2).choice("我们你他的是在有个人这中大为上来说国到会") for _ in range(4096)
    )
    lexicon = Lexicon()
    # Before the fix, these two took ~0.1 s and ~0.5 s per request, on the event loop.
    assert _finishes_within(10.0, lambda: [lexicon.matches(prompt + "逐步") for _ in range(50)])
    assert _finishes_within(10.0, lambda: [fingerprint(prompt + str(i)) for i in range(50)])
    assert lexicon.matches(prompt + "请逐步思考")


def test_an_email_is_one_placeholder_wherever_its_local_part_starts() -> None:
    # The e-mail pattern now starts a local part only at its first character (linear on a
    # long run with no domain after it); addresses still fold to the same placeholder.
    assert fingerprint("mail bob.smith@example.com now") == fingerprint(
        "mail ada+x@corp.example.org now"
    )
    assert fingerprint("(bob@example.com)") == fingerprint("(x.y-z@a.b.c)")
