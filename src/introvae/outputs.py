"""Where a command writes: an output the file system cannot take is refused in one line that names it, before any
work where the command can tell (:func:`check_writable`), and otherwise when the write fails (:func:`path_error_line`,
used by the command line for whatever slipped through: a full disk mid-run, a path a mount refuses)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from .errors import UserError

# the file system's refusals of a path the user gave or made (an --out under a file, a read-only or full disk): one
# line naming the path; any other OSError (no path, or another errno) is ours and keeps its traceback
_PATH_ERRNOS = {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EACCES, errno.EPERM, errno.EROFS,
                errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG}


def path_error_line(e: OSError) -> str | None:
    """One line for an OSError about a path the user can fix (``/x/y: Permission denied``), or None."""
    if e.errno not in _PATH_ERRNOS or e.filename is None:
        return None
    target = f"{e.filename} -> {e.filename2}" if e.filename2 else e.filename
    return f"{target}: {e.strerror}"


def check_writable(path: Path, command: str = "train", flag: str = "--out", *, file: bool = False) -> None:
    """Refuse, before any work, an output that cannot be made or written (one line): a directory, or with ``file``
    a file whose folder is made as needed."""
    given, p = path, Path(path).absolute()
    if p.exists() and file == p.is_dir():
        raise UserError(f"{command}: {flag} {given}: {p} is a {'directory' if file else 'file'}, not a "
                        f"{'file' if file else 'directory'}")
    ancestor = p.parent if file else p
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"{command}: {flag} {given}: {ancestor} is a file, so no directory can be made under it")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"{command}: {flag} {given}: no permission to write in {ancestor}")
