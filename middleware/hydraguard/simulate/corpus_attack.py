"""Scripted prompt material: developers' evaluation templates, the reasoning distillers'
chain-of-thought templates and problem generators, the probers' short prompts.
"""

from __future__ import annotations

import random
from collections.abc import Callable

# Developers' evaluation harnesses: one template each, a new item per request.
EVAL_TEMPLATES: dict[str, str] = {
    "sentiment": "Classify the sentiment of the following review as positive, negative or "
    "neutral. Reply with one word.\n\nReview: {item}",
    "extract": "Extract vendor, date and total from this invoice as JSON with the keys "
    '"vendor", "date", "total". Output JSON only.\n\n{item}',
    "mcq": "Answer the following multiple-choice question with the letter only.\n\n{item}\nAnswer:",
    "translate": "Translate the following sentence into German. Output only the "
    "translation.\n\n{item}",
    "ticket": "Summarize the following support ticket in one sentence and tag its "
    "category (billing, bug, account, other).\n\nTicket: {item}",
}

_PRODUCTS = ("headphones", "blender", "hotel room", "phone case", "novel", "laptop stand",
             "coffee grinder", "running shoes", "desk lamp", "backpack")  # fmt: skip
_VERDICTS = ("Absolutely love this {p}.", "The {p} broke after {n} days.", "Decent {p} for the "
             "price.", "Would not buy this {p} again.", "The {p} arrived late but works fine.",
             "Best {p} I've owned in {n} years.")  # fmt: skip
_VENDORS = ("Acme Supplies", "Northwind Traders", "Globex GmbH", "Initech LLC", "Umbrella Ltd")
_MCQ = (
    ("Which planet is known as the Red Planet?", ("Mars", "Venus", "Jupiter", "Mercury")),
    ("What is the chemical symbol for sodium?", ("Na", "So", "Sd", "S")),
    ("Which gas do plants absorb?", ("Carbon dioxide", "Oxygen", "Nitrogen", "Helium")),
    ("Who wrote 'Hamlet'?", ("Shakespeare", "Marlowe", "Chaucer", "Milton")),
    ("What is {a} x {b}?", ("{ab}", "{ab1}", "{ab2}", "{ab3}")),
)
_SENTENCES = ("The meeting has been moved to {n} o'clock.", "Please send me the report by "
              "Friday.", "Our office will be closed on the {n}th.", "The train is {n} minutes "
              "late.", "I would like to order {n} more units.")  # fmt: skip
_TICKETS = (
    "I was charged twice for order #{n}.",
    "The app crashes when I upload a file bigger than {n} MB.",
    "I can't log in after resetting my password.",
    "Please delete my account and all data.",
    "Export to CSV has been broken for {n} days.",
)


def eval_item(rng: random.Random, kind: str) -> str:
    n = rng.randint(2, 99)
    if kind == "sentiment":
        return rng.choice(_VERDICTS).format(p=rng.choice(_PRODUCTS), n=n)
    if kind == "extract":
        return (
            f"INVOICE #{rng.randint(1000, 99999)}\n{rng.choice(_VENDORS)}\n"
            f"Date: 2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}\n"
            f"Total due: ${rng.randint(10, 9999)}.{rng.randint(0, 99):02d}"
        )
    if kind == "mcq":
        question, options = rng.choice(_MCQ)
        a, b = rng.randint(3, 30), rng.randint(3, 30)
        values = {"a": a, "b": b, "ab": a * b, "ab1": a * b + 1, "ab2": a * b - a, "ab3": a + b}
        opts = [o.format(**values) for o in options]
        rng.shuffle(opts)
        lines = [question.format(**values)] + [
            f"{c}) {o}" for c, o in zip("ABCD", opts, strict=True)
        ]
        return "\n".join(lines)
    if kind == "translate":
        return rng.choice(_SENTENCES).format(n=n)
    return rng.choice(_TICKETS).format(n=rng.randint(2, 99999))


# Reasoning distillers: a handful of chain-of-thought wrappers around generated problems.
REASONING_TEMPLATES = (
    "Solve the following problem. Think step by step and show all your reasoning before "
    "giving the final answer.\n\nProblem: {problem}",
    "{problem}\n\nExplain your internal reasoning in detail before answering. Show every "
    "intermediate step and check your work.",
    "You are an expert tutor. Work through this carefully, thinking step by step, and show "
    "all your reasoning:\n{problem}",
    "Question: {problem}\nLet's think step by step. Write out your full chain of thought, "
    "then give the answer as 'Final answer: ...'.",
    "Before answering, reason through the task below step by step, including the "
    "alternatives you considered and why you rejected them.\n\nTask: {problem}",
)
REASONING_SYSTEM = "You are a careful assistant. Always reason step by step before answering."

_NAMES = ("Alice", "Bob", "Chen", "Dana", "Emeka", "Fatima", "Goran", "Hana", "Ivan", "Jia",
          "Kofi", "Lena", "Mateo", "Nour", "Olga", "Priya")  # fmt: skip
_CITIES = ("Lyon", "Denver", "Osaka", "Porto", "Nairobi", "Leeds", "Tucson", "Brno")
_ALGOS = (
    "returns the length of the longest increasing subsequence of a list of {n} integers",
    "finds the shortest path in a weighted grid of size {n}x{m}",
    "counts the number of ways to make change for {n} cents with coins of 1, 5, 10 and 25",
    "decides whether a string of length up to {n} can be split into palindromes of length "
    "at least {k}",
    "schedules {n} jobs with deadlines and profits to maximize total profit",
    "computes the number of islands in a {n}x{m} binary matrix",
)
_LANGS = ("Python", "C++", "Rust", "Java", "Go")


def _math(rng: random.Random) -> str:
    n, m, k = rng.randint(3, 90), rng.randint(2, 40), rng.randint(2, 9)
    return rng.choice(
        (
            f"A train leaves {rng.choice(_CITIES)} at {k}:00 travelling at {n + 40} km/h. "
            f"Another leaves {m * 10} km behind it one hour later at {n + 70} km/h. "
            "When does the second train catch up?",
            f"Find all positive integers x < {n * 10} such that x^2 leaves remainder {k - 1} "
            f"when divided by {m + 3}.",
            f"{rng.choice(_NAMES)} has {n} marbles and gives a {k}th of them to each of "
            f"{k - 1} friends, rounding down. How many are left?",
            f"A box contains {n} red and {m} blue balls. {k} are drawn without replacement. "
            "What is the probability that exactly two are blue?",
            f"Prove or disprove: for every integer n > {k}, n^{k} - n is divisible by {k}.",
        )
    )


def _code(rng: random.Random) -> str:
    algo = rng.choice(_ALGOS).format(
        n=rng.randint(5, 10_000), m=rng.randint(5, 500), k=rng.randint(2, 6)
    )
    lang = rng.choice(_LANGS)
    return f"Write an efficient {lang} function that {algo}, and analyse its complexity."


def _logic(rng: random.Random) -> str:
    a, b, c = rng.sample(_NAMES, 3)
    return (
        f"{a} says {b} is lying. {b} says {c} is lying. {c} says both {a} and {b} are lying. "
        f"Exactly {rng.randint(1, 2)} of them tell the truth. Who is lying?"
    )


PROBLEM_GENERATORS: tuple[Callable[[random.Random], str], ...] = (_math, _math, _code, _logic)

# Logprob probers: short prompts whose next-token distribution is the signal.
PROBE_TEMPLATES = (
    "The capital of {country} is",
    "Q: Is {thing} {adjective}? Answer yes or no.\nA:",
    "Complete the sentence: The {thing} was",
    "Sentiment (positive or negative) of: '{thing} is {adjective}'\nAnswer:",
    "{a} + {b} =",
)
PROBE_FILLERS: dict[str, tuple[str, ...]] = {
    "country": ("France", "Peru", "Kenya", "Norway", "Vietnam", "Chile", "Egypt", "Canada"),
    "thing": ("the movie", "a tomato", "the weather", "coffee", "the report", "this phone"),
    "adjective": ("good", "dangerous", "red", "expensive", "boring", "reliable"),
}
