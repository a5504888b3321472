"""The proxy audit's statistics: per-variant mean and standard deviation over seeds, differences with their pooled
spread, and the one rule that decides whether a difference is measurable.

The rule (issue #19, FineWeb's practice of reading ablations against the seed-to-seed spread): a difference of two
variants' means counts only when it is at least twice the pooled standard deviation of their seeds; anything
smaller is printed as "no measurable difference". With one seed there is no spread to compare with, so nothing is
measurable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SIGNIFICANCE_SDS = 2.0  # a difference must reach this many pooled standard deviations


@dataclass(frozen=True)
class Summary:
    """A variant's scores over its seeds (x 100, like every score cmtp prints)."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else float("nan")

    @property
    def sd(self) -> float:
        """Sample standard deviation (ddof 1); 0 for a single value (the floor, evaluated once)."""
        return float(np.std(self.values, ddof=1)) if self.n > 1 else 0.0


def pooled_sd(a: Summary, b: Summary) -> float:
    """The pooled sample standard deviation of two groups; a single-value group (the floor) adds no spread."""
    dof = (a.n - 1) + (b.n - 1)
    if dof <= 0:
        return float("nan")
    return math.sqrt(((a.n - 1) * a.sd**2 + (b.n - 1) * b.sd**2) / dof)


@dataclass(frozen=True)
class Difference:
    delta: float  # mean(a) - mean(b)
    spread: float  # the pooled standard deviation the delta is judged against
    measurable: bool

    def describe(self, digits: int = 2) -> str:
        if math.isnan(self.spread):  # one seed each: printed "± nan"
            return f"{self.delta:+.{digits}f} (one seed: no spread to judge it by)"
        text = f"{self.delta:+.{digits}f} ± {self.spread:.{digits}f}"
        return text if self.measurable else f"{text} (no measurable difference)"


def difference(a: Summary, b: Summary) -> Difference:
    """``a`` minus ``b``, measurable when |delta| >= 2 x the pooled standard deviation (and the spread is known)."""
    spread = pooled_sd(a, b)
    delta = a.mean - b.mean
    measurable = not math.isnan(spread) and abs(delta) >= SIGNIFICANCE_SDS * spread and delta != 0
    return Difference(delta, spread, measurable)


def verdict(best_name: str, best: Summary, no_filter: Summary, control: Summary | None) -> str:
    """The one-line answer: does the best filtered variant beat no filter (and its random same-size control)?"""
    vs_all = difference(best, no_filter)
    if not (vs_all.measurable and vs_all.delta > 0):
        return f"no cut measurably better than no filter at this budget (best: {best_name}, {vs_all.describe()})"
    line = f"{best_name} beats no filter by {vs_all.delta:+.2f} ± {vs_all.spread:.2f}"
    if control is not None:
        vs_control = difference(best, control)
        line += f"; its random same-size control by {vs_control.describe()}"
        if not (vs_control.measurable and vs_control.delta > 0):
            line += " (so fewer pairs, not the selection, may explain it)"
    return line
