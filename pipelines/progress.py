"""The driver's bar for work done in Beam workers: ``watch(desc, total, unit, beam_args)`` yields the folder to
give the DoFns (None on a non-local runner, whose UI shows Beam's counters instead) and, while the pipeline
runs, moves a :func:`~cmtp.transforms.common.progress.bar` by the workers' counts. Library logs are off by
default (``pipelines/logs.py``), so the bar does not interleave with them.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
from contextlib import contextmanager

from cmtp.transforms.common.progress import bar, total_done

from .beam_runner import is_local

POLL_SECONDS = 0.5


@contextmanager
def watch(desc: str, total: int | None, unit: str, beam_args: list[str] | None = None):
    if not is_local(beam_args):  # workers on other machines: the runner's UI shows Beam's counters
        print(f"{desc}: running on the runner given by --runner; its job page shows the progress (Beam counters "
              f"of this step)", file=sys.stderr, flush=True)
        yield None
        return
    folder = tempfile.mkdtemp(prefix="cmtp-progress-")
    stop = threading.Event()

    def poll(progress):
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
