"""Output files: checked before any work is done, written atomically.

A command that computes for minutes and then cannot write its result has wasted the
minutes; one that dies half-way through a write leaves a truncated file where a good one
was. So commands check every output path first (:func:`check_output_file`,
:func:`check_output_folder`: the folder exists, is a folder and is writable), and every
file is written to a temporary file in its own folder, then renamed over the target
(:func:`atomic_write`, :func:`atomic_path`): readers see the old file or the new one,
never a part. Errors are :class:`OutputError`, with the path and the reason.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "OutputError",
    "atomic_path",
    "atomic_write",
    "check_output_file",
    "check_output_folder",
]


class OutputError(ValueError):
    """An output path cannot be written; the message names it and says why."""


def _writable_folder(folder: Path, path: Path, what: str) -> None:
    if not folder.exists():
        raise OutputError(f"{what} {path}: folder {folder} does not exist; create it first")
    if not folder.is_dir():
        raise OutputError(f"{what} {path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {path}: folder {folder} is not writable")


def check_output_file(path: str | os.PathLike[str], what: str = "output") -> Path:
    """``path`` as a :class:`~pathlib.Path` if a file can be written there.

    Args:
        path: The file to write (it may exist: it will be replaced).
        what: How messages name it, e.g. ``--csv``.

    Raises:
        OutputError: If it is a folder, or its folder is missing, not a folder or not
            writable.
    """
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"{what} {target} is a folder; give a file name")
    _writable_folder(target.parent, target, what)
    return target


def check_output_folder(path: str | os.PathLike[str], what: str = "output folder") -> Path:
    """``path`` as a :class:`~pathlib.Path` if files can be written into it (it is created,
    with its parents, when missing, so its nearest existing ancestor must be writable).

    Raises:
        OutputError: If it is a file, or it (or the ancestor it would be created in) is
            not a writable folder.
    """
    target = Path(path)
    if target.exists():
        if not target.is_dir():
            raise OutputError(f"{what} {target} is a file, not a folder")
        _writable_folder(target, target, what)
        return target
    ancestor = target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    _writable_folder(ancestor, target, what)
    return target


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], what: str = "output") -> Iterator[Path]:
    """A temporary path in ``path``'s folder to write to; renamed over ``path`` when the
    block succeeds, removed when it fails.

    Raises:
        OutputError: If the temporary file cannot be created or renamed (the cause is
            kept); errors inside the block propagate as they are.
    """
    target = Path(path)
    # Not tempfile.mkstemp: its 0600 mode would stick to the output; this one gets the
    # umask's, as any new file.
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as exc:
        raise OutputError(f"cannot write {what} {target}: {exc.strerror or exc}") from exc
    try:
        yield tmp
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {what} {target}: {exc.strerror or exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike[str], data: bytes | str, what: str = "output") -> None:
    """Write ``data`` (text as UTF-8) to ``path`` atomically, flushed to disk first.

    Raises:
        OutputError: If it cannot be written.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path, what) as tmp, tmp.open("wb") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
