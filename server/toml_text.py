"""TOML out, through tomli-w (Python reads TOML but writes none)."""

from __future__ import annotations

from typing import Any

import tomli_w


def dumps(tables: dict[str, dict[str, Any]]) -> str:
    """`{"table": {"key": value}}` as TOML tables. None values are left out: TOML has no null,
    and a run file's missing key means "the default"."""
    kept = {
        name: {key: value for key, value in values.items() if value is not None}
        for name, values in tables.items()
    }
    return tomli_w.dumps(kept)
