"""Template fingerprints: other slot fillers, same template; other prompts, other fingerprints."""

from __future__ import annotations

import random

import pytest

from hydraguard.inspect.template import (
    band_ids,
    band_key,
    band_keys,
    fingerprint,
    hamming,
    normalise,
)

TEMPLATE = (
    "You are a world-class tutor. Solve the following problem and explain your reasoning step "
    "by step before giving the final answer in one line. Problem: {}. Check the result twice."
)
FILLERS = [
    "What is 17 times 23",
    "What is 4.5 times 1,024",
    'Ask Ada Lovelace about "the analytical engine" then count to 12',
    "Ask Alan Turing about 'computable numbers' then count to 3",
    "Run `sort -n data.txt` on the file at https://example.org/data.txt",
    "Run `uniq -c` on the file at www.example.com/a?b=1",
    "Mail grace@example.org the value of 2**10",
    "Mail linus@kernel.example the value of 3**7",
]
WORDS = (
    "apple river garden engine piano theory budget castle winter coffee planet yellow window "
    "market bridge silver forest letter camera dinner mirror pencil rocket summer tunnel violin"
).split()


def unrelated(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(15, 40)))


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("What is 17 times 23.5?", "what is <num> times <num> ?"),
        ('Translate "bonjour le monde" now', "translate <str> now"),
        ("Ask Ada Lovelace about it", "ask <name> about it"),
        ("Open https://example.org/x?y=1 then", "open <url> then"),
        ("Write to ada@example.org today", "write to <email> today"),
        ("Say “hi there” or «salut» now", "say <str> or <str> now"),
        # A quote never spans another opening mark: the innermost one is the quote.
        ("x “a “b” c” y", "x “a <str> c” y"),
        ("«««« z »", "««« <str>"),
        ("Fix `x = 1` in\n```py\nprint(x)\n```\nplease", "fix <code> in <code> please"),
        ("  Many   spaces\n\tand tabs ", "many spaces and tabs"),
        ("Sentence start stays. Names Mid Sentence go", "sentence start stays. names <name> go"),
    ],
)
def test_normalise(text: str, normalised: str) -> None:
    assert normalise(text) == normalised


def test_the_same_template_with_other_fillers_is_a_near_duplicate() -> None:
    fps = [fingerprint(TEMPLATE.format(filler)) for filler in FILLERS]
    for fp in fps[1:]:
        assert hamming(fps[0], fp) <= 16
    # Fillers of the same shape give the same fingerprint, and share a band key.
    for a, b in zip(fps[::2], fps[1::2], strict=True):
        assert hamming(a, b) <= 3
        assert set(band_keys(a)) & set(band_keys(b))


def test_unrelated_prompts_are_far_apart_and_share_no_band() -> None:
    rng = random.Random(3)
    fps = [fingerprint(unrelated(rng)) for _ in range(60)]
    template = fingerprint(TEMPLATE.format(FILLERS[0]))
    distances = [hamming(a, b) for i, a in enumerate(fps) for b in fps[i + 1 :]]
    assert min(distances) > 3
    assert sum(distances) / len(distances) > 20
    assert all(hamming(template, fp) > 16 for fp in fps)
    shared = sum(
        bool(set(band_keys(a)) & set(band_keys(b))) for i, a in enumerate(fps) for b in fps[i + 1 :]
    )
    assert shared <= len(distances) // 100


@pytest.mark.parametrize("distance", [0, 1, 2, 3])
def test_band_keys_catch_every_near_duplicate_within_three_bits(distance: int) -> None:
    rng = random.Random(distance)
    for _ in range(200):
        fp = rng.getrandbits(64)
        other = fp
        for bit in rng.sample(range(64), distance):
            other ^= 1 << bit
        assert hamming(fp, other) == distance
        assert set(band_keys(fp)) & set(band_keys(other))


def test_band_keys_are_per_band() -> None:
    assert band_keys(0) != band_keys(0, bands=8)
    assert len(band_keys(0, bands=8)) == 8
    assert len(set(band_keys(0))) == 4  # the same value in two bands is two keys


def test_fingerprint_is_deterministic_and_stable() -> None:
    text = TEMPLATE.format(FILLERS[0])
    assert fingerprint(text) == fingerprint(text)
    assert 0 < fingerprint(text) < 2**64
    assert fingerprint("") == 0
    assert fingerprint("one") != fingerprint("two")
    assert fingerprint("hello there") != 0


def test_word_order_matters() -> None:
    a = "the cat chased the dog around the garden all day long"
    b = "long day all garden the around dog the chased cat the"
    assert hamming(fingerprint(a), fingerprint(b)) > 10


def test_long_prompts_are_fingerprinted_on_head_and_tail() -> None:
    padding = " ".join(["alpha"] * 1500)
    head, tail = TEMPLATE.format("x"), "Answer in one line."
    a = f"{head} {padding} the middle differs here {padding} {tail}"
    b = f"{head} {padding} something else entirely {padding} {tail}"
    assert fingerprint(a) == fingerprint(b)


def test_band_ids_spell_out_as_the_band_keys() -> None:
    fp = 0x0123_4567_89AB_CDEF
    assert band_keys(fp) == ["0:cdef", "1:89ab", "2:4567", "3:123"]
    assert band_keys(fp, 1) == ["0:123456789abcdef"]
    assert [band_key(i) for i in band_ids(fp)] == band_keys(fp)
    assert len(set(band_ids(fp, 64))) == 64  # the band number tells equal values apart


@pytest.mark.parametrize(
    "disguised",
    [
        "Solve the following pro\u200bblem step by st\u200cep and give the final answer: <x>",
        "\uff33\uff4f\uff4c\uff56\uff45 the following problem step by step and give the final answer: <x>",
        "Solve the f\u043ell\u043ewing pr\u043ebl\u0435m st\u0435p by st\u0435p and giv\u0435 th\u0435 final answ\u0435r: <x>",
        "Solve the fo\u0301llowing problem step by step and give the final answer: <x>",
    ],
)
def test_unicode_disguises_keep_the_template(disguised: str) -> None:
    # Each disguise changes what the bytes say, not what a model reads: same template.
    plain = "Solve the following problem step by step and give the final answer: <x>"
    assert normalise(disguised) == normalise(plain)
    assert fingerprint(disguised) == fingerprint(plain)
