"""Lexicon cost of a policy's extra patterns: RE2 (as run) against ``re`` (as before).

    python benchmarks/bench_lexicon.py [--number 20000] [--repeat 5]

On a 1 KB English prompt (folded and lower-cased, as the lexicon reads it), per pattern:
``re`` (``re.compile(fold(p)).search(text)``, the former engine) against RE2
(``compile_extra(p).search(text.encode())``, what ``Lexicon.matches`` does), and the whole
``Lexicon.matches`` with no extra pattern and with each one. Then the crafted 30 KB prompt
for ``(a+)+$`` on RE2 (on ``re`` it does not finish, so it is not run there).
Best of ``--repeat`` ``timeit`` runs, µs per call.
"""

from __future__ import annotations

import argparse
import re
import timeit
from collections.abc import Callable

from hydraguard.assess.lexicon import Lexicon, compile_extra
from hydraguard.inspect.fold import fold

PROMPT = (
    "You are helping a small bakery plan its week. The owner writes: we sell bread, "
    "pastries and coffee from seven until two, and on Saturdays we also take orders for "
    "birthday cakes. Last month flour prices rose by a tenth, butter by a fifth, and two "
    "of our regular wholesale customers asked for larger deliveries on Fridays. Please "
    "suggest a weekly baking schedule for two bakers who each work eight hours a day, "
    "keeping the ovens busy in the early morning and leaving the afternoon for cleaning, "
    "ordering and cake decoration. List which products should be baked each day, roughly "
    "how many of each, and what should be prepared the evening before. Keep in mind that "
    "croissant dough needs a day to rest and that sourdough needs a long cold proof. Also "
    "tell me whether raising the price of a loaf by twenty cents would cover the new costs, "
    "assuming we sell about three hundred loaves a week, and what we could say to customers "
    "who have bought the same loaf from us every morning for years and will notice the change. "
    "Thank you very much."
)[:1024]
PATTERNS = (
    r"narrate (?:each|every) inference",  # starts with a literal
    r"(?:walk|take)\s+me\s+through\s+your\s+(?:logic|thinking)",  # starts with an alternation
    r"(a+)+$",  # catastrophic on re for a run of "a" not at the end
)


def best_us(run: Callable[[], object], number: int, repeat: int) -> float:
    return min(timeit.repeat(run, number=number, repeat=repeat)) / number * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    number, repeat = args.number, args.repeat
    text = fold(PROMPT).lower()
    assert len(PROMPT) == 1024
    print(f"prompt: {len(PROMPT)} characters of English")
    baseline = Lexicon()
    print(
        f"Lexicon.matches, no extra pattern: {best_us(lambda: baseline.matches(PROMPT), number, repeat):.2f} µs"
    )
    for pattern in PATTERNS:
        on_re, on_re2, lexicon = (
            re.compile(fold(pattern)),
            compile_extra(pattern),
            Lexicon([pattern]),
        )
        re_us = best_us(lambda: on_re.search(text), number, repeat)  # noqa: B023
        re2_us = best_us(lambda: on_re2.search(text.encode()), number, repeat)  # noqa: B023
        whole_us = best_us(lambda: lexicon.matches(PROMPT), number, repeat)  # noqa: B023
        print(
            f"{pattern!r}: re {re_us:.2f} µs, RE2 {re2_us:.2f} µs (encode included); "
            f"Lexicon.matches with it {whole_us:.2f} µs"
        )
    crafted = "a" * 30000 + "!"
    lexicon = Lexicon([r"(a+)+$"])
    crafted_us = best_us(lambda: lexicon.matches(crafted), max(1, number // 100), repeat)
    print(f"'(a+)+$' on {len(crafted):,} characters ('a' * 30000 + '!'): {crafted_us:.0f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
