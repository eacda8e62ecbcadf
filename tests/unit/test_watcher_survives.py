"""The shared poll of a model survives any exception: it is reported to the resources
watching the model, logged, and the poll goes on."""

import logging

import pytest
from test_watcher import SERVER, FakeRegistry, Woken, wait_until

from aliasop.models import ModelUri, Reason, RegistryProblem
from aliasop.watcher import AliasWatcher

pytestmark = pytest.mark.timeout(20)


class BrokenRegistry(FakeRegistry):
    """Raises `failure` (not a RegistryProblem) while it is set."""

    def __init__(self) -> None:
        super().__init__()
        self.failure: Exception | None = None

    async def aliases(self, tracking_uri: str, model: str) -> dict[str, str]:
        if self.failure is not None:
            self.requests += 1
            self.changed.set()
            raise self.failure
        return await super().aliases(tracking_uri, model)


async def test_an_unforeseen_exception_is_reported_logged_and_polling_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = BrokenRegistry()
    woken = Woken(registry.changed)
    watcher = AliasWatcher(registry, wake=woken)  # type: ignore[arg-type]
    uri = ModelUri.parse("models:/bikes@champion")
    watcher.watch(("ns", "a"), (SERVER, "bikes"), interval=0.1)
    assert (await watcher.resolve(SERVER, uri)).version == "1"

    registry.failure = KeyError("registered_model")
    with caplog.at_level(logging.ERROR, logger="aliasop.watcher"):
        await wait_until(lambda: bool(woken), woken.changed)
        with pytest.raises(RegistryProblem) as raised:
            await watcher.resolve(SERVER, uri)
    assert raised.value.kind is Reason.REGISTRY_UNAVAILABLE
    assert raised.value.message == "the operator could not read MLflow's answer (its log says why)"
    assert "reading the aliases of 'bikes' at http://mlflow:5000 failed" in caplog.text
    assert "KeyError" in caplog.text

    failed = registry.requests
    await wait_until(lambda: registry.requests >= failed + 2, registry.changed)  # polls on
    registry.failure = None
    registry.aliases_by_model["bikes"] = {"champion": "2"}
    await wait_until(lambda: len(woken) >= 2, woken.changed)  # back: woken again
    assert (await watcher.resolve(SERVER, uri)).version == "2"
    watcher.unwatch(("ns", "a"))
