"""Progress of work done inside Beam workers, reported through files that the driver adds up.

A DoFn's ``tqdm`` bar lives in a worker process whose terminal output the user never sees (local workers are
separate processes; on a cluster they are other machines), and Beam's metrics reach the driver only when the
pipeline has finished. On the local runner the driver and its workers share a disk, so each worker keeps its
count in a small file of its own in a folder the driver chose (rewritten atomically at most twice a second) and
the driver's bar (``pipelines/progress.py``) sums them. Without a folder (another runner) this does nothing;
Beam's counters (``cmtp <stage>/<counter>``) show the same counts in that runner's UI.

:func:`bar` is what the user sees, for work in this process and (through ``pipelines/progress.py``) in the
workers: a ``tqdm`` bar on stderr when it is a terminal, otherwise one line with the final count and rate.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from contextlib import contextmanager

FLUSH_SECONDS = 0.5
REFRESH_SECONDS = 0.5


class ProgressCounter:
    """Counts done in this process for one ``phase`` of a stage, mirrored into ``directory/<phase>~<unique>.count``."""

    def __init__(self, directory: str | None, phase: str = ""):
        self.directory, self.done, self._flushed_at = directory, 0, 0.0
        self.began = time.time()  # made where the phase's work starts here (a DoFn's setup): the bar's clock
        self.path = os.path.join(directory, f"{phase}~{uuid.uuid4().hex}.count") if directory else None

    def add(self, n: int = 1) -> None:
        self.done += n
        if self.path and time.monotonic() - self._flushed_at >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if not self.path or not os.path.isdir(self.directory):  # the driver removed it: the run is over
            return
        tmp = f"{self.path}.tmp"
        with open(tmp, "w", encoding="ascii") as fh:
            fh.write(f"{self.done} {self.began}")
        os.replace(tmp, self.path)
        self._flushed_at = time.monotonic()


def phase_progress(directory: str) -> dict[str, tuple[int, float]]:
    """Per phase, the sum of every worker's count in ``directory`` and the earliest time one of them began it."""
    done: dict[str, tuple[int, float]] = {}
    for name in os.listdir(directory):
        if name.endswith(".count"):
            phase = name.rpartition("~")[0]
            try:
                with open(os.path.join(directory, name), encoding="ascii") as fh:
                    count, _, began = fh.read().partition(" ")
                count, began = int(count or 0), float(began or time.time())
            except (OSError, ValueError):  # replaced while read: counted at the next poll
                continue
            total, first = done.get(phase, (0, began))
            done[phase] = (total + count, min(first, began))
    return done


def phase_counts(directory: str) -> dict[str, int]:
    """Per phase, the sum of every worker's count in ``directory``."""
    return {phase: count for phase, (count, _) in phase_progress(directory).items()}


def total_done(directory: str) -> int:
    """The sum of every worker's count in ``directory``, every phase."""
    return sum(phase_counts(directory).values())


def plural(unit: str) -> str:
    return unit[:-1] + "ies" if unit.endswith("y") else unit + "s"


class Bar:
    """A count towards ``total``: drawn on a terminal, summarised in one line when closed otherwise."""

    def __init__(self, desc: str, total: int | None, unit: str, began: float | None = None):
        """``began``: when the work began (``time.time()``), if before the bar appears (a worker's phase shows at
        its first count, after its first batch): the rate and ETA are over the whole work, not one batch over no
        time."""
        self.desc, self.total, self.unit, self.done = desc, total, unit, 0
        self.started = time.perf_counter() - (max(0.0, time.time() - began) if began else 0.0)
        self._tqdm = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            shown = unit if unit == "B" else f" {unit}"  # "8 partition steps", not "8partition step"
            self._tqdm = tqdm(total=total, desc=desc, unit=shown, file=sys.stderr, mininterval=REFRESH_SECONDS,
                              smoothing=0.1, dynamic_ncols=True, unit_scale=unit == "B", unit_divisor=1024)
            if began:
                self._tqdm.start_t = self._tqdm.last_print_t = min(began, self._tqdm.start_t)

    def update_to(self, done: int) -> None:
        done = min(done, self.total) if self.total else done
        if done > self.done:
            if self._tqdm is not None:
                self._tqdm.update(done - self.done)
            self.done = done

    def update(self, n: int = 1) -> None:
        self.update_to(self.done + n)

    def extend(self, more: int) -> None:
        """Work found on the way (a second pass over candidates): the total grows, the bar does not stand at 100%."""
        if self.total is not None:
            self.total += more
            if self._tqdm is not None:
                self._tqdm.total = self.total
                self._tqdm.refresh()

    def refresh(self) -> None:
        """Redraw with the time now: elapsed time and rate move between two counts of a slow step."""
        if self._tqdm is not None:
            self._tqdm.refresh()

    def close(self, summary: bool = True) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
        elif self.done and summary:
            seconds = time.perf_counter() - self.started
            # a rate over a phase shorter than a tenth of a second is noise ("1.55e+09 rows/s"): left out
            if self.unit == "B":  # KiB below a MiB ("0.0 MiB" for a small file)
                scale, rate_unit = (2**20, "MiB") if self.done >= 2**20 else (2**10, "KiB")
                amount, rate = f"{self.done / scale:,.1f} {rate_unit}", self.done / scale / max(seconds, 1e-9)
            else:
                amount = f"{self.done:,} {self.unit if self.done == 1 else plural(self.unit)}"
                rate_unit, rate = plural(self.unit), self.done / max(seconds, 1e-9)
            speed = f" ({rate:.3g} {rate_unit}/s)" if seconds >= 0.1 else ""
            print(f"{self.desc}: {amount} in {seconds:.1f} s{speed}", file=sys.stderr, flush=True)

@contextmanager
def bar(desc: str, total: int | None, unit: str):
    progress = Bar(desc, total, unit)
    try:
        yield progress
    except BaseException:  # a failed step prints its error, not a line that reads as if it had finished
        progress.close(summary=False)
        raise
    progress.close()


@contextmanager
def step(desc: str):
    """One step that has nothing to count (building and tuning a search index): on a terminal its bar is redrawn
    twice a second so that the elapsed time moves while it works; otherwise one line with its time when it ends."""
    with bar(desc, 1, "step") as progress:
        stop = threading.Event()

        def redraw():
            while not stop.wait(REFRESH_SECONDS):
                progress.refresh()

        thread = threading.Thread(target=redraw, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
        progress.update()
