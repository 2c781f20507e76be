"""Field validators shared by every configuration reader (run config, run file, network table).

Each returns the value or raises a one-line ConfigError naming the field, so a mistake in a
TOML file or a --set flag never surfaces as a traceback deep inside torch or grpc.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from peer.engine.errors import ConfigError


def invalid(name: str, expectation: str, value: Any) -> ConfigError:
    return ConfigError(f"config error: {name} must be {expectation} (got {value!r})")


def as_int(name: str, value: Any, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(name, "an integer", value)
    if minimum is not None and value < minimum:
        raise invalid(name, f"an integer >= {minimum}", value)
    return value


def as_float(name: str, value: Any, low: float | None = None, high: float | None = None,
           low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise invalid(name, "a finite number", value)
    value = float(value)
    if low is not None and (value < low or (low_open and value == low)):
        bound = f"> {low}" if low_open else f">= {low}"
        raise invalid(name, f"a number {bound}" + (f" and <= {high}" if high is not None else ""), value)
    if high is not None and value > high:
        raise invalid(name, f"a number <= {high}", value)
    return value


def as_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise invalid(name, "true or false", value)
    return value


def as_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise invalid(name, "one of " + ", ".join(choices), value)
    return value


def check_keys(section: str, data: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        where = f"section [{section}]" if section else "top level"
        raise ConfigError(
            f"config error: unknown key {unknown[0]!r} in {where} (valid: {', '.join(sorted(allowed))})"
        )
