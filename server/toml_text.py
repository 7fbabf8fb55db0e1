"""TOML out (Python reads TOML with tomllib, or tomli before 3.11, but writes none): enough for
run configurations and records, which hold strings, numbers, booleans and lists of them."""

from __future__ import annotations

import json
import math
from typing import Any


def dumps(sections: dict[str, dict[str, Any]]) -> str:
    """`{"section": {"key": value}}` as TOML tables. None values are left out (TOML has no
    null): a left-out key means "the default". JSON's string escapes are valid TOML."""
    lines: list[str] = []
    for section, values in sections.items():
        if lines:
            lines.append("")
        lines.append(f"[{section}]")
        for key, value in values.items():
            if value is not None:
                lines.append(f"{key} = {_value(value)}")
    return "\n".join(lines) + "\n"


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)
