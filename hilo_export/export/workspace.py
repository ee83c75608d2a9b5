"""The engine folder while a build writes it: one build at a time (a lock), what killed builds left
behind, and the files a new manifest no longer names. Only files of the build's own naming are ever
removed: anything else in the folder is the user's."""

from __future__ import annotations

import errno
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..files import alive
from ..folder.manifest import ManifestError, all_files, read_manifest
from .request import BuildError

# the files a build owns in its folder: anything else there is left alone
_NAME = r"(hilo|full|planner|weights)-[0-9a-f]{16}[^/]*\.(onnx|onnx\.data|data|plan|torch\.json|torch\.safetensors)"
OWNED = re.compile(rf"^{_NAME}$")
# what interrupted writes of those files left: atomic_path's temporaries, exactly (".NAME.<pid>.<random>"),
# never a user's dot-file that merely starts like one
TEMPORARY = re.compile(rf"^\.({_NAME}|manifest\.json)\.(\d+)\.[a-z0-9_]+(\.[a-z]+)?$")
LOCK = ".hilo-build.lock"  # held while a build writes the folder; never removed (see filelock's docs)


_UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


def previous_manifest(out_dir: Path) -> dict[str, Any] | None:
    try:
        return read_manifest(out_dir)
    except ManifestError:
        return None  # nothing reusable: build everything


@contextmanager
def locked(out_dir: Path) -> Iterator[None]:
    """One build at a time per folder: a second one is refused at once, naming the lock.

    A failure to create or write the folder is a BuildError naming it, not a raw OSError."""
    from filelock import FileLock, Timeout

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(out_dir / LOCK, timeout=0)
        lock.acquire()
    except Timeout:
        raise BuildError(
            f"another hilo-export build is writing {out_dir} (it holds {out_dir / LOCK}); wait for it to finish, "
            "or build into another --out"
        ) from None
    except OSError as err:
        raise BuildError(f"cannot write the engine folder {out_dir} ({err.strerror}); choose a writable --out") from None
    try:
        yield
    except OSError as err:
        inside = err.filename is None or Path(err.filename).resolve().is_relative_to(out_dir.resolve())
        if err.errno not in _UNWRITABLE or not inside:
            raise
        raise BuildError(f"cannot write in {out_dir} ({err.strerror}: {err.filename}); choose a writable --out") from None
    finally:
        lock.release()


def remove_leftovers(out_dir: Path) -> None:
    """What killed builds left behind: temporaries (dot-files of ours whose writer is gone; under
    the lock no other build is writing them)."""
    for path in out_dir.iterdir():
        match = TEMPORARY.match(path.name)
        if match and not path.is_dir() and not alive(int(match.group(4))):
            path.unlink(missing_ok=True)


def remove_unreferenced(out_dir: Path, manifest: dict[str, Any]) -> None:
    """Our files the manifest no longer names (files only: builds write no folders, so a folder is a user's)."""
    keep = {entry["path"] for entry in all_files(manifest)}
    for path in out_dir.iterdir():
        if OWNED.match(path.name) and path.name not in keep and not path.is_dir():
            path.unlink(missing_ok=True)
