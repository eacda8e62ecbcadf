"""`aliasop run` with a naive resolver, for the benchmark's comparison only: every resolution
asks MLflow itself, where aliasop's watcher asks once per model and interval for everyone.

    python bench/naive_operator.py run --all-namespaces ...
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from aliasop.cli import main
from aliasop.interfaces import ModelKey, ResourceKey
from aliasop.models import ModelUri, ResolvedVersion
from aliasop.registry import MlflowRegistry


class DirectResolver:
    """An interfaces.Resolver that watches nothing and asks MLflow at every resolution."""

    def __init__(self, registry: MlflowRegistry) -> None:
        self._registry = registry

    def watch(self, resource: ResourceKey, model: ModelKey, interval: float) -> None:
        pass

    def unwatch(self, resource: ResourceKey) -> None:
        pass

    async def resolve(self, tracking_uri: str, uri: ModelUri) -> ResolvedVersion:
        return await self._registry.resolve(tracking_uri, uri)

    async def model_changed(self, model: str, aliases: bool) -> int:
        return 0


def naive(registry: MlflowRegistry, wake: Callable[[ResourceKey], None]) -> DirectResolver:
    return DirectResolver(registry)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:], make_resolver=naive))
