"""Client-supplied text in messages, always short: a hostile 10,000-character name must not
turn an error into a status trailer too large to send."""

from __future__ import annotations

QUOTE_LIMIT = 40


def quote(text: object, limit: int = QUOTE_LIMIT) -> str:
    """repr() of client-supplied text, cut to `limit` characters (with the full length noted)."""
    value = str(text)
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"
