"""Loading user scripts.

:func:`load_script` runs a script file as a fresh module, collects the
:class:`~pipeline.proxy.Proxy` objects it creates, builds (validates) them and
returns a :class:`Script`. Every failure becomes a :class:`ConfigError` whose
``str()`` is one line, ``file:line: reason``, pointing into the script: a syntax
error, an exception the script raised, a builder misuse, an unresolved layout.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from .errors import ConfigError
from .layout import Layout
from .proxy import ListenerSpec, Proxy, collecting

__all__ = ["Script", "load_script"]


@dataclass(frozen=True, slots=True)
class Script:
    """A loaded, validated script."""

    path: Path
    module: ModuleType
    proxies: tuple[Proxy, ...]
    listeners: tuple[ListenerSpec, ...]
    layouts: dict[str, Layout]

    def listener(self, which: int | str = 0) -> ListenerSpec:
        """A listener by index, by port or by ``"host:port"`` (an int smaller than
        the number of listeners is an index)."""
        if isinstance(which, int) and 0 <= which < len(self.listeners):
            return self.listeners[which]
        for spec in self.listeners:
            if which in (spec.port, spec.address, str(spec.port)):
                return spec
        raise KeyError(f"script {self.path} has no listener {which!r}")


_loaded = 0


def load_script(path: str | os.PathLike[str]) -> Script:
    """Run the script at ``path`` and return its validated configuration."""
    global _loaded
    script_path = Path(path)
    if not script_path.is_file():
        raise ConfigError(f"{path}: no such script file")
    filename = str(script_path.resolve())
    _loaded += 1
    module_name = f"trioxy_script_{_loaded}_{script_path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, filename)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: cannot load this file as a Python script")
    module = importlib.util.module_from_spec(spec)
    proxies: list[Proxy] = []
    token = collecting.set(proxies)
    # Let a script import helper modules that sit beside it.
    sys.path.insert(0, str(script_path.parent.resolve()))
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
        if not proxies:
            raise ConfigError(
                "the script creates no Proxy (write: proxy = Proxy(); proxy.listen(8080)...)",
                filename,
                1,
            )
        listeners: list[ListenerSpec] = []
        layouts: dict[str, Layout] = {}
        for proxy in proxies:
            config = proxy.build()
            listeners.extend(config.listeners)
            layouts.update(config.layouts)
    except ConfigError as exc:
        sys.modules.pop(module_name, None)
        if exc.filename is None:  # raised by the script's own code: locate it
            located = _located(exc, filename)
            raise ConfigError(exc.reason, located.filename, located.lineno) from None
        raise
    except SyntaxError as exc:
        sys.modules.pop(module_name, None)
        raise ConfigError(
            f"syntax error: {exc.msg}", exc.filename or filename, exc.lineno or 0
        ) from None
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise _located(exc, filename) from exc
    finally:
        collecting.reset(token)
        sys.path.remove(str(script_path.parent.resolve()))
    return Script(script_path, module, tuple(proxies), tuple(listeners), layouts)


def _located(exc: BaseException, filename: str) -> ConfigError:
    """A ConfigError at the deepest frame of the traceback that is in the script."""
    lineno = 0
    for frame, line in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename == filename:
            lineno = line
    message = str(exc) or type(exc).__name__
    return ConfigError(f"{type(exc).__name__}: {message}", filename, lineno)
