"""The driver's bars for work done in Beam workers: ``watch(desc, total, unit, beam_args, phases)`` yields the
folder to give the DoFns (None on a non-local runner, whose UI shows Beam's counters instead) and, while the
pipeline runs, draws one bar per phase of the stage (sign, group, components, write ...) from the workers' counts,
polled twice a second. Library logs are off by default (``pipelines/logs.py``), so the bars do not interleave with
them.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass

from cmtp.transforms.common.progress import Bar, phase_progress

from .beam_runner import is_local

POLL_SECONDS = 0.5


@dataclass(frozen=True)
class Phase:
    """One step of a stage as the user sees it: its name, how many units it has (None: unknown) and the unit."""

    name: str
    total: int | None
    unit: str


class PhaseBars:
    """One bar per phase, in the phases' order: a phase's bar appears when its first worker starts counting (so its
    rate and ETA start with the work itself, not with a model loading before it) and is closed at its own count
    when a later phase starts (a bar stands at 100% only when its phase has done all its units). Off a terminal
    each closed bar is one line: the phase, its count and rate."""

    def __init__(self, desc: str, phases: list[Phase]):
        self.desc, self.phases, self.bars = desc, phases, {}
        self.closed: set[str] = set()

    def update(self, progress: dict[str, tuple[int, float]]) -> None:
        """``progress``: per phase, (count, when its first worker began it), as ``phase_progress`` reads them."""
        counts = {phase: count for phase, (count, _) in progress.items()}
        started = [i for i, phase in enumerate(self.phases) if phase.name in counts]  # a counter file exists
        if not started:
            return
        current = max(started)
        for i, phase in enumerate(self.phases[: current + 1]):
            if phase.name in self.closed or phase.name not in counts:
                continue
            if phase.name not in self.bars:
                name = f"{self.desc}: {phase.name}" if phase.name else self.desc
                self.bars[phase.name] = Bar(name, phase.total, phase.unit, began=progress[phase.name][1])
            self.bars[phase.name].update_to(counts[phase.name])
            if i < current:
                self.bars[phase.name].close()
                self.closed.add(phase.name)
            else:
                self.bars[phase.name].refresh()

    def close(self, progress: dict[str, tuple[int, float]]) -> None:
        self.update(progress)
        for name, progress in self.bars.items():
            if name not in self.closed:
                progress.close()


@contextmanager
def watch(desc: str, total: int | None, unit: str, beam_args: list[str] | None = None,
          phases: list[Phase] | None = None):
    """``phases``: the steps the workers count (``ProgressCounter(folder, phase)``); default one unnamed phase of
    ``total`` ``unit``s."""
    if not is_local(beam_args):  # workers on other machines: the runner's UI shows Beam's counters
        print(f"{desc}: running on the runner given by --runner; its job page shows the progress (Beam counters "
              f"of this step)", file=sys.stderr, flush=True)
        yield None
        return
    folder = tempfile.mkdtemp(prefix="cmtp-progress-")
    stop = threading.Event()
    bars = PhaseBars(desc, phases or [Phase("", total, unit)])

    def poll():
        while not stop.wait(POLL_SECONDS):
            bars.update(phase_progress(folder))

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield folder
    except BaseException:  # a failed run prints its error, not lines that read as finished phases
        stop.set()
        thread.join()
        shutil.rmtree(folder, ignore_errors=True)
        for progress in bars.bars.values():
            progress.close(summary=False)
        raise
    stop.set()
    thread.join()
    bars.close(phase_progress(folder))
    shutil.rmtree(folder, ignore_errors=True)
