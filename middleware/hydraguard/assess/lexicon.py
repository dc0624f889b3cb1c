"""Phrases that ask a model to spell out its reasoning (the lexicon of ``reasoning_elicitation``).

Distillation campaigns want the teacher's reasoning traces, not just its
answers, so their templates ask for them explicitly. The patterns are matched
against the *lower-cased* prompt: write extra patterns in lower case.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

DEFAULT_PATTERNS: tuple[str, ...] = (
    r"step[- ]by[- ]step",
    r"show (?:your|all|the|me your) (?:work|working|reasoning|steps|thought process)",
    r"chain[- ]of[- ]thoughts?",
    r"think (?:aloud|out loud|carefully before|through (?:this|it) (?:step|carefully))",
    r"explain (?:your|the) (?:internal |full |complete )?(?:reasoning|thought process|thinking)",
    r"reason(?:ing)? (?:trace|process|steps) (?:in full|verbatim|in detail)",
    r"reasoning trace",
    r"</?think(?:ing)?>",
    r"(?:full|complete|entire|detailed) (?:reasoning|derivation|thought process)",
    r"before (?:answering|you answer), (?:reason|think)",
    r"let'?s think",
    # Spanish, French, German, Portuguese, Italian, Chinese, Japanese, Russian.
    r"paso a paso|muestra tu razonamiento|explica tu razonamiento",
    r"étape par étape|montre ton raisonnement|explique ton raisonnement",
    r"schritt für schritt|zeige deinen (?:rechenweg|gedankengang)",
    r"passo a passo|mostre seu raciocínio|passo dopo passo",
    r"逐步|一步一步|一步步|思考过程|推理过程",
    r"段階的に|ステップバイステップ|思考過程",
    r"шаг за шагом|покажи (?:ход|своё) (?:решения|рассуждение)",
)


def compile_lexicon(extra: Iterable[str] = ()) -> re.Pattern[str]:
    """One alternation of the default and ``extra`` patterns, compiled once."""
    return re.compile("|".join(f"(?:{p})" for p in (*DEFAULT_PATTERNS, *extra)))
