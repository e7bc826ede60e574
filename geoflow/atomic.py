"""Atomic file writes: a temporary file in the same directory, then ``os.replace``.

A killed process or a full disk leaves either the old file or the new one at the path, never a
half-written file; the temporary file is removed on any error.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def atomic_write(path: str | Path, data: bytes | Callable[[IO[bytes]], object]) -> Path:
    """Write ``data`` (bytes, or a function writing to a binary file object) to ``path`` atomically.

    The parent directory is created if needed. The new file gets the usual permissions
    (``0o666`` less the umask), like a file opened with ``open(path, "wb")``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, bytes | bytearray | memoryview):
                f.write(data)
            else:
                data(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path
