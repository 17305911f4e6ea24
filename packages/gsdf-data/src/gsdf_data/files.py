"""Writing a file atomically: the one temporary-name scheme of the project.

A file is written to ``.<name>.tmp-<pid><suffix>`` beside its final path and renamed over it
when complete, so a reader never sees a half-written file under its final name and a killed
run leaves only names that :func:`is_temporary` (and ``gsdf-data check``) recognise. The
temporary keeps the final suffix for writers that choose a format by it (``np.savez``
appends ``.npz`` otherwise; image writers pick the encoder by it). Pure Python: gsdf-model
uses it too.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

TEMP_MARK = ".tmp-"
TEMP_GLOB = f".*{TEMP_MARK}*"


def temporary_path(path: str | Path) -> Path:
    """The temporary name this process writes ``path`` under."""
    path = Path(path)
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}{path.suffix}")


def is_temporary(path: str | Path) -> bool:
    """True for a name made by :func:`temporary_path` (by any process)."""
    name = Path(path).name
    return name.startswith(".") and TEMP_MARK in name


@contextlib.contextmanager
def atomic_write(path: str | Path, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without an error, rename it
    over ``path`` (after an fsync of the file when ``fsync``). On an error the temporary is
    removed and ``path`` is left as it was."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text)
