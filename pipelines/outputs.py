"""Driver-side helpers around a stage's output directory: matching inputs, clearing and summarising outputs."""

from __future__ import annotations

from contextlib import contextmanager

import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from cmtp.schemas.errors import CmtpError
from cmtp.transforms.common.outcomes import OUTCOMES_FILE, read_json
from cmtp.transforms.common.parquet_shards import clear_shards

from .beam_runner import failure


def match_files(pattern: str) -> list[str]:
    """Files a path or glob matches, sorted; a clear error when none does."""
    try:
        results = FileSystems.match([pattern])
    except Exception as exc:  # Beam raises BeamIOError for unknown schemes, bad buckets, ...
        raise CmtpError(f"cannot list {pattern}: {exc}") from exc
    paths = sorted(m.path for r in results for m in r.metadata_list)
    if not paths:
        raise CmtpError(f"no files match {pattern}")
    return paths


def prepare_output(out: str, subdirs: list[str]) -> None:
    for sub in subdirs:
        directory = FileSystems.join(out, sub)
        FileSystems.mkdirs(directory) if not FileSystems.exists(directory) else clear_shards(directory)


def summarize_output(out: str, sub: str, schema_name: str) -> dict:
    """{path, files, rows, schema} of the Parquet shards in ``out/sub``."""
    directory = FileSystems.join(out, sub)
    files = sorted(m.path for r in FileSystems.match([FileSystems.join(directory, "part-*.parquet")])
                   for m in r.metadata_list)
    rows = 0
    for path in files:
        with FileSystems.open(path) as fh:
            rows += pq.ParquetFile(fh).metadata.num_rows
    return {"path": directory, "files": len(files), "rows": rows, "schema": schema_name}


def pop_outcomes(out: str) -> dict:
    """Read and delete the outcomes file the pipeline wrote."""
    path = FileSystems.join(out, OUTCOMES_FILE)
    outcomes = read_json(path)
    FileSystems.delete([path])
    return outcomes


@contextmanager
def removed_on_failure(out: str, subdirs: list[str]):
    """Run a stage's pipeline; if it fails (a bad ``--runner``, a worker error), remove what it wrote (its
    output folders, the outcomes file and any earlier manifest, whose shards were already cleared) and raise
    one ``CmtpError``, so a failed run never leaves output that the next stage would accept."""
    try:
        yield
    except BaseException as exc:
        targets = [FileSystems.join(out, s) for s in subdirs] + [FileSystems.join(out, n) for n in
                                                                  (OUTCOMES_FILE, "manifest.json")]
        existing = [t for t in targets if FileSystems.exists(t)]
        if existing:
            FileSystems.delete(existing)
        if isinstance(exc, CmtpError) or not isinstance(exc, Exception):
            raise
        raise CmtpError(f"{failure('the pipeline', exc)}; nothing was left in {out}") from exc
