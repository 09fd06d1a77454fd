"""A stand-in for `ocp_vscode` (build123d's viewer) inside the build jail.

Published build123d designs end with `show(part)` or `show_object(part)`; in the jail there is
no viewer, so these record what was shown instead, and every other function of the viewer's API
(`set_port`, `set_defaults`, `Camera`, `Animation`, ...) does nothing. When a design defines
neither `build()` nor `result`, what the viewer would display at the end is the result (README
"Writing a design"):

- `show(*objs)` replaces what is displayed with `objs` (as the viewer does);
- `show_object(obj, clear=False)` adds `obj` (after clearing with `clear=True`);
- `show_all()` displays every CAD object among the caller's variables;
- `show_clear()` / `reset_show()` display nothing.

`names=[...]` (show) and `name=` (show_object) label shown shapes that have no label yet, as the
viewer titles them. Trusted code, no data: the build child puts this directory on the jailed
`sys.path`; it is never installed as the real package. It is simjail's own code but runs next
to the design, so nothing it records is believed beyond what the geometry checks prove.
"""

from __future__ import annotations

import contextlib
import enum
import inspect
from collections.abc import Callable, Iterable
from typing import Any

__version__ = "simjail-stand-in"

_shown: list[tuple[Any, str | None]] = []


def shown() -> list[tuple[Any, str | None]]:
    """What the viewer would display now: (object, name) pairs in the order shown."""
    return list(_shown)


def _is_cad(obj: Any) -> bool:
    try:
        from build123d import Shape
    except ImportError:  # pragma: no cover - build123d is always there in the build jail
        return False
    if isinstance(obj, Shape):
        return True
    if isinstance(obj, list | tuple):
        return any(_is_cad(o) for o in obj)
    return any(getattr(type(obj), attr, None) is not None for attr in ("part", "sketch", "line"))


def _shape(obj: Any) -> Any:
    """A builder's shape (BuildPart.part, BuildSketch.sketch, BuildLine.line); else `obj`."""
    for attr in ("part", "sketch", "line"):
        if getattr(type(obj), attr, None) is not None:
            return getattr(obj, attr)
    return obj


def _add(obj: Any, name: str | None) -> None:
    obj = _shape(obj)
    if name is not None and getattr(obj, "label", None) == "":
        with contextlib.suppress(AttributeError, TypeError):
            obj.label = str(name)
    if all(o is not obj for o, _ in _shown):
        _shown.append((obj, name))


def show(*cad_objs: Any, names: Iterable[str] | None = None, **_options: Any) -> None:
    """Display exactly `cad_objs` (replacing what was displayed)."""
    _shown.clear()
    labels = list(names) if names is not None else []
    for i, obj in enumerate(cad_objs):
        _add(obj, labels[i] if i < len(labels) else None)


def show_object(
    obj: Any, name: str | None = None, options: Any = None, parent: Any = None,
    clear: bool = False, **_options: Any,
) -> None:  # fmt: skip
    """Add `obj` to what is displayed (`clear=True` first displays nothing)."""
    if clear:
        _shown.clear()
    _add(obj, name)


def show_all(variables: dict[str, Any] | None = None, exclude: Iterable[str] | None = None,
             **_options: Any) -> None:  # fmt: skip
    """Display every CAD object among the caller's variables (or `variables`)."""
    if variables is None:
        frame = inspect.currentframe()
        caller = frame.f_back if frame is not None else None
        variables = dict(caller.f_locals) if caller is not None else {}
    skip = set(exclude or ())
    _shown.clear()
    for name, value in variables.items():
        if not name.startswith("_") and name not in skip and _is_cad(value):
            _add(value, name)


def show_clear(*_args: Any, **_kwargs: Any) -> None:
    _shown.clear()


reset_show = show_clear


def _nothing(*_args: Any, **_kwargs: Any) -> None:
    """The viewer's settings and connection calls: nothing to do without a viewer."""


set_port = set_defaults = reset_defaults = set_viewer_config = _nothing
save_screenshot = push_object = workspace_config = _nothing


def get_port() -> int:
    return 3939


def get_defaults() -> dict[str, Any]:
    return {}


def status(*_args: Any, **_kwargs: Any) -> dict[str, Any]:
    return {}


class Camera(enum.Enum):
    RESET = "reset"
    CENTER = "center"
    KEEP = "keep"


class Collapse(enum.Enum):
    NONE = 0
    LEAVES = 1
    ALL = 2
    ROOT = 3
    C1 = 4


class Animation:
    """Records nothing: an animation is for the viewer only."""

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        pass

    def add_track(self, *_args: Any, **_kwargs: Any) -> None:
        pass

    def animate(self, *_args: Any, **_kwargs: Any) -> None:
        pass


def __getattr__(name: str) -> Callable[..., None]:
    """Any other function of the viewer's API (it grows with every release) is harmless."""
    if name.startswith("__"):
        raise AttributeError(name)
    return _nothing
