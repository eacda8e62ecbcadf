"""What canary analyses measure, for real: the tests' own HTTP server (Prometheus's scrape
target, and the web provider's answers) and a Prometheus built from its Go module
(tests/tools/build-prometheus.sh) scraping it."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from support import cache_dir, wait_for

PROMETHEUS_BINARY = cache_dir() / "tools" / "bin" / "prometheus"


@dataclass
class Answer:
    """A canned answer of the test's HTTP server."""

    body: bytes = b""
    status: int = 200
    content_type: str = "application/json"
    delay: float = 0.0  # seconds before answering (a slow server)
    headers: dict[str, str] = field(default_factory=dict)


def label_value(value: str) -> str:
    """A label value as the Prometheus text format writes it."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class TestServer:
    """The tests' HTTP server: `/metrics` in the Prometheus text format from `series`, and the
    canned `answers` by path; it keeps what it was asked (path, query, headers)."""

    __test__ = False  # not a test class

    def __init__(self) -> None:
        self.series: dict[str, float] = {}  # 'name{labels}' -> value
        self.answers: dict[str, Answer] = {}
        self.requests: list[tuple[str, dict[str, str], dict[str, str]]] = []
        self.released = threading.Event()  # ends the waits of slow answers at teardown
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                server.requests.append((url.path, dict(parse_qsl(url.query)), dict(self.headers)))
                if url.path == "/metrics":
                    lines = [f"{key} {value!r}" for key, value in dict(server.series).items()]
                    answer = Answer("\n".join([*lines, ""]).encode(), content_type="text/plain")
                else:
                    answer = server.answers.get(url.path, Answer(b"not here", status=404))
                if answer.delay:
                    server.released.wait(answer.delay)
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(answer.body)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self.port: int = self._http.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> TestServer:
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.released.set()
        self._http.shutdown()
        self._http.server_close()

    def answer_json(self, path: str, document: Any, **kwargs: Any) -> str:
        self.answers[path] = Answer(json.dumps(document).encode(), **kwargs)
        return f"{self.url}{path}"


def instant(prometheus: str, query: str) -> list[dict[str, Any]]:
    """The vector an instant query gives now (the test's own look, not the provider's)."""
    body = httpx.get(f"{prometheus}/api/v1/query", params={"query": query}, timeout=5).json()
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def expose(
    server: TestServer, prometheus: str, name: str, labels: dict[str, str], value: float
) -> None:
    """Serve a sample and wait until Prometheus has scraped it."""
    selector = ",".join(f'{k}="{label_value(v)}"' for k, v in sorted(labels.items()))
    server.series[f"{name}{{{selector}}}"] = value
    match = ",".join(f'{k}="{label_value(v)}"' for k, v in sorted(labels.items()))

    def scraped() -> bool:
        found = instant(prometheus, f"{name}{{{match}}}")
        return len(found) == 1 and float(found[0]["value"][1]) == value

    wait_for(scraped, timeout=30, interval=0.2, message=f"Prometheus to scrape {name}={value}")
