"""Frozen dataclasses <-> plain JSON/YAML values, checking names and types: every config of the package and the
model card go through these two functions."""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Union, get_args, get_origin, get_type_hints

from bratsseg.errors import BratsSegError


def to_dict(obj: Any) -> Any:
    """A dataclass (nested) as plain JSON/YAML values; tuples become lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(options[0], value, where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise BratsSegError(f"config {where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)  # type: ignore[arg-type]
    if origin is dict:
        if not isinstance(value, dict):
            raise BratsSegError(f"config {where}: expected a mapping, got {value!r}")
        item_type = get_args(tp)[1] if get_args(tp) else Any
        return {str(k): _coerce(item_type, v, f"{where}.{k}") for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise BratsSegError(f"config {where}: expected a list, got {value!r}")
        args = get_args(tp)
        if (len(args) == 2 and args[1] is Ellipsis) or len(args) == 1:
            return tuple(_coerce(args[0], v, where) for v in value)
        if len(args) != len(value):
            raise BratsSegError(f"config {where}: expected {len(args)} entries, got {value!r}")
        return tuple(_coerce(a, v, where) for a, v in zip(args, value, strict=True))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            raise BratsSegError(f"config {where}: expected float, got {value!r}") from None
    if tp is Any:
        return value
    if tp in (int, float, str, bool) and (not isinstance(value, tp) or (tp is int and isinstance(value, bool))):
        raise BratsSegError(f"config {where}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[Any], data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from plain values, checking names and types; missing keys take defaults."""
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise BratsSegError(f"unknown config key(s) {[f'{where}{k}' for k in unknown]}; known: {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}{k}") for k, v in data.items()}
    return cls(**kwargs)
