"""
Writing small files (state, job lists, keys, password files) so that a
crash, a full disk or a planted symbolic link never leaves a half-written
file under the real name, nor writes anywhere else.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Union


def writeAtomically(path: Union[str, Path], data: bytes, mode: int = 0o666) -> None:
    """
    Replace C{path} with C{data} through a new temporary file beside it and
    a rename, so a crash leaves the old content or the new one.

    The temporary file is always created afresh, never opened through a
    symbolic link or reused with an older mode; a failed write leaves it
    behind neither.

    @param mode: the permissions of the new file, before the umask.
    @raise OSError: the file could not be written; C{path} is unchanged.
    """
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(temporary, flags, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
