"""Writing artifacts so that a reader never sees a half-written file."""

from __future__ import annotations

import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


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
