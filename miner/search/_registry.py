"""One registry per plugin kind; a duplicate name is an error, an unknown one lists the known."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import pydantic

from miner.errors import ConfigError, MinerError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, type[T]] = {}

    def register(self, cls: type[T]) -> type[T]:
        name = getattr(cls, "name", "")
        if not name:
            raise MinerError(f"{self.kind} class {cls.__name__} has no 'name'")
        if name in self._items and self._items[name] is not cls:
            raise MinerError(f"{self.kind} {name!r} is already registered (by {self._items[name].__module__})")
        self._items[name] = cls
        return cls

    def get(self, name: str) -> type[T]:
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._items))}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[tuple[str, type[T]]]:
        return sorted(self._items.items())

    def build(self, name: str, params: dict[str, Any] | None, path: str = "") -> T:
        """Instantiate with validated parameters; errors name the config path."""
        cls = self.get(name)
        try:
            return pydantic.TypeAdapter(cls).validate_python(dict(params or {}))
        except pydantic.ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            where = f"{path}.{loc}" if path and loc else (path or loc)
            if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
                raise ConfigError(f"{where}: unknown parameter of {self.kind} {name!r}") from None
            raise ConfigError(f"{where}: {err['msg']}") from None


from miner.search._base import Searcher  # noqa: E402

searchers: Registry[Searcher] = Registry("searcher")
register_searcher = searchers.register
