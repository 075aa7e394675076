"""One registry kind for everything that has a name (OpenLTH's `registered_*` + `get(name)`).

Scorers, channel criteria and allocations here; methods, datasets, models and loggers above.
Configs refer to entries by name, so a config value can never name an arbitrary Python object.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


def did_you_mean(word: str, candidates: list[str]) -> str:
    """' (did you mean 'x'?)' for the closest of `candidates`, or '' when none is close."""
    close = difflib.get_close_matches(word, candidates, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Registry(Generic[T]):
    """Maps names to entries of one kind, in registration order.

    `error` is the exception an unknown name raises: ValueError in `pruning`, the project's
    ConfigError (a ValueError too) for the names a config file chooses.
    """

    def __init__(self, kind: str, error: type[Exception] = ValueError) -> None:
        self.kind = kind
        self.error = error
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers its target under `name` (names are unique)."""

        def add(entry: T) -> T:
            self.add(name, entry)
            return entry

        return add

    def add(self, name: str, entry: T) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry

    def get(self, name: str) -> T:
        """The entry registered as `name`; `error` with a did-you-mean and the names otherwise."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise self.error(self.unknown_message(name)) from None

    def check(self, name: str) -> str:
        """`name` itself when registered (for validators); `error` as in `get` otherwise."""
        self.get(name)
        return name

    def unknown_message(self, name: object) -> str:
        names = self.names()
        hint = did_you_mean(name, names) if isinstance(name, str) else ""
        return f"unknown {self.kind} {name!r}{hint}; allowed: {', '.join(names)}"

    def unregister(self, name: str) -> T:
        """Remove and return the entry `name` (for plug-ins registered temporarily, in tests)."""
        return self._entries.pop(name)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
