"""One registry per plugin kind; a duplicate name is an error, an unknown one lists the known."""

from __future__ import annotations

import dataclasses
import difflib
import logging
import typing
from typing import Any, Generic, TypeVar

import pydantic

from miner.errors import ConfigError, MinerError

T = TypeVar("T")
logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One hyperparameter of a plugin, as ``miner searchers NAME`` shows it."""

    name: str
    type: str
    default: Any
    description: str


def parameters(cls: type) -> list[Parameter]:
    """The declared hyperparameters of a dataclass plugin: type, default and description.

    The description is the field's ``pydantic.Field(description=...)`` (inside ``Annotated``), so a
    parameter is declared once: its type, constraints and meaning in one place.
    """
    hints = typing.get_type_hints(cls, include_extras=True)
    out = []
    for f in dataclasses.fields(cls):
        hint = hints.get(f.name, f.type)
        description = ""
        if typing.get_origin(hint) is typing.Annotated:
            for meta in typing.get_args(hint)[1:]:
                if isinstance(meta, pydantic.fields.FieldInfo) and meta.description:
                    description = meta.description
            hint = typing.get_args(hint)[0]
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "(required)"
        shown = getattr(hint, "__name__", None) if isinstance(hint, type) else None
        out.append(Parameter(f.name, shown or str(hint).replace("typing.", ""), default, description))
    return out


class Registry(Generic[T]):
    """Plugins of one kind, by name: the built-in ones register on import, installed packages through
    the entry-point group ``group`` (e.g. ``[project.entry-points."miner.searchers"]`` in their
    pyproject.toml, ``name = "package.module:Class"``), loaded the first time a name is looked up."""

    def __init__(self, kind: str, group: str | None = None) -> None:
        self.kind = kind
        self.group = group
        self._items: dict[str, type[T]] = {}
        self._plugins_loaded = group is None
        self.broken: dict[str, str] = {}  # entry points that failed to load: name -> one-line reason

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        from importlib.metadata import entry_points

        assert self.group is not None  # a registry without a group starts with _plugins_loaded set

        for ep in entry_points(group=self.group):
            if ep.name in self._items:
                continue  # a built-in or an already loaded plugin keeps its name
            try:
                cls = ep.load()
                if getattr(cls, "name", "") != ep.name:
                    raise MinerError(f"its class says name={getattr(cls, 'name', '')!r}")
                self.register(cls)
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not break miner
                self.broken[ep.name] = f"{type(exc).__name__}: {exc}".splitlines()[0]
                logger.warning(
                    "%s plugin %r (%s) could not be loaded: %s",
                    self.kind,
                    ep.name,
                    ep.value,
                    self.broken[ep.name],
                )

    def register(self, cls: type[T]) -> type[T]:
        name = getattr(cls, "name", "")
        if not name:
            raise MinerError(f"{self.kind} class {cls.__name__} has no 'name'")
        if name in self._items and self._items[name] is not cls:
            raise MinerError(
                f"{self.kind} {name!r} is already registered (by {self._items[name].__module__})"
            )
        self._items[name] = cls
        return cls

    def get(self, name: str) -> type[T]:
        self._load_plugins()
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(str(name), self._items, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            if name in self.broken:
                hint = f"its plugin failed to load ({self.broken[name]}); "
            raise ConfigError(
                f"unknown {self.kind} {name!r}; {hint}known: {', '.join(sorted(self._items))}"
            ) from None

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._items)

    def items(self) -> list[tuple[str, type[T]]]:
        self._load_plugins()
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

searchers: Registry[Searcher] = Registry("searcher", group="miner.searchers")
register_searcher = searchers.register
