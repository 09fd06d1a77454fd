"""build123d, imported without what it loads for one rarely used function.

`import build123d` imports `build123d.brep_from_stl`, which does `from sklearn.cluster import
DBSCAN` at its top for `detect_primitives` alone; sklearn pulls scipy.stats with it. Together
they are ~570 of build123d's 2400 modules and a sixth of its import (`simjail bench` prints both
import times). `defer_unused_imports` binds a stand-in for `DBSCAN` while build123d is imported: the
first call (or attribute) of it imports the real sklearn.cluster, puts the real class where the
stand-in was and forwards to it. Nothing else changes: the stand-in module is out of
`sys.modules` again before build123d's import returns, so a design that imports sklearn itself
gets the real one, and `detect_primitives` behaves exactly as before. Installed by the build
child before the design's code runs, and by the zygote before it imports build123d.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from importlib.machinery import ModuleSpec
from typing import Any

DEFERRED = {"sklearn.cluster": ("DBSCAN",)}
"""Module → names build123d imports from it at its top but uses only inside functions."""
OWNER = "build123d.brep_from_stl"
"""The module whose global names are bound to the stand-ins."""


class Deferred:
    """Stands for `module.name` until it is first used."""

    def __init__(self, module: str, name: str) -> None:
        self._module = module
        self._name = name

    def resolve(self) -> Any:
        real = getattr(importlib.import_module(self._module), self._name)
        owner = sys.modules.get(OWNER)
        if owner is not None and getattr(owner, self._name, None) is self:
            setattr(owner, self._name, real)
        return real

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):
            raise AttributeError(attr)
        return getattr(self.resolve(), attr)

    def __repr__(self) -> str:
        return f"<deferred {self._module}.{self._name}>"


class _Finder(importlib.abc.MetaPathFinder):
    """Finds build123d as the other finders do and wraps its loader: the stand-ins are in
    sys.modules exactly while build123d's top level runs."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> ModuleSpec | None:
        if name != "build123d":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)  # once: later imports find it in sys.modules
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _WithStandIns(spec.loader)
        return spec


class _WithStandIns(importlib.abc.Loader):
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def create_module(self, spec: ModuleSpec) -> types.ModuleType | None:
        created: types.ModuleType | None = self.inner.create_module(spec)
        return created

    def exec_module(self, module: types.ModuleType) -> None:
        stubs: dict[str, types.ModuleType] = {}
        for name, names in DEFERRED.items():
            if name in sys.modules or name.partition(".")[0] in sys.modules:
                continue  # already real: nothing to defer
            stub = types.ModuleType(name, "simjail's stand-in until first use")
            for attr in names:
                setattr(stub, attr, Deferred(name, attr))
            stubs[name] = stub
        sys.modules.update(stubs)
        try:
            self.inner.exec_module(module)
        finally:
            for name, stub in stubs.items():
                if sys.modules.get(name) is stub:
                    del sys.modules[name]
            # The module's loader is the real one again, as if nothing had stood in.
            module.__loader__ = self.inner
            if module.__spec__ is not None:
                module.__spec__.loader = self.inner


def defer_unused_imports() -> None:
    """From now on, `import build123d` binds DEFERRED to stand-ins (see the module docstring).
    Does nothing once build123d is imported; call it before the code that imports it."""
    if "build123d" in sys.modules or any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())
