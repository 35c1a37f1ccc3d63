"""One registry type for every kind of named entry (tasks, methods, method setups, task kinds).

An entry is either the object itself or a lazy "module:attribute" reference, imported on first use, so a
registry of code (method setup functions, task kinds) can be declared without importing torch. Unknown names
are refused with the known ones and a "did you mean".
"""

from __future__ import annotations

import importlib
from typing import Generic, Iterator, TypeVar

from harness.spec.errors import InputError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, what: str, entries: dict[str, T | str] | None = None, aliases: dict[str, str] | None = None,
                 case_insensitive: bool = False):
        self.what = what                      # "task", "method": how an error names an entry
        self.case_insensitive = case_insensitive
        self._entries: dict[str, T | str] = {}
        self._aliases: dict[str, str] = {}
        for name, entry in (entries or {}).items():
            self.register(name, entry)
        for alias, name in (aliases or {}).items():
            self._aliases[self._norm(alias)] = name

    def _norm(self, name) -> str:
        name = str(name)
        return name.lower() if self.case_insensitive else name

    def register(self, name: str, entry: T | str) -> None:
        """`entry` is the object, or "module:attribute" to import when first asked for."""
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._entries[name] = entry

    def canonical(self, name) -> str:
        """The registered name for `name` (aliases and, where the registry allows, any case), or InputError."""
        key = self._norm(name)
        key = self._aliases.get(key, key)
        if key not in self._entries:
            raise InputError(f'unknown {self.what} "{name}"{did_you_mean(key, self._entries)}; '
                             f'known: {", ".join(self._entries)}')
        return key

    def get(self, name) -> T:
        key = self.canonical(name)
        entry = self._entries[key]
        if isinstance(entry, str):   # a lazy reference: import it once
            module, _, attr = entry.partition(":")
            entry = self._entries[key] = getattr(importlib.import_module(module), attr)
        return entry

    __getitem__ = get

    def __contains__(self, name) -> bool:
        key = self._norm(name)
        return self._aliases.get(key, key) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def items(self):
        return [(name, self.get(name)) for name in self._entries]

    def values(self):
        return [self.get(name) for name in self._entries]
