"""Progress the user sees on stderr: a ``tqdm`` bar on a terminal, one line with the final count and rate
otherwise. Library logs are off by default (``pipelines/logs.py``), so the bar does not interleave with them.

``bar(desc, total, unit)`` is for work done in this process. ``watch(desc, total, unit, beam_args)`` is for
work done in Beam workers (see ``transforms/common/progress.py``): it yields the folder to give the DoFns (None
on a non-local runner, whose UI shows Beam's counters instead) and, while the pipeline runs, moves the bar by
the workers' counts.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
import time
from contextlib import contextmanager

from cmtp.transforms.common.progress import total_done

from .beam_runner import is_local

POLL_SECONDS = 0.5


def plural(unit: str) -> str:
    return unit[:-1] + "ies" if unit.endswith("y") else unit + "s"


class Bar:
    """A count towards ``total``: drawn on a terminal, summarised in one line when closed otherwise."""

    def __init__(self, desc: str, total: int | None, unit: str):
        self.desc, self.total, self.unit, self.done = desc, total, unit, 0
        self.started = time.perf_counter()
        self._tqdm = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._tqdm = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, mininterval=POLL_SECONDS,
                              smoothing=0.1, dynamic_ncols=True)

    def update_to(self, done: int) -> None:
        done = min(done, self.total) if self.total else done
        if done > self.done:
            if self._tqdm is not None:
                self._tqdm.update(done - self.done)
            self.done = done

    def update(self, n: int = 1) -> None:
        self.update_to(self.done + n)

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
        elif self.done:
            seconds = time.perf_counter() - self.started
            units = self.unit if self.done == 1 else plural(self.unit)
            print(f"{self.desc}: {self.done:,} {units} in {seconds:.1f} s "
                  f"({self.done / max(seconds, 1e-9):.3g} {plural(self.unit)}/s)", file=sys.stderr, flush=True)


@contextmanager
def bar(desc: str, total: int | None, unit: str):
    progress = Bar(desc, total, unit)
    try:
        yield progress
    finally:
        progress.close()


@contextmanager
def watch(desc: str, total: int | None, unit: str, beam_args: list[str] | None = None):
    if not is_local(beam_args):  # workers on other machines: the runner's UI shows Beam's counters
        print(f"{desc}: running on the runner given by --runner; its job page shows the progress (Beam counters "
              f"of this step)", file=sys.stderr, flush=True)
        yield None
        return
    folder = tempfile.mkdtemp(prefix="cmtp-progress-")
    stop = threading.Event()

    def poll(progress: Bar):
        while not stop.wait(POLL_SECONDS):
            progress.update_to(total_done(folder))

    with bar(desc, total, unit) as progress:
        thread = threading.Thread(target=poll, args=(progress,), daemon=True)
        thread.start()
        try:
            yield folder
        finally:
            stop.set()
            thread.join()
            progress.update_to(total_done(folder))
            shutil.rmtree(folder, ignore_errors=True)
