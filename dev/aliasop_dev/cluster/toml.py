"""A TOML writer for the little TOML the cluster writes (containerd's configuration): nested
dicts of strings, booleans, integers and lists of them. Python reads TOML (tomllib) but does not
write it."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def dumps(table: Mapping[str, Any]) -> str:
    """`table` as a TOML document: each table's values, then its sub-tables under `[a.b]`."""
    return "\n".join(_table(table, ()))


def _table(table: Mapping[str, Any], path: tuple[str, ...]) -> list[str]:
    values = {k: v for k, v in table.items() if not isinstance(v, Mapping)}
    tables = {k: v for k, v in table.items() if isinstance(v, Mapping)}
    lines: list[str] = []
    # A table holding only tables needs no header of its own (`[a.b]` implies `[a]`).
    if path and values:
        lines += ["", f"[{'.'.join(_key(k) for k in path)}]"]
    lines += [f"{_key(key)} = {_value(value)}" for key, value in values.items()]
    for key, sub in tables.items():
        lines += _table(sub, (*path, key))
    return lines


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def _value(value: Any) -> str:
    # bool before int: True is an int.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | str):
        # A JSON string is a TOML basic string (the same escapes).
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    raise TypeError(f"no TOML for {value!r}")
