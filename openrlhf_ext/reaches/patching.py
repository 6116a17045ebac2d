"""The one mechanism behind :data:`openrlhf_ext.reaches.REACHES`: attribute patches, for good or for a block.

A patch is ``(target, factory)``: ``target`` is ``"module:attr"`` or ``"module:Class.attr"``;
``factory(original)`` returns the replacement. Patches on modules that are not imported yet are
deferred by a :data:`sys.meta_path` finder and applied right after the module executes, so a Ray
worker that never imports, say, DeepSpeed does not pay ~12 s and ~500 MB to import it just to be
patched (every worker runs the setup hook, including idle pooled ones).

Applying is idempotent: a target already patched by us is left alone. :func:`patched` installs one
patch for a ``with`` block and restores the original after it; :func:`original` tells what a target
held before our first patch.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

Factory = Callable[[Any], Any]
Patch = tuple[str, Factory]


def always(value: Any) -> Factory:
    """Factory that replaces a target by ``value`` itself, whatever the original was."""
    return lambda _original: value

_PATCHED_FLAG = "__openrlhf_ext_cpu_patch__"
_lock = threading.RLock()
_originals: dict[str, Any] = {}  # target -> what it held before our first patch of it


def _split(target: str) -> tuple[str, list[str]]:
    module_name, _, attr_path = target.partition(":")
    if not attr_path:
        raise ValueError(f"patch target {target!r} must look like 'module:attr' or 'module:Class.attr'")
    return module_name, attr_path.split(".")


def _owner(module: ModuleType, target: str) -> tuple[Any, str]:
    """The object holding the patched attribute, and the attribute's name; fails loudly when gone."""
    _, path = _split(target)
    owner: Any = module
    for name in path[:-1]:
        owner = getattr(owner, name)
    if not hasattr(owner, path[-1]):
        raise AttributeError(f"{target} no longer exists: the library changed an injection point")
    return owner, path[-1]


def _apply_to_module(module: ModuleType, target: str, factory: Factory) -> bool:
    """Patch one attribute of an imported module; False when it was patched already."""
    owner, attr = _owner(module, target)
    original = getattr(owner, attr)
    if getattr(original, _PATCHED_FLAG, False):
        return False
    replacement = factory(original)
    _originals.setdefault(target, original)
    try:
        setattr(replacement, _PATCHED_FLAG, True)
    except (AttributeError, TypeError):
        pass  # e.g. a bound builtin: cannot carry the flag, idempotence then relies on the registry
    setattr(owner, attr, replacement)
    return True


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Defers patches until their module has been executed by its real loader."""

    def __init__(self) -> None:
        self.pending: dict[str, list[tuple[str, Factory]]] = {}

    def find_spec(self, fullname, path, target=None):  # noqa: ANN001 (importlib protocol)
        if fullname not in self.pending:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _PatchingLoader(spec.loader, self.pending.pop(fullname))
        return spec


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader, patches: list[tuple[str, Factory]]) -> None:
        self._loader = loader
        self._patches = patches

    def create_module(self, spec):  # noqa: ANN001
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        for target, factory in self._patches:
            _apply_to_module(module, target, factory)

    def __getattr__(self, name: str) -> Any:  # get_source, get_filename, ... for tracebacks
        return getattr(self._loader, name)


_finder = _PostImportFinder()


def apply_patches(patches: Iterable[Patch], *, defer: bool) -> list[str]:
    """Apply ``patches``; return the targets patched now (deferred ones are not listed).

    With ``defer=True`` a patch on a module not imported yet waits for its import; with
    ``defer=False`` the module is imported now.
    """
    done = []
    with _lock:
        for target, factory in patches:
            module_name, _ = _split(target)
            module = sys.modules.get(module_name)
            if module is None and defer:
                if _finder not in sys.meta_path:
                    sys.meta_path.insert(0, _finder)
                _finder.pending.setdefault(module_name, []).append((target, factory))
                continue
            if module is None:
                module = importlib.import_module(module_name)
            if _apply_to_module(module, target, factory):
                done.append(target)
    return done


def is_patched(target: str) -> bool:
    """Whether ``target`` currently holds one of our replacements."""
    module_name, path = _split(target)
    owner: Any = sys.modules.get(module_name)
    for name in path:
        if owner is None:
            return False
        owner = getattr(owner, name, None)
    return bool(getattr(owner, _PATCHED_FLAG, False))


@contextmanager
def swapped(owner: object, attr: str, value: object) -> Iterator[None]:
    """Set ``owner.attr`` to ``value`` for the duration of the block, then restore it."""
    original = getattr(owner, attr)
    setattr(owner, attr, value)
    try:
        yield
    finally:
        setattr(owner, attr, original)


@contextmanager
def patched(target: str, factory: Factory) -> Iterator[None]:
    """Install one patch (importing its module) for the duration of the block."""
    module_name, _ = _split(target)
    owner, attr = _owner(importlib.import_module(module_name), target)
    _originals.setdefault(target, getattr(owner, attr))
    with swapped(owner, attr, factory(getattr(owner, attr))):
        yield


def original(target: str) -> Any:
    """What ``target`` held before our first patch of it (what it holds, if we never patched it).

    For a subclass of a library's class that a reach may already have replaced by a stand-in."""
    module_name, _ = _split(target)
    owner, attr = _owner(importlib.import_module(module_name), target)
    return _originals.get(target, getattr(owner, attr))
