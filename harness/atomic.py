"""Files that appear whole or not at all: written under a unique temporary name in the same folder, flushed to
disk, then renamed over the final name (a rename within one filesystem is atomic). A kill mid-write leaves at
most a stray temporary file, never a truncated record.json, predictions file or adapter."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from typing import Callable


def _temp_name(path: str) -> str:
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


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
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def write_json(path: str, obj) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, default=str)
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
            with open(os.path.join(tmp, name), "rb") as f:
                os.fsync(f.fileno())
        if os.path.isdir(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)
    _fsync_dir(parent)
