"""An output folder belongs to one store. Its cell folders (SUITE/KEY/) are named by cell, not by store, so a
second store running the same suite into the same folder would move its predictions, adapter and record.json
over the first one's (whose rows still point there, and whose paired tests would then read them), sweep its
attempt folders and resume its checkpoints. The folder's mark (layout.STORE_MARK) names the store that first
wrote into it, by the store's random id (store_info, migration 0005); another store is refused, before anything
is written."""

from __future__ import annotations

import json
import os
import secrets

from harness.spec import layout
from harness.spec.errors import InputError


def _mark_path(output_dir: str) -> str:
    return os.path.join(output_dir, layout.STORE_MARK)


def bound_store(output_dir: str) -> dict | None:
    """The mark of the store this folder holds the runs of ({"store_id", "db"}); None where it has none yet."""
    path = _mark_path(output_dir)
    try:
        with open(path, encoding="utf-8") as f:
            mark = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as e:   # (RecursionError: nested past the decoder's limit)
        raise InputError(f"--output-dir: cannot read {path} ({e}); it names the store this folder belongs to")
    if not isinstance(mark, dict) or not isinstance(mark.get("store_id"), str):
        raise InputError(f"--output-dir: {path} does not name a store (no store_id); it names the store this "
                         f"folder belongs to")
    return mark


def _refusal(output_dir: str, mark: dict) -> InputError:
    return InputError(f"--output-dir: {output_dir} holds the runs of another store ({mark.get('db')}, id "
                      f"{mark['store_id'][:8]}): this store's runs would overwrite their files; give another "
                      f"--output-dir, or that store's --db (if that store is gone, delete "
                      f"{_mark_path(output_dir)})")


def check_output_dir(output_dir: str, url: str, unreachable_ok: bool = False) -> None:
    """Refuse, before anything is written, an output folder bound to a store other than the one at `url` (a
    store not created yet is another store). Opens the store read-only: creates nothing. `unreachable_ok`: a
    store this machine cannot open is left to the workers to check (a Slurm login node may not reach the
    cluster's database)."""
    from harness.store.db import Store
    from harness.store.engine import READ_ONLY_BACKENDS, StoreChanged, check_db_url
    from harness.store.schema import StoreTooNew

    mark = bound_store(output_dir)
    if mark is None:
        return
    # a database this harness cannot open read-only (mssql, oracle) is opened as workers open it, without
    # migrating it: only its id is read
    read_only = check_db_url(url).get_backend_name() in READ_ONLY_BACKENDS
    try:
        store = Store(url, read_only=read_only, create=False)
    except FileNotFoundError:
        raise _refusal(output_dir, mark) from None
    except (StoreChanged, StoreTooNew):   # reached (written during the read, or a newer harness's): not a store
        raise                             # this machine cannot reach
    except InputError:
        if unreachable_ok:
            return
        raise
    try:
        if store.identity() != mark["store_id"]:
            raise _refusal(output_dir, mark)
    finally:
        store.engine.dispose()


def bind_output_dir(output_dir: str, store) -> None:
    """Mark `output_dir` as `store`'s, or refuse where it is another's. The mark is created by a hard link of a
    complete file, which fails where one exists: of two stores starting at once, one wins and the other is
    refused."""
    from harness.atomic import write_json
    from harness.store.redact import redact_url

    identity = store.identity()
    mark = bound_store(output_dir)
    if mark is None:
        os.makedirs(output_dir, exist_ok=True)
        path = _mark_path(output_dir)
        content = {"store_id": identity, "db": redact_url(store.url)}
        tmp = f"{path}.{secrets.token_hex(8)}.tmp"   # (pids repeat across the hosts of a shared folder)
        write_json(tmp, content)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        except OSError:   # a filesystem without hard links: an exclusive create, written in place
            try:
                with open(path, "x", encoding="utf-8") as f:
                    json.dump(content, f)
            except FileExistsError:
                pass
        finally:
            os.remove(tmp)
        mark = bound_store(output_dir)
    if mark["store_id"] != identity:
        raise _refusal(output_dir, mark)
