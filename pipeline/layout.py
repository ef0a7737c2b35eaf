"""Pipeline layouts and the fluent builder that makes them.

A :class:`Layout` is an immutable, validated template: a name and a tuple of
:class:`FilterSpec`. It is built once, when the script loads; every configuration
error is reported then, as a :class:`~pipeline.errors.ConfigError` carrying the
script's file and line.

A :class:`Builder` is what a script holds while it describes a layout. It has one
method per registered filter (``connect``, ``demux``, ``dump``...), looked up in
the plugin registry, and :meth:`Builder.to`:

* after a joint filter (``demux``, ``mux``, ``fork``...), ``.to(x)`` gives the
  filter its sub-pipeline layout: ``x`` is the name of a layout
  (``proxy.pipeline(name)``) or a function that receives a fresh builder and adds
  filters to it;
* after any other filter, ``.to(function)`` calls the function on this builder
  (composition: the filters land inline) and ``.to(name)`` continues in the named
  layout, as ``link(name)`` does.
"""

from __future__ import annotations

import difflib
import inspect
import itertools
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .filter import Filter

if TYPE_CHECKING:
    from .proxy import Proxy

__all__ = ["Builder", "FilterSpec", "Layout", "LayoutRef", "Location"]

Location = tuple[str, int]
LayoutArg = str | Callable[["Builder"], Any]

_anon_ids = itertools.count(1)


def caller_location(depth: int = 2) -> Location:
    """The file and line of the script code that called the builder."""
    frame = sys._getframe(depth)
    return frame.f_code.co_filename, frame.f_lineno


class LayoutRef:
    """A reference to a layout, by name or to an anonymous one, resolved when the
    proxy is built (so a layout may be used before it is defined, or by itself)."""

    __slots__ = ("builder", "layout", "location", "name")

    def __init__(self, name: str | None, builder: Builder | None, location: Location) -> None:
        self.name = name
        self.builder = builder
        self.location = location
        self.layout: Layout = _UNRESOLVED

    def __repr__(self) -> str:
        return f"<LayoutRef {self.name or (self.builder and self.builder.name)}>"


@dataclass(frozen=True, slots=True)
class FilterSpec:
    """One filter of a layout: its class, the builder's arguments, where the script
    named it, the sub-layouts given with ``.to(...)`` and its shared state."""

    name: str
    cls: type[Filter]
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    location: Location
    subs: tuple[LayoutRef, ...] = ()
    state: Any = None
    # ``kwargs`` as a plain dict, for create(): ``**`` on a dict is a copy in C,
    # on a mapping proxy a call per key. Never handed out, so never changed.
    _kw: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_kw", dict(self.kwargs))

    def create(self) -> Filter:
        """A fresh filter instance for a new live pipeline (made per stream, and
        per message under a demux: kept to the constructor call)."""
        f = self.cls(*self.args, **self._kw) if self._kw else self.cls(*self.args)
        f.spec = self
        return f

    def describe(self) -> str:
        """``name(arg, key=value)`` as the script wrote it, for graphs and logs;
        the values of secret parameters (:data:`SECRET_PARAMETERS`) show as ``***``."""
        names = _positional_names(self.cls)
        parts = [_short(a, names[i] if i < len(names) else "") for i, a in enumerate(self.args)]
        parts += [f"{k}={_short(v, k)}" for k, v in self.kwargs.items()]
        return f"{self.name}({', '.join(parts)})"


@dataclass(frozen=True, slots=True)
class Layout:
    """An immutable, validated pipeline template."""

    name: str
    specs: tuple[FilterSpec, ...]
    location: Location | None = None
    anonymous: bool = field(default=False, compare=False)

    def __repr__(self) -> str:
        return f"<Layout {self.name!r}: {' -> '.join(s.name for s in self.specs)}>"


class _Unresolved(Layout):
    pass


_UNRESOLVED: Layout = _Unresolved("<unresolved>", ())


@dataclass(slots=True)
class _Pending:
    name: str
    cls: type[Filter]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    location: Location
    subs: list[LayoutRef]


class Builder:
    """Describes one layout, one filter per method call. See the module docs."""

    def __init__(
        self,
        proxy: Proxy,
        name: str,
        location: Location,
        registry: Mapping[str, type[Filter]],
        anonymous: bool = False,
    ) -> None:
        self._proxy = proxy
        self._registry = registry
        self._pending: list[_Pending] = []
        self._built: Layout | None = None
        self.name = name
        self.location = location
        self.anonymous = anonymous

    def __getattr__(self, name: str) -> Callable[..., Builder]:
        if name.startswith("_"):
            raise AttributeError(name)
        cls = self._registry.get(name)
        if cls is None:
            close = difflib.get_close_matches(name, list(self._registry), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown filter {name!r}{hint}", *caller_location())

        def add(*args: Any, **kwargs: Any) -> Builder:
            return self._add(name, cls, args, kwargs, caller_location())

        return add

    def add_filter(self, cls: type[Filter], *args: Any, **kwargs: Any) -> Builder:
        """Add a filter class that is not registered (handy in tests and scripts)."""
        return self._add(cls.name or cls.__name__, cls, args, kwargs, caller_location())

    def _add(
        self,
        name: str,
        cls: type[Filter],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        location: Location,
    ) -> Builder:
        if self._built is not None:
            raise ConfigError(
                f"layout {self.name!r} is already built; add filters before the proxy runs",
                *location,
            )
        try:
            bound = _signature(cls).bind(*args, **kwargs)
        except TypeError as exc:
            raise ConfigError(f"{name}(): {exc}", *location) from None
        for param in cls.layout_params:
            if param in bound.arguments:
                bound.arguments[param] = self._layout_value(bound.arguments[param], location)
        args, kwargs = tuple(bound.args), dict(bound.kwargs)
        try:
            cls(*args, **kwargs)  # constructors validate their configuration
        except ConfigError as exc:
            raise ConfigError(f"{name}(): {exc.reason}", *location) from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{name}(): {exc}", *location) from None
        self._pending.append(_Pending(name, cls, args, kwargs, location, []))
        return self

    def _layout_value(self, value: Any, location: Location) -> Any:
        """Turn a layout argument (name, builder function, or a list of them) into
        :class:`LayoutRef` objects; other values pass through."""
        if isinstance(value, (str, LayoutRef)) or callable(value):
            return self.ref(value, location)
        if isinstance(value, (list, tuple)):
            return type(value)(self._layout_value(v, location) for v in value)
        if isinstance(value, dict):
            return {k: self._layout_value(v, location) for k, v in value.items()}
        return value

    def ref(self, target: LayoutArg | LayoutRef, location: Location | None = None) -> LayoutRef:
        """A reference to the layout named ``target``, or to a new anonymous layout
        that the function ``target`` describes on a fresh builder."""
        location = location or caller_location()
        if isinstance(target, LayoutRef):
            return target
        if isinstance(target, str):
            return LayoutRef(target, None, location)
        if callable(target):
            sub = Builder(
                self._proxy,
                f"{self.name}/{next(_anon_ids)}",
                location,
                self._registry,
                anonymous=True,
            )
            target(sub)
            return LayoutRef(None, sub, location)
        raise ConfigError(
            f"expected a layout name or a function building one, got {target!r}", *location
        )

    def to(self, target: LayoutArg) -> Builder:
        """Give the last joint filter its sub-pipeline, or continue in ``target``."""
        location = caller_location()
        last = self._pending[-1] if self._pending else None
        if last is not None and last.cls.joint and not last.subs:
            last.subs.append(self.ref(target, location))
            return self
        if isinstance(target, str):
            link = self._registry.get("link")
            if link is None:
                raise ConfigError("the link filter is not registered", *location)
            return self._add("link", link, (target,), {}, location)
        if callable(target):
            target(self)
            return self
        raise ConfigError(
            f".to() expects a layout name or a function building one, got {target!r}",
            *location,
        )

    # Building ---------------------------------------------------------------

    def build(self, named: Mapping[str, Builder]) -> Layout:
        """Validate and freeze the layout (and every layout it refers to)."""
        if self._built is not None:
            return self._built
        specs: list[FilterSpec] = []
        refs: list[LayoutRef] = []
        for p in self._pending:
            if p.cls.joint and not p.subs:
                raise ConfigError(
                    f"{p.name}() is a joint filter: follow it with .to(...) giving its "
                    "sub-pipeline",
                    *p.location,
                )
            refs.extend(p.subs)
            refs.extend(_refs_in(p.args, p.kwargs.values()))
            try:
                state = p.cls.shared(*p.args, **p.kwargs)
            except ConfigError as exc:
                raise ConfigError(f"{p.name}(): {exc.reason}", *p.location) from None
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{p.name}(): {exc}", *p.location) from None
            specs.append(
                FilterSpec(
                    p.name,
                    p.cls,
                    p.args,
                    MappingProxyType(p.kwargs),
                    p.location,
                    tuple(p.subs),
                    state,
                )
            )
        self._built = Layout(self.name, tuple(specs), self.location, self.anonymous)
        for ref in refs:
            _resolve(ref, named)
        return self._built

    def __repr__(self) -> str:
        return f"<Builder {self.name!r}: {' -> '.join(p.name for p in self._pending)}>"


def _resolve(ref: LayoutRef, named: Mapping[str, Builder]) -> None:
    if ref.layout is not _UNRESOLVED:
        return
    if ref.builder is not None:
        ref.layout = ref.builder.build(named)
        return
    assert ref.name is not None
    builder = named.get(ref.name)
    if builder is None:
        close = difflib.get_close_matches(ref.name, list(named), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        known = f"; defined: {', '.join(sorted(named))}" if named and not hint else ""
        raise ConfigError(f"no pipeline named {ref.name!r}{hint}{known}", *ref.location)
    if builder._built is not None:
        ref.layout = builder._built
    else:
        ref.layout = builder.build(named)


def _refs_in(*groups: Any) -> list[LayoutRef]:
    found: list[LayoutRef] = []
    stack: list[Any] = [v for g in groups for v in g]
    while stack:
        v = stack.pop()
        if isinstance(v, LayoutRef):
            found.append(v)
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.values())
    return found


_signatures: dict[type[Filter], inspect.Signature] = {}


def _signature(cls: type[Filter]) -> inspect.Signature:
    sig = _signatures.get(cls)
    if sig is None:
        sig = _signatures[cls] = inspect.signature(cls)
    return sig


#: Parameters whose values ``trioxy check`` and logs never print (passwords and
#: user tables given inline in a script); a function given instead shows its name.
SECRET_PARAMETERS = frozenset({"password", "passwords", "users", "secret", "token", "passphrase"})


def _positional_names(cls: type[Filter]) -> list[str]:
    """The names of ``cls``'s parameters that positional arguments bind to."""
    names = []
    for param in _signature(cls).parameters.values():
        if param.kind not in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            break
        names.append(param.name)
    return names


def _short(value: Any, name: str = "") -> str:
    if name in SECRET_PARAMETERS and value is not None and not callable(value):
        return "***"
    if isinstance(value, LayoutRef):
        return repr(value.name) if value.name else "<sub-pipeline>"
    if callable(value) and hasattr(value, "__name__"):
        fn_name: str = value.__name__
        return "<lambda>" if fn_name == "<lambda>" else fn_name
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
