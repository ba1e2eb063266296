"""Evaluation: methods x settings on identical episodes, with paired statistics and a report."""

from fewshot.evaluation.compare import Comparison, Scores, Setting, compare, unscored
from fewshot.evaluation.methods import (
    KINDS,
    BuildContext,
    MethodError,
    MethodSpec,
    build_method,
    parse_method,
)
from fewshot.evaluation.metrics import METRICS, query_metrics
from fewshot.evaluation.report import FILES, save_report

__all__ = [
    "FILES",
    "KINDS",
    "METRICS",
    "BuildContext",
    "Comparison",
    "MethodError",
    "MethodSpec",
    "Scores",
    "Setting",
    "build_method",
    "compare",
    "parse_method",
    "query_metrics",
    "save_report",
    "unscored",
]
