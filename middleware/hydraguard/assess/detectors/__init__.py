"""Anomaly detectors: one module each, all following ``base.Detector``."""

from __future__ import annotations

from hydraguard.assess.config import AnomalyConfig
from hydraguard.assess.detectors.appetite import OutputAppetiteDetector
from hydraguard.assess.detectors.base import Detector, Scope, ramp
from hydraguard.assess.detectors.diversity import DiversityDetector
from hydraguard.assess.detectors.extraction import ExtractionParamsDetector
from hydraguard.assess.detectors.reasoning import ReasoningElicitationDetector
from hydraguard.assess.detectors.repetition import TemplateRepetitionDetector
from hydraguard.assess.detectors.spread import ActivitySpreadDetector
from hydraguard.assess.detectors.timing import TimingRegularityDetector
from hydraguard.assess.detectors.volume import VolumeDetector

__all__ = [
    "ActivitySpreadDetector",
    "Detector",
    "DiversityDetector",
    "ExtractionParamsDetector",
    "OutputAppetiteDetector",
    "ReasoningElicitationDetector",
    "Scope",
    "TemplateRepetitionDetector",
    "TimingRegularityDetector",
    "VolumeDetector",
    "build_detectors",
    "ramp",
]


Weighted = tuple[tuple[Detector, float], ...]


def build_detectors(config: AnomalyConfig) -> dict[Scope, Weighted]:
    """The enabled detectors with their weights, per scope, in the config's order.

    Both scopes share one instance of each detector (so per-event work such as
    the lexicon match is memoised once), except volume, whose expected rate
    depends on the scope.
    """
    d = config.detectors
    shared: list[tuple[Detector, float, bool]] = [
        (
            TemplateRepetitionDetector(d.template_repetition),
            d.template_repetition.weight,
            d.template_repetition.enabled,
        ),
        (
            ReasoningElicitationDetector(
                d.reasoning_elicitation, lexicon_extra=config.lexicon_extra
            ),
            d.reasoning_elicitation.weight,
            d.reasoning_elicitation.enabled,
        ),
        (
            ExtractionParamsDetector(d.extraction_params),
            d.extraction_params.weight,
            d.extraction_params.enabled,
        ),
        (
            OutputAppetiteDetector(d.output_appetite),
            d.output_appetite.weight,
            d.output_appetite.enabled,
        ),
        (VolumeDetector(d.volume, "account"), d.volume.weight, d.volume.enabled),
        (
            TimingRegularityDetector(d.timing_regularity),
            d.timing_regularity.weight,
            d.timing_regularity.enabled,
        ),
        (
            ActivitySpreadDetector(d.activity_spread),
            d.activity_spread.weight,
            d.activity_spread.enabled,
        ),
        (DiversityDetector(d.diversity), d.diversity.weight, d.diversity.enabled),
    ]
    account = tuple((det, w) for det, w, enabled in shared if enabled and w > 0)
    cluster = tuple(
        (VolumeDetector(d.volume, "cluster") if isinstance(det, VolumeDetector) else det, w)
        for det, w in account
    )
    return {"account": account, "cluster": cluster}
