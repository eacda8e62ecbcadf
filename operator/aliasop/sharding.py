"""Shards: operators that each follow the ModelDeployments a label selector picks.

The API server filters both watches (ModelDeployments, and the children), so a shard neither
receives nor keeps anything of another shard's resources. For the children to be filtered
like their owner, they carry the owner's labels that the selector names (`shard_labels`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

# One requirement of a Kubernetes label selector: `key`, `!key`, `key=value`, `key==value`,
# `key!=value`, `key in (a,b)`, `key notin (a,b)`.
_KEY = r"(?:[a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_REQUIREMENT = re.compile(
    rf"\s*(?:!\s*(?P<absent>{_KEY})"
    rf"|(?P<key>{_KEY})\s*(?:(?:==|=|!=)\s*{_VALUE}"
    rf"|\s(?:in|notin)\s*\(\s*{_VALUE}(?:\s*,\s*{_VALUE})*\s*\))?)\s*"
)


def selector_keys(selector: str) -> frozenset[str]:
    """The label keys `selector` names. Raises ValueError when it is not a label selector."""
    keys: set[str] = set()
    for requirement in _split(selector):
        match = _REQUIREMENT.fullmatch(requirement)
        if match is None:
            raise ValueError(f"not a label selector requirement: {requirement.strip()!r}")
        keys.add(match["absent"] or match["key"])
    return frozenset(keys)


def shard_labels(labels: Mapping[str, str] | None, keys: frozenset[str]) -> dict[str, str]:
    """Of a ModelDeployment's `labels`, those its children carry: the ones the selector
    names."""
    return {key: value for key, value in (labels or {}).items() if key in keys}


def lease_name(selector: str) -> str:
    """The default Lease of a shard: its own, so that shards never wait on each other."""
    if not selector:
        return "aliasop"
    return f"aliasop-{hashlib.sha256(selector.encode()).hexdigest()[:10]}"


def _split(selector: str) -> list[str]:
    """Requirements, split at the commas outside parentheses."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(selector):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(selector[start:index])
            start = index + 1
    parts.append(selector[start:])
    return parts if selector.strip() else []
