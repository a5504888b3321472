"""Progress of work done inside Beam workers, reported through files that the driver adds up.

A DoFn's ``tqdm`` bar lives in a worker process whose terminal output the user never sees (local workers are
separate processes; on a cluster they are other machines), and Beam's metrics reach the driver only when the
pipeline has finished. On the local runner the driver and its workers share a disk, so each worker keeps its
count in a small file of its own in a folder the driver chose (rewritten atomically at most twice a second) and
the driver's bar (``pipelines/progress.py``) sums them. Without a folder (another runner) this does nothing;
Beam's counters (``cmtp <stage>/<counter>``) show the same counts in that runner's UI.
"""

from __future__ import annotations

import os
import time
import uuid

FLUSH_SECONDS = 0.5


class ProgressCounter:
    """Counts done in this process, mirrored into ``directory/<unique>.count``."""

    def __init__(self, directory: str | None):
        self.directory, self.done, self._flushed_at = directory, 0, 0.0
        self.path = os.path.join(directory, f"{uuid.uuid4().hex}.count") if directory else None

    def add(self, n: int = 1) -> None:
        self.done += n
        if self.path and time.monotonic() - self._flushed_at >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if not self.path or not os.path.isdir(self.directory):  # the driver removed it: the run is over
            return
        tmp = f"{self.path}.tmp"
        with open(tmp, "w", encoding="ascii") as fh:
            fh.write(str(self.done))
        os.replace(tmp, self.path)
        self._flushed_at = time.monotonic()


def total_done(directory: str) -> int:
    """The sum of every worker's count in ``directory``."""
    done = 0
    for name in os.listdir(directory):
        if name.endswith(".count"):
            try:
                with open(os.path.join(directory, name), encoding="ascii") as fh:
                    done += int(fh.read() or 0)
            except (OSError, ValueError):  # replaced while read: counted at the next poll
                continue
    return done
