"""Prompt template fingerprints: the same template with other slot fillers, the same hash.

Distillation campaigns send millions of prompts cut from a few templates
("Solve the following problem step by step: <problem>"). :func:`normalise`
undoes Unicode disguises (``inspect.fold``), removes the slot fillers (numbers,
quoted strings, code, URLs, e-mails, mid-sentence capitalised names),
:func:`fingerprint` turns what remains into a
64-bit SimHash over word 3-shingles, and :func:`band_keys` gives LSH keys so
near-duplicates (Hamming distance <= 3) meet in at least one bucket.

Hand-written: the maintained sketch libraries do MinHash (``datasketch``, with
numpy and 128 permutations per document, far above our per-request budget) or
unmaintained SimHash C extensions; SimHash + banding is ~60 lines of stdlib.
"""

from __future__ import annotations

import hashlib
import re

from .fold import fold

__all__ = [
    "band_ids",
    "band_key",
    "band_keys",
    "clear_cache",
    "fingerprint",
    "hamming",
    "normalise",
]

_MASK64 = (1 << 64) - 1
_SHINGLE = 3
# Long prompts are fingerprinted on their head and tail: templates keep their
# instructions there, and the cost stays bounded whatever the prompt length.
_MAX_CHARS, _HEAD_CHARS = 4096, 3072
_MAX_WORDS, _HEAD_WORDS = 256, 160

# Ordered: code first (it may contain anything), then URLs and e-mails (they
# contain digits and dots), quotes, names (need the original case), numbers.
# Each pattern runs only when one of its trigger strings occurs: a substring
# test costs a fraction of a regex scan, and most prompts have no URL or code.
_SUBSTITUTIONS: tuple[tuple[tuple[str, ...], re.Pattern[str], str], ...] = (
    (("```",), re.compile(r"```.*?(?:```|\Z)", re.S), " <code> "),
    (("`",), re.compile(r"`[^`\n]{1,200}`"), " <code> "),
    (("://", "www."), re.compile(r"(?:https?://|www\.)[^\s<>\"']+"), " <url> "),
    # The lookbehind tries a local part only from its first character: from every
    # character of a long run without a domain after it, the scan was quadratic.
    (("@",), re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), " <email> "),
    # A quote ends at its closing mark and never spans another opening one: from each of a
    # long run of opening marks, the scan stops at the next (it went 300 characters on).
    (
        ('"', "“", "«"),
        re.compile(r"\"[^\"\n]{0,300}\"|“[^“”\n]{0,300}”|«[^«»\n]{0,300}»"),
        " <str> ",
    ),
    (("'",), re.compile(r"'(?<!\w')[^'\n]{1,300}'(?!\w)"), " <str> "),
    # A capitalised word after a lower-case word (not at a sentence start),
    # plus any capitalised words that follow it: "ask Ada Lovelace about".
    ((), re.compile(r"[A-ZÀ-Þ](?<=[a-zß-ÿ,;] [A-ZÀ-Þ])[\w'-]*(?: [A-ZÀ-Þ][\w'-]*)*"), " <name> "),
    ((), re.compile(r"[0-9][0-9.,:/_-]*"), " <num> "),
)


def _words(text: str) -> list[str]:
    # Zero-width characters, fullwidth letters and look-alikes would give each prompt of a
    # template its own words: fold them first (free for ASCII text).
    text = fold(text)
    for triggers, pattern, placeholder in _SUBSTITUTIONS:
        if triggers:
            # A plain loop, not any(<generator>): this runs six times per prompt and
            # the generator's set-up cost more than the substring tests themselves.
            for trigger in triggers:
                if trigger in text:
                    text = pattern.sub(placeholder, text)
                    break
        else:
            text = pattern.sub(placeholder, text)
    return text.lower().split()


def normalise(text: str) -> str:
    """Lower-case ``text`` with its slot fillers replaced by placeholders, whitespace collapsed."""
    return " ".join(_words(text))


class _WordHashes(dict[str, bytes]):
    """Memoised 8-byte blake2b per word (a stable hash: ``hash()`` is salted per process)."""

    def __missing__(self, word: str) -> bytes:
        if len(self) >= 1 << 16:  # vocabulary bound; forgetting only costs speed
            self.clear()
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        self[word] = digest
        return digest


_word_hashes = _WordHashes()
_LOW_NIBBLES = int.from_bytes(b"\x0f" * 8 * (_MAX_WORDS + 2), "little")


# Fingerprints of recent prompts, keyed by the text's hash: templated and probing traffic
# resends the same text, and hash() is computed once per str object and kept on it.
# Python's str hash is a 64-bit SipHash keyed per process, so outsiders cannot aim
# collisions at it and an accidental one is ~2^-64 per pair; bounded by clearing.
_recent: dict[int, int] = {}
_RECENT = 1 << 13


def fingerprint(text: str) -> int:
    """64-bit SimHash of the normalised ``text`` over word 3-shingles (0 for empty text)."""
    key = hash(text)
    fp = _recent.get(key)
    if fp is None:
        if len(_recent) >= _RECENT:
            _recent.clear()
        fp = _recent[key] = _fingerprint(text)
    return fp


def clear_cache() -> None:
    """Forget the memoised fingerprints (benchmarks that must not reuse an earlier pass's)."""
    _recent.clear()


def _fingerprint(text: str) -> int:
    if len(text) > _MAX_CHARS:
        text = text[:_HEAD_CHARS] + " " + text[_HEAD_CHARS - _MAX_CHARS :]
    words = _words(text)
    if len(words) > _MAX_WORDS:
        words = words[:_HEAD_WORDS] + words[_HEAD_WORDS - _MAX_WORDS :]
    if not words:
        return 0
    k = min(_SHINGLE, len(words))
    digests = list(map(_word_hashes.__getitem__, words))
    # Pack one word hash per 64-bit lane of a big int and build every shingle
    # hash at once: lane j = h(w_j) ^ bswap(h(w_j+1)) ^ nibbleswap(h(w_j+2)), a
    # different bit permutation per position so word order counts. Big-int ops
    # run in C, which keeps a 1 KB prompt in the tens of microseconds.
    packed = int.from_bytes(b"".join(digests), "little")
    shingles = packed
    if k >= 2:
        shingles ^= int.from_bytes(b"".join(reversed(digests)), "big") >> 64
    if k >= 3:
        swapped = ((packed >> 4) & _LOW_NIBBLES) | ((packed & _LOW_NIBBLES) << 4)
        shingles ^= swapped >> 128
    n = len(words) - k + 1
    shingles &= (1 << (64 * n)) - 1
    return _majority_bits(shingles, n)


def _majority_bits(lanes: int, n: int) -> int:
    """Bit i set when more than half of the ``n`` 64-bit lanes of ``lanes`` have bit i set."""
    # Bit-sliced counting: fold the upper half of the lanes onto the lower
    # half with a ripple-carry adder over bit planes (plane k holds bit k of
    # every column's partial count), until one lane is left. ~log2(n) rounds
    # of C-level big-int ops instead of 64 x n Python-level bit tests.
    planes = [lanes]
    width = n
    while width > 1:
        half = (width + 1) // 2
        shift = 64 * half
        low = (1 << shift) - 1
        carry = 0
        summed = []
        for plane in planes:
            a, b = plane & low, plane >> shift
            partial = a ^ b
            summed.append(partial ^ carry)
            carry = (a & b) | (carry & partial)
        if carry:
            summed.append(carry)
        planes, width = summed, half
    # Compare every column's count with n // 2, most significant plane first.
    threshold = n // 2
    greater, equal = 0, _MASK64
    for k in range(max(len(planes), threshold.bit_length()) - 1, -1, -1):
        plane = planes[k] if k < len(planes) else 0
        if (threshold >> k) & 1:
            equal &= plane
        else:
            greater |= equal & plane
            equal &= ~plane
    return greater


def band_ids(fp: int, bands: int = 4) -> list[int]:
    """The LSH bands of ``fp`` as ints, the band's number above bit 64: what
    :func:`band_keys` spells out, cheaper to compare and keep (see ``band_key``)."""
    assert 0 < bands <= 64 and 64 % bands == 0, "bands must divide 64"
    width = 64 // bands
    mask = (1 << width) - 1
    return [band << 64 | (fp >> (band * width)) & mask for band in range(bands)]


def band_key(band_id: int) -> str:
    """One band of :func:`band_ids` as a linking value: ``"<band>:<hex>"``."""
    return f"{band_id >> 64}:{band_id & _MASK64:x}"


def band_keys(fp: int, bands: int = 4) -> list[str]:
    """LSH keys: ``fp`` cut in ``bands`` bands; fingerprints within ``bands - 1`` bits share one."""
    return [band_key(band_id) for band_id in band_ids(fp, bands)]


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two fingerprints."""
    return ((a ^ b) & _MASK64).bit_count()
