"""The driver's progress line for work done in Beam workers (see ``transforms/common/progress.py``).

``watch(desc, total, unit, beam_args)`` yields the folder to give the DoFns (None on a non-local runner) and,
while the pipeline runs, draws one ``tqdm`` bar on stderr from the workers' counts: done / total, rate, ETA.
When stderr is not a terminal there is no bar; one line with the final count and rate is printed at the end
instead. The bar never interleaves with logs: library logs are off by default (``pipelines/logs.py``).
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


@contextmanager
def watch(desc: str, total: int | None, unit: str, beam_args: list[str] | None = None, enabled: bool = True):
    if not enabled or not is_local(beam_args):
        yield None
        return
    folder = tempfile.mkdtemp(prefix="cmtp-progress-")
    terminal = sys.stderr.isatty()
    stop = threading.Event()
    started = time.perf_counter()
    bar = None
    if terminal:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, mininterval=POLL_SECONDS, smoothing=0.1,
                   dynamic_ncols=True)

    def poll():
        while not stop.wait(POLL_SECONDS):
            done = total_done(folder)
            if bar is not None and done > bar.n:
                bar.update(min(done, total or done) - bar.n)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield folder
    finally:
        stop.set()
        thread.join()
        done = total_done(folder)
        seconds = time.perf_counter() - started
        if bar is not None:
            bar.update(max(0, min(done, total or done) - bar.n))
            bar.close()
        elif done:
            print(f"{desc}: {done:,} {unit}s in {seconds:.1f} s ({done / max(seconds, 1e-9):.3g} {unit}s/s)",
                  file=sys.stderr, flush=True)
        shutil.rmtree(folder, ignore_errors=True)
