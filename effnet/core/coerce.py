"""Turn user text (or fire's parsed values) into a dataclass field's declared type, or say why not."""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from effnet.core.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def field_types(cls: type) -> dict[str, Any]:
    """Resolved type of every dataclass field of `cls`."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def type_name(tp: Any) -> str:
    inner, optional = _unwrap_optional(tp)
    if typing.get_origin(inner) is typing.Literal:
        name = "|".join(str(a) for a in typing.get_args(inner))
    else:
        name = getattr(inner, "__name__", str(inner))
    return f"{name} or None" if optional else name


def coerce(name: str, value: Any, tp: Any) -> Any:
    """Convert `value` to type `tp` (int, float, bool, str, Literal[...] or Optional of those)."""
    inner, optional = _unwrap_optional(tp)
    if optional and (value is None or (isinstance(value, str) and value.strip().lower() in {"none", "null", ""})):
        return None
    bad = ConfigError(f"{name}: expected {type_name(tp)}, got {value!r}")
    if typing.get_origin(inner) is typing.Literal:
        choices = typing.get_args(inner)
        text = str(value).strip()
        for choice in choices:
            if text == str(choice):
                return choice
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(map(str, choices))}")
    if inner is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise bad
    if inner is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value).strip())
        except ValueError:
            raise bad from None
    if inner is float:
        if isinstance(value, bool):
            raise bad
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad from None
    if inner is str:
        if isinstance(value, (list, tuple, dict)):
            raise bad
        return str(value)
    raise ConfigError(f"{name}: cannot be set from the command line (type {type_name(tp)})")
