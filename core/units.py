"""Sizes and rates written with units, as in the configuration files (`50MiB`, `100Mbit/s`)."""

from __future__ import annotations

import re

from core.ids import InvalidValue

_NUMBER_AND_UNIT = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")

# Byte multipliers. SI prefixes are powers of 1000 and IEC prefixes powers of 1024,
# as in the IEC 80000-13 standard.
_BYTE_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
    "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4,
}

# Bit multipliers for rates such as `100Mbit/s`, converted to bytes.
_BIT_UNITS = {
    "bit": 1 / 8, "kbit": 1000 / 8, "mbit": 1000**2 / 8, "gbit": 1000**3 / 8,
    "kibit": 1024 / 8, "mibit": 1024**2 / 8, "gibit": 1024**3 / 8,
}


def parse_size(text: str | int, name: str = "size") -> int:
    """Parse a byte count such as `1048576`, `64MiB` or `2GB` into bytes."""
    if isinstance(text, bool):
        raise InvalidValue(f"invalid {name} {text!r}: expected a byte count such as 64MiB")
    if isinstance(text, int):
        if text < 0:
            raise InvalidValue(f"invalid {name} {text!r}: must not be negative")
        return text

    match = _NUMBER_AND_UNIT.match(str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _BYTE_UNITS:
        raise InvalidValue(
            f"invalid {name} {text!r}: expected a number with an optional unit "
            "(B, KB, MB, GB, KiB, MiB, GiB), for example 64MiB"
        )
    return int(float(match.group(1)) * _BYTE_UNITS[unit])


def parse_rate(text: str | int, name: str = "rate") -> int:
    """Parse a rate such as `50MiB/s`, `100Mbit/s` or `0` (no limit) into bytes per second."""
    if isinstance(text, bool):
        raise InvalidValue(f"invalid {name} {text!r}: expected a rate such as 50MiB/s")
    if isinstance(text, int):
        if text < 0:
            raise InvalidValue(f"invalid {name} {text!r}: must not be negative")
        return text

    body = str(text).strip()
    if body.lower().endswith("/s"):
        body = body[:-2]
    elif body.lower().endswith("ps"):
        body = body[:-2]

    match = _NUMBER_AND_UNIT.match(body)
    if match is None:
        raise InvalidValue(
            f"invalid {name} {text!r}: expected a number with a unit per second, "
            "for example 50MiB/s, 100Mbit/s, or 0 for no limit"
        )
    number, unit = float(match.group(1)), match.group(2).lower()
    if unit in _BIT_UNITS:
        return int(number * _BIT_UNITS[unit])
    if unit in _BYTE_UNITS:
        return int(number * _BYTE_UNITS[unit])
    raise InvalidValue(
        f"invalid {name} {text!r}: unknown unit {match.group(2)!r}; use B, KB, MB, KiB, MiB, "
        "GiB, or kbit, Mbit, Gbit, each per second"
    )


def format_size(count: float) -> str:
    """Format a byte count for people, in IEC units."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024:
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.1f} TiB"
