"""Configurations (frozen dataclasses) to JSON-friendly dicts and back: the one round trip
that manifests, checkpoints and run records use.

`to_dict` turns nested dataclasses into dicts and tuples into lists; `from_dict(cls, d)`
inverts it from the field types: nested dataclasses (also `X | None`) are rebuilt, lists
become tuples where the field is a tuple, and a key the class does not know is a
ValueError that names it (a file written by another version is never read silently).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-friendly dict of a dataclass instance (nested ones included)."""
    return _plain(dataclasses.asdict(cfg))


def from_dict(cls: type[T], d: dict[str, Any]) -> T:
    """`cls` built from `to_dict`'s output (or a hand-written subset of its fields)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {unknown}")
    return cls(**{k: _typed(hints[k], v) for k, v in d.items()})


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def _typed(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        for a in options:  # a nested configuration given as a dict
            if dataclasses.is_dataclass(a) and isinstance(value, dict):
                return from_dict(a, value)
        return _typed(options[0], value) if len(options) == 1 else value
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return from_dict(hint, value)
    if origin is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_typed(args[0], v) for v in value)
        if args and len(args) == len(value):
            return tuple(_typed(a, v) for a, v in zip(args, value, strict=True))
        return tuple(value)
    return value
