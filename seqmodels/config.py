"""Model configs: small dataclasses that round-trip through plain JSON with type checks.

A config read from a package is untrusted input, so ``from_dict`` checks every field's name and
type and the sizes that allocate memory, and raises ``ValueError`` naming the field.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar, Union

C = TypeVar("C", bound="ModelConfig")

# Upper limits on sizes read from untrusted configs: far above any model this project trains,
# low enough that a hostile config cannot make us allocate terabytes before the shape checks run.
MAX_WIDTH = 1 << 16
MAX_COUNT = 1 << 12


@dataclasses.dataclass
class ModelConfig:
    """Base class: ``to_dict`` gives plain JSON values; ``from_dict`` validates and rebuilds."""

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls: type[C], data: Any, where: str = "config") -> C:
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)} for {cls.__name__}")
        kwargs = {name: _coerce(hints[name], value, f"{where}.{name}") for name, value in data.items()}
        try:
            return cls(**kwargs)
        except TypeError as err:  # a required field is missing
            raise ValueError(f"{where}: {err}") from None


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Check ``value`` (from JSON) against the annotation ``tp`` and convert lists to tuples."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, where)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {tp}")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ValueError(f"{where}: expected one of {typing.get_args(tp)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {type(value).__name__}")
        if len(value) > MAX_COUNT:
            raise ValueError(f"{where}: {len(value)} entries is more than the limit {MAX_COUNT}")
        (item,) = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return tuple(_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return tp.from_dict(value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        if abs(value) > MAX_WIDTH:
            raise ValueError(f"{where}: {value} is outside the allowed range (|value| <= {MAX_WIDTH})")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{where}: expected a finite number, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {type(value).__name__}")
        if len(value) > 10_000:
            raise ValueError(f"{where}: string of {len(value)} characters is too long")
        return value
    raise TypeError(f"{where}: unsupported config annotation {tp!r}")  # a programming error, not bad input
