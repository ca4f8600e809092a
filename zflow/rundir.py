"""A run's private directory (its ipc endpoints and control socket): where it is made, and its
removal.

`tempfile.mkdtemp` would do, but importing tempfile imports shutil, and shutil bz2, lzma and zlib:
~4 ms at the start of every `zflow up`, on the path to its first replica (issue 16). So the
directory is made here by tempfile's rules, and removed without shutil, since it holds only
socket files. Once tempfile is imported anyway (an in-process caller, which may have set
`tempfile.tempdir`), it decides, as before.
"""

from __future__ import annotations

import errno
import os
import sys

PREFIX = "zflow-"
#: random characters after the prefix
RANDOM = 8
#: a run directory's name as rules.py measures it, its random characters as X
TEMPLATE = PREFIX + "X" * RANDOM


def candidates() -> list[str]:
    """The directories `tempfile.gettempdir()` tries, in its order: $TMPDIR, $TEMP, $TMP, then
    /tmp, /var/tmp, /usr/tmp and the current directory."""
    dirs = [d for d in (os.environ.get(v) for v in ("TMPDIR", "TEMP", "TMP")) if d]
    dirs += ["/tmp", "/var/tmp", "/usr/tmp"]
    try:
        dirs.append(os.getcwd())
    except OSError:
        pass
    return [os.path.abspath(d) for d in dirs]


def _new_name(root: str) -> str:
    return os.path.join(root, PREFIX + os.urandom(RANDOM // 2).hex())


def make() -> str:
    """A new directory `<candidate>/zflow-XXXXXXXX`, mode 0700, created by us (never one that
    existed: mkdir fails on a name taken, and another name is drawn). As tempfile does, a
    candidate where it cannot be made (missing, read-only, full, refused by a security module:
    what `access()` does not always tell) is passed over for the next."""
    tempfile = sys.modules.get("tempfile")
    if tempfile is not None:
        return tempfile.mkdtemp(prefix=PREFIX)
    tried = candidates()
    for root in tried:
        for _ in range(100):
            path = _new_name(root)
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                continue
            except OSError:
                break
            return path
    raise FileNotFoundError(errno.ENOENT, "no usable temporary directory found in "
                            + ", ".join(tried))


def base() -> str:
    """The directory `make` would put a run directory in now (found as it does: by making one,
    here removed at once). Only ZF057's check of a long ipc path asks."""
    tempfile = sys.modules.get("tempfile")
    if tempfile is not None:  # what it was told (tempfile.tempdir), or what it found
        return tempfile.gettempdir()
    path = make()
    os.rmdir(path)
    return os.path.dirname(path)


def remove(path: str) -> None:
    """Remove a run directory: flat (socket files), so without shutil unless it is not."""
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    raise IsADirectoryError(entry.path)
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:  # the guard's, or the supervisor's, removal took it
                    pass
        os.rmdir(path)
    except FileNotFoundError:  # removed already (by the supervisor, or by the guard)
        pass
    except OSError:
        import shutil

        shutil.rmtree(path, ignore_errors=True)
