"""One writer per output folder: ``cmtp build`` and every stage command hold a lock on what they write for the
whole run, so two runs on one work folder can never mix or corrupt each other's outputs.

The lock is ``filelock``'s OS lock (``fcntl.flock`` on Linux) on ``.cmtp.lock`` beside the folder it guards: the
kernel releases it when the holder exits, however it exits, so a lock left by a killed process is free again and
is taken over (with a note naming the dead holder). Beside it, ``.cmtp.lock.json`` says who holds it (pid, host,
start time) for the error a second run prints. Remote outputs (``gs://``, ``s3://``) have no OS lock: object
stores offer none that a crashed worker releases, so there one build per work prefix is the user's rule
(docs/cluster.md).
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from cmtp.schemas.errors import CmtpError
from cmtp.transforms.common.paths import is_remote

LOCK_NAME = ".cmtp.lock"
_HELD: set[Path] = set()  # the lock files this process holds (a build's, while it runs its stages)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_path(folder: str | Path, own: bool) -> Path:
    """The lock file guarding ``folder``: inside it (a build's work folder, which it owns) or beside it (a stage
    command's output, whose folder is replaced whole when it is committed)."""
    folder = Path(str(folder).removeprefix("file://"))
    return folder / LOCK_NAME if own else folder.parent / f".{folder.name}{LOCK_NAME}"


@contextmanager
def hold(folder: str | Path, own: bool = False, log=None):
    """Hold the lock on ``folder`` for the ``with`` block; a second holder gets one error naming the first."""
    if is_remote(str(folder)):
        yield  # see the module docstring: no lock on object stores
        return
    from filelock import FileLock, Timeout

    path = lock_path(folder, own)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CmtpError(f"cannot create {path.parent}: {exc.strerror or exc}") from exc
    info = path.with_name(path.name + ".json")
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        # filelock reports a lock file it could not create (a read-only or special folder) as a timeout too; a
        # held lock's file exists
        if not path.exists():
            try:
                path.touch()
            except OSError as exc:
                raise CmtpError(f"cannot lock {folder}: cannot create {path} ({exc.strerror or exc})") from None
        holder = _read(info)
        who = (f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}" if holder
               else "another process")
        raise CmtpError(f"{folder} is in use by another cmtp run ({who}); wait for it to finish or stop it") from None
    except OSError as exc:
        raise CmtpError(f"cannot lock {folder}: {exc.strerror or exc}") from exc
    _HELD.add(path.resolve())
    try:
        previous = _read(info)
        if previous and log and previous.get("host") == socket.gethostname() and not _alive(previous.get("pid", 0)):
            log(f"note: took over the lock of {folder} left by pid {previous.get('pid')} (no longer running)")
        try:
            info.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                        "started": time.strftime("%Y-%m-%d %H:%M:%S")}), encoding="utf-8")
        except OSError:
            pass  # the description is a courtesy; the OS lock is what protects the folder
        yield
    finally:
        # removed while still held: a run that opens the path afterwards locks a new file, and one that opened
        # the old file meanwhile failed its single attempt (timeout 0) and reported this holder
        info.unlink(missing_ok=True)
        _HELD.discard(path.resolve())
        path.unlink(missing_ok=True)
        lock.release()


@contextmanager
def hold_output(out: str | Path, log=None):
    """A stage command's lock on its output, and on the work folder of any build above it: ``cmtp dedup --out
    work/dedup --overwrite`` while a build runs in ``work`` is refused (it took only its own lock, beside the
    folder, which the build's never meets). A build's own stages pass: this process holds its lock."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        if not is_remote(str(out)):
            for ancestor in Path(str(out).removeprefix("file://")).resolve().parents:
                build_lock = ancestor / LOCK_NAME
                if build_lock.exists() and build_lock.resolve() not in _HELD:
                    stack.enter_context(hold(ancestor, own=True, log=log))
        stack.enter_context(hold(out, log=log))
        yield


def _read(info: Path) -> dict:
    try:
        return json.loads(info.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
