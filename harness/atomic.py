"""Files that appear whole or not at all: written under a unique temporary name in the same folder, flushed to
disk, then renamed over the final name (a rename within one filesystem is atomic). A kill mid-write leaves at
most a stray temporary file, never a truncated record.json, predictions file or adapter."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from typing import Callable


def _temp_name(path: str) -> str:
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def _fsync_file(path: str) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_file(path: str, write: Callable[[str], None]) -> None:
    """`write(temp_path)` writes the content; then it is synced and renamed to `path`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = _temp_name(path)
    try:
        write(tmp)
        _fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def write_json(path: str, obj, indent: int = 2, ensure_ascii: bool = True) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=indent, ensure_ascii=ensure_ascii, default=str)
    write_file(path, write)


def read_json_object(path: str) -> dict | None:
    """The JSON object in a file (a record.json); None where the file is missing or unreadable, or holds no JSON
    object (a half-written file of a tool that does not write atomically, a list, nesting too deep)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def write_npz(path: str, arrays: dict) -> None:
    """Compressed numpy arrays (np.savez_compressed) under `path` exactly (no .npz appended)."""
    import numpy as np

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:   # a file object: numpy would append .npz to the temporary name
            np.savez_compressed(f, **arrays)
    write_file(path, write)


def write_dir(path: str, write: Callable[[str], None]) -> None:
    """`write(temp_dir)` fills a fresh folder; it then replaces `path` (an older folder there is removed first:
    between the two steps neither exists, which a reader sees as 'not written yet')."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = _temp_name(path)
    try:
        os.makedirs(tmp)
        write(tmp)
        for name in os.listdir(tmp):
            _fsync_file(os.path.join(tmp, name))
        if os.path.isdir(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)
    _fsync_dir(parent)


# --- folders a command creates: refused where a file is in the way, removed again when the command fails --------

def file_in_the_way(folder: str) -> str | None:
    """What keeps `folder` from being (or becoming) a folder: itself or its nearest existing ancestor, where that
    is not a folder (a store's folder, --output-dir, --cache-dir could never be created there)."""
    while folder and not os.path.lexists(folder):
        folder = os.path.dirname(folder)
    return folder if folder and not os.path.isdir(folder) else None


def try_folder(folder: str) -> None:
    """Raises the OSError that creating `folder` (where it is missing) or writing in it raises (/proc, /sys, a
    read-only mount), and leaves nothing behind. Tried inside a uniquely named folder made in the nearest existing
    ancestor, never with `folder` itself: DDP ranks and Slurm array workers check the same fresh folder at once,
    and a check that removed the folder it had made would pull it from under a worker that had made it too and
    was writing in it."""
    folder = os.path.abspath(folder)
    existing = folder
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    probe = tempfile.mkdtemp(prefix=".harness-probe-", dir=existing)
    try:
        if folder != existing:   # the missing names themselves (one too long, ...), made inside the probe
            os.makedirs(os.path.join(probe, os.path.relpath(folder, existing)))
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def missing_folders(folder: str) -> list[str]:
    """`folder` and its ancestors that do not exist yet, innermost first: what creating it creates."""
    missing, folder = [], os.path.abspath(folder)
    while not os.path.lexists(folder) and os.path.dirname(folder) != folder:
        missing.append(folder)
        folder = os.path.dirname(folder)
    return missing


def remove_empty(folders: list[str]) -> None:
    """The folders a failed command created (missing_folders, innermost first), while they are empty."""
    for folder in folders:
        try:
            os.rmdir(folder)
        except OSError:
            return
