"""Fold the Unicode disguises of a prompt, so the lexicon and the template fingerprint see
the words a model reads.

A prompt's text can be changed without changing what a model reads: zero-width and
other invisible characters inside words ("step<U+200B>by step"), fullwidth or
mathematical letters (U+FF53 "s" fullwidth, U+1D42C "s" bold), stray combining marks
("s<U+0308>tep") and letters of other scripts that look Latin (Cyrillic dze and er in
"step"), accents ("st<e acute>p"). Each
defeats a lexicon match and gives every prompt of a template its own fingerprint.
:func:`fold` undoes them: invisible characters (Unicode's Default_Ignorable_Code_Point
set) removed, compatibility forms folded and diacritical marks removed (NFKD, marks out,
NFKC), and inside a word that mixes Latin and other letters, the others mapped to the
Latin letter they are confusable with (Unicode's confusables.txt, as packaged by
``confusable_homoglyphs``). Accents go for every script: "étape" folds to "etape", so
what is matched against folded text (the lexicon's patterns) is folded the same way.

ASCII text is returned as it is (an O(1) test), so English prompts cost nothing; other
text costs two normalisation passes and three regex scans. Folding is for matching
only: the request is forwarded unchanged.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["fold"]

# Default_Ignorable_Code_Point (Unicode DerivedCoreProperties.txt): rendered as nothing.
_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0000-\U000e0fff]+"
)
# Combining marks that decorate any letter (the combining diacritical blocks): accents
# and decoration, which a reader reads through.
_MARKS = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]+")
# A Latin letter next to a non-ASCII letter: where homoglyphs hide. Words are found by
# the pair, then widened, rather than by one pattern ``\w*(?:pair)\w*``: that one
# backtracks over every start of a long word without a pair (a line of Chinese, 4 KB of
# accented letters) and took seconds; this is linear.
_PAIR = re.compile(r"[A-Za-z][^\W\x00-\x7f]|[^\W\x00-\x7f][A-Za-z]")
_WORD = re.compile(r"\w+")
_UP_TO_LAST_NON_WORD = re.compile(r".*\W", re.S)

_latin: dict[int, str] | None = None


def _latin_table() -> dict[int, str]:
    """Non-ASCII character -> the ASCII letter or digit it is confusable with (loaded on
    first use: the data is ~1 MB of JSON and most processes never see a mixed word)."""
    global _latin
    if _latin is None:
        from confusable_homoglyphs.confusables import confusables_data

        table: dict[int, str] = {}
        for char, lookalikes in confusables_data.items():
            if len(char) != 1 or char.isascii():
                continue
            for lookalike in lookalikes:
                target = lookalike.get("c", "")
                if len(target) == 1 and target.isascii() and target.isalnum():
                    table[ord(char)] = target
                    break
        _latin = table
    return _latin


def _to_latin(text: str, pair: re.Match[str] | None) -> str:
    """``text`` with every word that holds a Latin/non-ASCII pair mapped to Latin letters,
    ``pair`` being the first such pair (None: none)."""
    table = _latin_table()
    out: list[str] = []
    done = 0  # text[:done] is in out
    while pair is not None:
        before = _UP_TO_LAST_NON_WORD.match(text, done, pair.start())
        start = done if before is None else before.end()  # the start of the pair's word
        word = _WORD.match(text, start)
        assert word is not None  # the pair itself is two word characters
        out.append(text[done:start])
        out.append(word.group().translate(table))
        done = word.end()
        pair = _PAIR.search(text, done)
    out.append(text[done:])
    return "".join(out)


def fold(text: str) -> str:
    """``text`` with its Unicode disguises undone (see the module docstring)."""
    if text.isascii():
        return text
    if _INVISIBLE.search(text):
        text = _INVISIBLE.sub("", text)
    # Decomposed, the accents and decorations are marks of their own; without them, NFKC
    # puts back what they leave (compatibility forms folded, kana voicing recomposed).
    text = unicodedata.normalize("NFKD", text)
    if _MARKS.search(text):
        text = _MARKS.sub("", text)
    text = unicodedata.normalize("NFKC", text)
    return _to_latin(text, _PAIR.search(text))
