"""Driver-side helpers around a stage's output directory: matching inputs, clearing and summarising outputs."""

from __future__ import annotations

import functools
import os
import stat

import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from cmtp.schemas.errors import CmtpError
from cmtp.transforms.common.outcomes import OUTCOMES_FILE, read_json
from cmtp.transforms.common.parquet_shards import clear_shards
from cmtp.transforms.common.paths import beam_pattern, is_remote


def match_files(pattern: str) -> list[str]:
    """Files a path or glob matches, sorted; a clear error when none does."""
    try:
        results = FileSystems.match([beam_pattern(pattern)])
    except Exception as exc:  # Beam raises BeamIOError for unknown schemes, bad buckets, ...
        raise CmtpError(f"cannot list {pattern}: {exc}") from exc
    paths = sorted(m.path for r in results for m in r.metadata_list)
    if not paths:
        raise CmtpError(f"no files match {pattern}")
    if folders := [path for path in paths if not is_remote(path) and os.path.isdir(path)]:  # the readers failed
        raise CmtpError(f"{pattern} matches the folder {folders[0]}: give the files in it (e.g. {folders[0]}/*)")
    for path in paths:  # a FIFO is read until a writer closes it: extract hung on one
        if not is_remote(path) and os.path.exists(path) and not stat.S_ISREG(os.stat(path).st_mode):
            raise CmtpError(f"{pattern} matches {path}, which is not a regular file (a pipe, socket or device): "
                            "narrow the glob")
    return paths


def file_size(path: str) -> int:
    """The size of a file, local or on a store (0 when the store does not say)."""
    try:
        return sum(m.size_in_bytes or 0 for r in FileSystems.match([path]) for m in r.metadata_list)
    except Exception:  # a store that cannot be listed: the bar runs without a total's share
        return 0


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


INSTALL_EXTRAS = "pip install 'cmtp[gcp]' for gs://, 'cmtp[s3]' for s3://"


def _no_file_system(url: str) -> str:
    return f"no file system for {url.split('://', 1)[0]}:// is installed ({INSTALL_EXTRAS})"


def check_writable(path: str, what: str = "output") -> None:
    """Refuse, before any work, an output path that cannot be written: a folder where a file is meant, a parent
    that is a file or cannot be written (a read-only file system, no permission). Remote URLs are left to their
    store. The parent may not exist yet: its nearest existing ancestor must be writable."""
    import os
    from pathlib import Path

    if is_remote(path):  # written through fsspec: its file system must be installed
        import fsspec

        try:
            fsspec.get_filesystem_class(path.split("://", 1)[0])
        except (ImportError, ValueError):
            raise CmtpError(f"{what} {path}: {_no_file_system(path)}") from None
        return
    target = Path(path.removeprefix("file://"))
    if target.is_dir():
        raise CmtpError(f"{what} {path} is a folder; give a file path")
    ancestor = _existing_ancestor(target.parent)
    if not ancestor.is_dir():
        raise CmtpError(f"{what} {path}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK):
        raise CmtpError(f"{what} {path}: {ancestor} is not writable (read-only file system or no permission)")


def _existing_ancestor(path):
    """``path`` or its nearest ancestor that exists: where a not-yet-created output would be made."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


@functools.cache  # once per process: a build passes the same flags to every stage
def _warn_unknown_flags(beam_args: tuple[str, ...]) -> None:
    """A flag no Beam option declares (a typo such as --temp_locaton) is one warning line: Beam drops it silently."""
    from .beam_runner import unknown_flags
    from .console import err

    for flag in unknown_flags(list(beam_args)):
        err.print(f"warning: no Beam option is called {flag}; Beam ignores it", markup=False, highlight=False)


def check_stage_output(out: str, inputs: list[str], beam_args: list[str] | None = None) -> None:
    """A stage's output folder before any work: not a file, not one of its inputs or inside one, and writable; on a
    store, one whose file system is installed and answers, with the Beam flags' credentials and settings
    (``--s3_*``, ``--project``) that the pipeline will use (Beam gives them to its file systems only once a pipeline
    exists)."""
    import os
    from pathlib import Path

    from .beam_runner import beam_options, root_cause

    _warn_unknown_flags(tuple(beam_args or ()))
    if is_remote(out):
        FileSystems.set_options(beam_options(beam_args))
        try:
            FileSystems.exists(out)
        except ValueError:
            raise CmtpError(f"--out {out}: {_no_file_system(out)}") from None
        except Exception as exc:  # BeamIOError wrapping the store's own error
            raise CmtpError(f"--out {out}: the store cannot be reached ({root_cause(str(exc)) or exc}; "
                            f"{INSTALL_EXTRAS})") from None
        return
    target = Path(out.removeprefix("file://"))
    if target.is_symlink() and not target.exists():  # found only when the finished output was moved into place
        raise CmtpError(f"--out {out} is a symbolic link to {os.readlink(target)}, which does not exist: create it "
                        "or give another --out")
    if target.exists() and not target.is_dir():
        raise CmtpError(f"--out {out} is a file; a stage writes a folder")
    for given in inputs:
        source = Path(given.removeprefix("file://"))
        if "://" not in given and source.exists() and target.resolve() == source.resolve():
            raise CmtpError(f"--out {out} is the stage's input; write to another folder")
        if "://" not in given and source.is_dir() and target.resolve().is_relative_to(source.resolve()):
            raise CmtpError(f"--out {out} is inside the stage's input {given}: its output would be read as input "
                            "by the next stage that reads that folder; write to another folder")
    ancestor = _existing_ancestor(target)
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK):
        raise CmtpError(f"--out {out}: {ancestor} is not a writable folder (read-only file system or no permission)")


def refuse_inputs_inside(patterns: list[str], folders: list[str], what: str, files: tuple[str, ...] = ()) -> None:
    """Input globs that cover ``folders`` (a stage's output and the tmp folder it is written in; a build's work
    folder) or ``files`` (a lock, the build file) are one error naming the glob: a source glob that covers the
    output read the run's own lock files, markers and earlier outputs as input, so a re-run never gave the same rows.
    A glob covers a folder when it matches a file that is or could be written in it (Beam's own glob rule)."""
    import os
    import re
    from pathlib import Path

    from apache_beam.io.filesystem import FileSystem

    local = [os.path.abspath(f.removeprefix("file://")) for f in folders if not is_remote(f)]
    candidates = [c for f in local for c in (f, f"{f}/part-00000.parquet", f"{f}/.hidden", f"{f}/a/b/c.parquet")]
    candidates += [os.path.abspath(f.removeprefix("file://")) for f in files if not is_remote(f)]
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern or is_remote(pattern):
            continue
        regex = re.compile(FileSystem.translate_pattern(os.path.abspath(pattern)))
        covered = [c for c in candidates if regex.match(c)]
        if not covered:
            try:  # a symlinked folder: the files it matches, resolved
                matched = [Path(f).resolve() for f in match_files(pattern)]
            except CmtpError:  # a pattern that matches nothing is its stage's own error
                continue
            covered = [str(m) for m in matched if any(m.is_relative_to(Path(f).resolve()) for f in local)]
        if covered:
            raise CmtpError(f"input {pattern} covers {what} ({covered[0]}): narrow the glob or write the output "
                            "elsewhere")


def write_file(path: str, data: bytes | str) -> None:
    """A report, plot or result file the user named, whole or not at all: a local file is written beside its place
    and moved there when complete (a full disk left a truncated 4 KB report, or a 0-byte eval result); a store
    commits an object when it is closed. A failure is one error naming the path."""
    import os

    import fsspec

    raw = data.encode("utf-8") if isinstance(data, str) else data
    if is_remote(path):
        with fsspec.open(path, "wb") as fh:
            fh.write(raw)
        return
    target = path.removeprefix("file://")
    tmp = os.path.join(os.path.dirname(target) or ".", f".{os.path.basename(target)}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(raw)
        os.replace(tmp, target)
    except OSError as exc:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise CmtpError(f"{exc.strerror or exc}: {path}") from None


def check_against_manifest(path: str) -> None:
    """A stage output read as input must still be what its manifest says: every output folder with the files and
    rows it lists (a deleted shard was read without a word: 26 of 27 files, exit 0). ``path`` may be the output
    folder or one of its data subfolders (``score/kept``); a folder that is no stage output is not checked."""
    from cmtp.schemas import Manifest

    if not isinstance(path, str) or any(c in path for c in "*?["):
        return
    folder = path.rstrip("/")
    for candidate in (folder, folder.rsplit("/", 1)[0] if "/" in folder else ""):
        if candidate and FileSystems.exists(FileSystems.join(candidate, "manifest.json")):
            folder = candidate
            break
    else:
        return
    try:
        manifest = Manifest.read(folder.removeprefix("file://"))
    except CmtpError:
        return  # not a cmtp manifest: the reader's own checks apply
    for name, listed in manifest.outputs.items():
        if not isinstance(listed, dict) or "files" not in listed or "rows" not in listed:
            continue
        found = summarize_output(folder, name, listed.get("schema", ""))
        if (found["files"], found["rows"]) != (listed["files"], listed["rows"]):
            raise CmtpError(f"{folder}: {name}/ holds {found['files']} file(s) with {found['rows']:,} rows, its "
                            f"manifest lists {listed['files']} with {listed['rows']:,} (a shard deleted, added or cut "
                            f"short after {manifest.stage} wrote it): run {manifest.stage} again")
