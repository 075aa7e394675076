"""A tiny name -> object registry (OpenLTH's `registered_*` + `get(name)` pattern).

Configs refer to datasets, models and methods by the names registered here, so a config value can
never name an arbitrary Python object.
"""

from collections.abc import Callable
from typing import Generic, TypeVar

from trainables.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects of one kind (datasets, models, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers its target under `name` (names are unique)."""

        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str) -> T:
        """The entry registered as `name`; ConfigError naming the allowed names otherwise."""
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; allowed: {', '.join(self.names())}"
            ) from None

    def unregister(self, name: str) -> T:
        """Remove and return the entry `name` (for plug-ins registered temporarily, in tests)."""
        return self._entries.pop(name)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
