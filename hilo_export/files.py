"""Writing artifacts so that a reader never sees a half-written file."""

from __future__ import annotations

import os
import re
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    The temporary name carries this process's id (``.NAME.<pid>.XXXX``), so a later write of the
    same file can tell the leftovers of a killed writer (SIGKILL, power loss: no cleanup ran) from
    a live one and removes them."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes files private; artifacts are meant to be shared
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temps(target: Path) -> list[Path]:
    """Remove the temporary files of ``atomic_path(target)`` whose writing process is gone."""
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(\d+)\.[^/]+$")
    removed = []
    for candidate in target.parent.glob(f".{glob_escape(target.name)}.*"):
        match = pattern.match(candidate.name)
        if match and not _alive(int(match.group(1))):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


# ------------------------------------------------------------------ reading input files safely


def confined(folder: Path, name: Any, error: type[Exception], fix: str, where: Any = None) -> Path:
    """``folder / name`` for a file name read from input (a manifest, an index, an ONNX graph):
    a non-empty relative path without ``..``. Links are resolved by ``regular_file``, not here:
    a hub cache snapshot links its files to blobs outside the snapshot folder."""
    relative = Path(name) if isinstance(name, str) else None
    if relative is None or not name or relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise error(f"{where or folder} names {name!r}, outside its folder; {fix}")
    return Path(folder) / relative


def regular_file(path: Path, error: type[Exception], fix: str, inside: Path | None = None) -> os.stat_result:
    """The stat of ``path`` (links followed) when it is a regular file, else ``error``: a fifo would
    block a reader forever, /dev/zero never ends, a folder is no file. ``inside``: the file must
    also resolve into that folder (no link out of it)."""
    try:
        info = os.stat(path)
        resolved = Path(path).resolve()
    except FileNotFoundError:
        raise error(f"{path} is missing; {fix}") from None
    except OSError as err:
        raise error(f"cannot read {path} ({err.strerror}); {fix}") from None
    if inside is not None and not resolved.is_relative_to(Path(inside).resolve()):
        raise error(f"{path} links outside {inside}; {fix}")
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{path} is not a regular file ({_kind(info.st_mode)}); {fix}")
    return info


def read_limited(path: Path, limit: int, error: type[Exception], fix: str) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes. Opened without blocking and checked
    on the open descriptor, so a fifo put in place after a check cannot hang the read either."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise error(f"{path} is missing; {fix}") from None
    except OSError as err:
        raise error(f"cannot read {path} ({err.strerror}); {fix}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise error(f"{path} is not a regular file ({_kind(info.st_mode)}); {fix}")
    with os.fdopen(fd, "rb") as f:
        if info.st_size > limit:
            raise error(f"{path} is {info.st_size} bytes, more than the {limit} bytes such a file may hold; {fix}")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise error(f"{path} holds more than the {limit} bytes such a file may hold; {fix}")
    return data


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a fifo"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a plain file"


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (leftovers of dead writers may be removed)."""
    return _alive(pid)
