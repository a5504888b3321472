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


@dataclass(frozen=True)
class Arm:
    """One variant as the verdict reads it: its name, its scores over seeds, the distinct pairs it trained on."""

    name: str
    summary: Summary
    pairs: int


def _vs(a: Arm, b: Arm) -> str:
    return f"{a.summary.mean:.2f} ± {a.summary.sd:.2f} against {b.summary.mean:.2f} ± {b.summary.sd:.2f}"


def verdict(cuts: list[tuple[Arm, Arm | None]], baseline: Arm, budget: int) -> str:
    """The answer a table of cuts gives, read whole: whether the best cut beats no filter (``baseline``) or any cut
    is measurably worse (a loss is said as a loss); whether the best cut beats its random control of the same size
    (the selection itself, apart from having fewer pairs); and, when a cut has fewer distinct pairs than the
    ``budget`` of samples every run sees, that the runs repeat their pairs unequally, so size and not selection may
    decide the first comparison, and the control comparison is the one that carries over to a larger corpus."""
    if not cuts:
        return "no cut to judge"
    best, control = max(cuts, key=lambda c: c[0].summary.mean)
    vs_all = difference(best.summary, baseline.summary)
    if vs_all.measurable and vs_all.delta > 0:
        parts = [f"{best.name} beats {baseline.name} by {vs_all.delta:+.2f} ± {vs_all.spread:.2f}"]
    else:
        parts = [f"no cut measurably better than {baseline.name} at this budget (best: {best.name}, "
                 f"{vs_all.describe()})"]
    worse = [(arm, d) for arm, _ in cuts if (d := difference(arm.summary, baseline.summary)).measurable and d.delta < 0]
    if worse:
        names = ", ".join(f"{arm.name} {d.delta:+.2f} ± {d.spread:.2f}" for arm, d in worse)
        parts.append(f"measurably worse than {baseline.name}: {names}")
    for arm, ctl in cuts:
        if ctl is None:
            continue
        d = difference(arm.summary, ctl.summary)
        if d.measurable:
            parts.append(f"{arm.name} is measurably {'better' if d.delta > 0 else 'worse'} than its random control "
                         f"of the same size ({_vs(arm, ctl)}): the selection {'helps' if d.delta > 0 else 'hurts'}")
        elif arm is best:
            parts.append(f"{arm.name} against its random control of the same size: {d.describe()} (so fewer pairs, "
                         "not the selection, may explain a difference from " + baseline.name + ")")
    repeated = [arm for arm in [baseline, *(c for c, _ in cuts)] if 0 < arm.pairs < budget]
    if repeated and any(arm.pairs != repeated[0].pairs for arm in repeated + [baseline]):
        times = ", ".join(f"{arm.name}'s {arm.pairs:,} pairs {budget / arm.pairs:.1f} times" for arm in repeated)
        parts.append(f"the budget of {budget:,} samples repeats {times}: size, not selection, may decide against "
                     f"{baseline.name}; on a corpus larger than the budget the comparison with the same-size random "
                     "control is the one that carries over")
    return "; ".join(parts)


def ablation_verdict(arms: list[Arm], baseline: Arm) -> str:
    """Each variant against the build's own choice (``baseline``): the measurable gains and losses, or that none is
    measurable at this budget."""
    gains, losses = [], []
    for arm in arms:
        if arm is baseline:
            continue
        d = difference(arm.summary, baseline.summary)
        if d.measurable:
            (gains if d.delta > 0 else losses).append(f"{arm.name} {d.delta:+.2f} ± {d.spread:.2f}")
    if not gains and not losses:
        best = max(arms, key=lambda a: a.summary.mean)
        return (f"no variant measurably different from {baseline.name} at this budget (best: {best.name}, "
                f"{difference(best.summary, baseline.summary).describe()})")
    parts = []
    if gains:
        parts.append(f"measurably better than {baseline.name}: {', '.join(gains)}")
    if losses:
        parts.append(f"measurably worse than {baseline.name}: {', '.join(losses)}")
    return "; ".join(parts)
