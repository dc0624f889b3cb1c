"""Learning cost: process CPU µs per lesson (template fingerprint, template linking, detectors).

    python benchmarks/bench_learning.py [--hours 4] [--reps 5] [--lessons FILE] [--profile 25]

A lesson is what ``Guard.complete`` hands to ``Learning`` after a response. The
lessons come from a replay of the default simulated scenario (first ``--hours``
hours, fixed seed) through the shipped default policy, recorded as the replay
learns them, so their mix (prompts repeated by template attacks, refused
requests teaching nothing, clusters) is what replay and the live path see.
``--lessons FILE`` keeps them in a pickle so runs of different code compare
the same lessons (``PYTHONPATH=/path/to/other/middleware python ...``).

Then, ``--reps`` times, interleaved, on fresh state each time:

- ``learn``: ``Learning._learn`` (the deferred path's per-lesson work) over every lesson;
- ``fingerprint``: ``inspect.template.fingerprint`` of every lesson's prompt alone;
- ``observe``: ``RiskEngine.observe`` alone, events built beforehand.

Median and best µs per lesson (``time.process_time``: other processes on the
machine do not count). ``--profile N`` prints the N functions with the most
own time over one ``learn`` pass (cProfile). Results also go to
``benchmarks/out/learning.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pickle
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydraguard.assess.events import RequestEvent
from hydraguard.assess.learning import Learning
from hydraguard.assess.risk import RiskEngine
from hydraguard.inspect import template as template_module
from hydraguard.policy.compiled import CompiledPolicy
from hydraguard.policy.loader import load_policy
from hydraguard.replay.engine import Engine
from hydraguard.replay.run import replay_file
from hydraguard.simulate.generate import write
from hydraguard.simulate.scenario import Scenario

HERE = Path(__file__).resolve().parent
DEFAULT_POLICY = HERE.parent / "policies" / "default.yaml"
Lesson = tuple[Any, ...]  # the arguments of Learning._learn


def record_lessons(policy: CompiledPolicy, hours: float, seed: int) -> list[Lesson]:
    """Replay simulated traffic and keep every lesson the replay learns from."""
    lessons: list[Lesson] = []
    with tempfile.TemporaryDirectory() as tmp:
        traffic = Path(tmp) / "traffic.jsonl"
        stats = write(Scenario(seed=seed, hours=hours), traffic)
        print(f"traffic: {stats.summary()}", file=sys.stderr)
        engine = Engine(policy)
        learning = engine.guard.learning
        learn = learning._learn

        def recording(*lesson: Any) -> None:
            lessons.append(lesson)
            learn(*lesson)

        learning._learn = recording  # type: ignore[method-assign]
        asyncio.run(replay_file(traffic, policy, decisions=io.BytesIO(), engine=engine))
    return lessons


def fresh_learning(policy: CompiledPolicy) -> Learning:
    """A Learning with empty linking and risk state, wired as the middleware wires it."""
    learning = Engine(policy).guard.learning
    # Fingerprints memoised by an earlier pass would make every pass after it cheaper.
    clear_cache = getattr(template_module, "clear_cache", None)  # absent before the memo
    if clear_cache is not None:
        clear_cache()
    return learning


def events(policy: CompiledPolicy, lessons: list[Lesson]) -> list[RequestEvent]:
    """What Learning hands to RiskEngine.observe, built ahead of the timing."""
    fingerprint = template_module.fingerprint
    return [
        RequestEvent(
            ts=ts,
            account=account,
            cluster=cluster,
            prompt=facts.prompt,
            template=fingerprint(facts.prompt),
            max_tokens=facts.max_tokens,
            max_tokens_ceiling=policy.tiers[tier].max_output_tokens,
            n=facts.n,
            logprobs=facts.logprobs,
            top_logprobs=facts.top_logprobs,
            logit_bias=facts.logit_bias,
            temperature=facts.temperature,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            status=status,
            tier=tier,
        )
        for account, tier, cluster, ts, facts, input_tokens, output_tokens, status in lessons
    ]


def cpu_us(run: Callable[[Any], object], items: list[Any]) -> float:
    """Process CPU µs per item of ``run(item)`` over ``items``."""
    started = time.process_time()
    for item in items:
        run(item)
    return (time.process_time() - started) / len(items) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=4.0, help="hours of the default scenario")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--policy", type=Path, default=DEFAULT_POLICY)
    parser.add_argument("--lessons", type=Path, help="pickle of the lessons: read, else written")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="print the top N functions"
    )
    parser.add_argument("--out", type=Path, default=HERE / "out" / "learning.json")
    args = parser.parse_args(argv)
    policy = load_policy(args.policy)
    if args.lessons is not None and args.lessons.exists():
        lessons = pickle.loads(args.lessons.read_bytes())
    else:
        lessons = record_lessons(policy, args.hours, args.seed)
        if args.lessons is not None:
            args.lessons.write_bytes(pickle.dumps(lessons))
    n = len(lessons)
    prompts = [lesson[4].prompt for lesson in lessons]
    print(f"lessons: {n:,} ({len(set(prompts)):,} distinct prompts)", file=sys.stderr)

    def learn_pass() -> None:
        learn = fresh_learning(policy)._learn
        timings["learn"].append(cpu_us(lambda lesson: learn(*lesson), lessons))

    def fingerprint_pass() -> None:
        fresh_learning(policy)  # clears any fingerprint memo
        timings["fingerprint"].append(cpu_us(template_module.fingerprint, prompts))

    def observe_pass() -> None:
        prepared = events(policy, lessons)
        timings["observe"].append(cpu_us(RiskEngine(policy.anomaly).observe, prepared))

    timings: dict[str, list[float]] = {"learn": [], "fingerprint": [], "observe": []}
    for _ in range(args.reps):
        learn_pass()
        fingerprint_pass()
        observe_pass()
    if args.profile:
        learn = fresh_learning(policy)._learn
        profiler = cProfile.Profile()
        profiler.enable()
        for lesson in lessons:
            learn(*lesson)
        profiler.disable()
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(args.profile)
    per_lesson = {
        name: {"median": round(statistics.median(v), 2), "best": round(min(v), 2)}
        for name, v in timings.items()
    }
    for name, value in per_lesson.items():
        print(f"{name:>12}: median {value['median']:>7} µs/lesson, best {value['best']:>7}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"lessons": n, "policy": str(args.policy), "microseconds_per_lesson": per_lesson}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
