"""A tenant's tracking server cannot stall the operator for everyone: servers that drip an
answer a byte at a time, answer a maintenance page or an endless body are each reported in
their own resources' RegistryAvailable, while other resources go on rolling out, and the
operator's memory stays bounded. Against the real MLflow server, the operator and the test
cluster; the hostile servers are the tests' own."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import client

from aliasop_dev import bikes, local

from resources import Versions, View
from support import wait_for

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("operator")]

DRIP_SECONDS = 3.0  # between two bytes of a dripping answer: every read is quick
HUGE_BYTES = 512 * 1024 * 1024  # an endless-looking answer, without Content-Length
MAINTENANCE_PAGE = b"<html><body><h1>Down for maintenance</h1>back at 20:00</body></html>"
MIB = 1024 * 1024


class HostileRegistry:
    """Tracking servers a tenant may name, by the first segment of the path: `/drip` answers
    200 and then a byte every DRIP_SECONDS for ever, `/maintenance` a 200 HTML page, `/huge`
    a 200 of HUGE_BYTES. Counts the requests to each."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.released = threading.Event()  # ends the answers under way at teardown
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                kind = self.path.split("/")[1]
                server.requests[kind] += 1
                self.send_response(200)
                if kind == "maintenance":
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(MAINTENANCE_PAGE)))
                    self.end_headers()
                    self.wfile.write(MAINTENANCE_PAGE)
                    return
                self.send_header("Content-Type", "application/json")
                self.end_headers()  # HTTP/1.0: the body ends when the connection does
                try:
                    if kind == "drip":
                        while not server.released.wait(DRIP_SECONDS):
                            self.wfile.write(b" ")
                            self.wfile.flush()
                    else:
                        chunk = b" " * MIB
                        for _ in range(HUGE_BYTES // MIB):
                            if server.released.is_set():
                                break
                            self.wfile.write(chunk)
                except OSError:  # the operator gave up on the answer: as it should
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"

    def start(self) -> HostileRegistry:
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.released.set()
        self._http.shutdown()
        self._http.server_close()


@pytest.fixture
def hostile() -> Iterator[HostileRegistry]:
    server = HostileRegistry().start()
    try:
        yield server
    finally:
        server.stop()


def registry_unavailable(view: View) -> str | None:
    """The message of `view`'s RegistryAvailable condition once it is False."""
    conditions = {c["type"]: c for c in view.status().get("conditions", [])}
    available = conditions.get("RegistryAvailable")
    if available is None or available["status"] != "False":
        return None
    assert available["reason"] == "RegistryUnavailable"
    message: str = available["message"]
    return message


def peak_memory(operator: local.LocalProcess) -> int:
    """The operator's resident memory at its highest so far (VmHWM), in bytes."""
    assert operator.process is not None
    with open(f"/proc/{operator.process.pid}/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def test_twenty_dripping_registries_do_not_stall_another_resource_s_rollout(
    hostile: HostileRegistry,
    two_versions: Versions,
    model_name: str,
    mlflow_uri: str,
    serving_v1: Callable[..., View],
    mdeps: Callable[..., Any],
    view: Callable[[str], View],
) -> None:
    _, v2 = two_versions
    bikes_view = serving_v1(replicas=1)  # polls every 5 s
    dripping = [f"drip-{i}" for i in range(20)]
    for name in dripping:  # twenty models: twenty watches of their own
        mdeps(
            name,
            model=f"models:/{name}@champion",
            trackingUri=f"{hostile.url}/drip",
            pollIntervalSeconds=5,
        )
    wait_for(lambda: hostile.requests["drip"] >= 4, 30, message="dripping answers under way")

    bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)
    # Its usual time: the next poll (5 s) and a rollout. On a registry client whose slots
    # the dripping answers hold, the move is never seen.
    wait_for(lambda: bikes_view.template_version() == v2.version, 20, message="template at v2")
    bikes_view.wait_serving(v2.version)

    expected = {
        f"MLflow at {hostile.url}/drip gave no complete answer within 5 s",
        f"MLflow at {hostile.url}/drip got none of its 4 request slots within 5 s: its "
        "answers to earlier requests are still awaited",
    }
    for name in dripping:
        message = wait_for(lambda name=name: registry_unavailable(view(name)), 60, message=name)
        assert message in expected
        assert view(name).deployment() is None


def test_a_maintenance_page_and_a_huge_answer_are_reported_with_memory_bounded(
    hostile: HostileRegistry,
    operator: local.LocalProcess,
    mdeps: Callable[..., Any],
    view: Callable[[str], View],
) -> None:
    peak_before = peak_memory(operator)
    for kind in ("maintenance", "huge"):
        mdeps(
            kind,
            model="models:/bikes@champion",
            trackingUri=f"{hostile.url}/{kind}",
            pollIntervalSeconds=5,
        )

    maintenance = wait_for(lambda: registry_unavailable(view("maintenance")), 60, message="page")
    assert maintenance == (
        f"MLflow at {hostile.url}/maintenance answered HTTP 200 with an HTML page, not "
        "MLflow's JSON"
    )
    huge = wait_for(lambda: registry_unavailable(view("huge")), 60, message="huge answer")
    assert huge == (
        f"MLflow at {hostile.url}/huge answered with more than 4194304 bytes, more than any "
        "MLflow answer aliasop reads"
    )
    # The polls go on (a failed one is retried within seconds), each refused at the cap.
    asked = hostile.requests["huge"]
    wait_for(lambda: hostile.requests["huge"] >= asked + 2, 30, message="more huge answers")
    assert peak_memory(operator) - peak_before < 64 * MIB  # HUGE_BYTES read whole: 512 MiB


@pytest.mark.parametrize(
    "uri",
    [
        "http://reader:secret@mlflow.mlflow:5000",
        "http://mlflow.mlflow:5000/?token=secret",
        "http://mlflow.mlflow:5000/#fragment",
        "http://mlflow:abc",
    ],
    ids=["credentials", "query", "fragment", "port"],
)
def test_a_tracking_uri_with_credentials_query_or_fragment_is_refused_at_apply(
    mdeps: Callable[..., Any], uri: str
) -> None:
    with pytest.raises(client.ApiException) as refused:
        mdeps("refused", model="models:/bikes@champion", trackingUri=uri)
    assert refused.value.status == 422
    assert "spec.trackingUri" in refused.value.body
