"""Local processes for the demo and the integration tests: an MLflow server and the operator.

Each runs as a child process with its output in a log file, and is stopped with its whole
process group so nothing is left running.
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

# Below the kernel's ephemeral range (32768-60999), where outgoing connections take their
# local ports, and below the real node's (29001-29999, aliasop_dev.cluster.realnode): a port the
# kernel hands out (bind to 0) can be taken by any client connection between this check and the
# server's bind.
_PORTS = range(20000, 29000)
# "i/n": this process picks ports from the i-th of n equal parts of _PORTS only, so that
# processes started side by side (the test workers) never pick the same port between one's
# check and its server's bind.
PORT_SLICE_ENV = "ALIASOP_PORT_SLICE"


def port_range() -> range:
    """The ports free_port picks from: _PORTS, or this process's part of it."""
    index, _, count = os.environ.get(PORT_SLICE_ENV, "0/1").partition("/")
    size = len(_PORTS) // int(count)
    start = _PORTS.start + int(index) * size
    return range(start, start + size)


def free_port() -> int:
    """A TCP port no one listens on, on any address."""
    ports = port_range()
    for port in random.sample(ports, min(200, len(ports))):
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free TCP port in {ports.start}-{ports.stop - 1}")


@dataclass
class LocalProcess:
    name: str
    args: list[str]
    log: Path
    env: dict[str, str]
    cwd: Path | None = None  # where it runs; None: this process's working directory
    process: subprocess.Popen[bytes] | None = None
    log_offset: int = 0  # where the current run's output starts in the log

    def start(self) -> LocalProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log_offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
                cwd=self.cwd,
                start_new_session=True,  # its own process group: stop() reaches the workers too
            )
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, url: str, timeout: float) -> None:
        """Wait until `url` answers 200; fail early, with the log's tail, if the process dies."""

        def ready() -> bool:
            if not self.running:
                raise RuntimeError(f"{self.name} exited early:\n{self.tail()}")
            try:
                return httpx.get(url, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_for(ready, timeout, interval=0.25, message=f"{self.name} at {url}")
        except TimeoutError as error:
            raise TimeoutError(f"{error}:\n{self.tail()}") from None

    def stop(self, timeout: float = 15) -> None:
        if self.process is not None:
            stop_group(self.process.pid, timeout, reap=self.process.poll)
            self.process = None

    def kill(self) -> None:
        """SIGKILL, as a crash would: no graceful shutdown."""
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None

    def signal(self, sig: signal.Signals) -> None:
        """Send `sig` to its process group: SIGSTOP freezes it, SIGCONT thaws it."""
        assert self.process is not None, "start() first"
        os.killpg(self.process.pid, sig)

    def wait_exit(self, timeout: float) -> int:
        """Its exit code, once it has exited on its own."""
        assert self.process is not None, "start() first"
        code = self.process.wait(timeout)
        self.process = None
        return code

    def write_pidfile(self, path: Path) -> None:
        """Remember a process meant to outlive this one, for `stop_pidfile`."""
        assert self.process is not None, "start() first"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(str(self.process.pid))

    def output(self) -> str:
        """What the current run has logged so far."""
        with self.log.open("rb") as log:
            log.seek(self.log_offset)
            return log.read().decode(errors="replace")

    def tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 60.0,
    interval: float = 0.5,
    message: str = "condition",
) -> T:
    """Call `predicate` until it returns something truthy, and return that.

    Raises TimeoutError naming `message` and the last value seen once `timeout` seconds pass.
    Exceptions from `predicate` propagate: catch the expected ones inside it.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {message}; last: {value!r}")
        time.sleep(interval)


def mlflow_server(
    workdir: Path, port: int, host: str = "127.0.0.1", default_artifact_root: str = ""
) -> LocalProcess:
    """A real MLflow tracking server with a sqlite registry and artifacts on local disk, which
    it serves to clients (`mlflow-artifacts:`).

    With `default_artifact_root` (e.g. `s3://bucket/prefix`) it serves no artifacts instead
    (`--no-serve-artifacts`): it only records where each run's artifacts are, and clients read
    and write them there themselves, with their own credentials; the server needs none."""
    workdir.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    # Webhook secrets are stored encrypted: the key must survive restarts of the server.
    key_file = workdir / "webhook-encryption.key"
    if not key_file.exists():
        key_file.write_text(base64.urlsafe_b64encode(os.urandom(32)).decode())
    return LocalProcess(
        name="mlflow server",
        args=[
            str(bin_dir / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{workdir / 'mlflow.db'}",
            *(
                ["--no-serve-artifacts", "--default-artifact-root", default_artifact_root]
                if default_artifact_root
                else ["--artifacts-destination", str(workdir / "artifacts")]
            ),
            "--host",
            host,
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        log=workdir / "mlflow.log",
        env={
            # The job runner forks seven more processes and is not needed for a registry.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            # Webhooks to the operator on loopback, over plain HTTP, seen within a second.
            "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
            "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
            "MLFLOW_WEBHOOK_CACHE_TTL": "1",
            "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": key_file.read_text(),
        },
    )


def prometheus_server(
    binary: Path, workdir: Path, port: int, scrape_targets: list[str], scrape_interval: str = "1s"
) -> LocalProcess:
    """A real Prometheus server (tests/tools/build-prometheus.sh builds it) scraping
    `scrape_targets` (host:port, path /metrics) every `scrape_interval`, its TSDB in `workdir`.
    Ready when `/-/ready` answers 200; its API is under /api/v1."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [
            {"job_name": "aliasop-test", "static_configs": [{"targets": scrape_targets}]}
        ],
    }
    config_file = workdir / "prometheus.yml"
    config_file.write_text(json.dumps(config))  # JSON is YAML
    return LocalProcess(
        name="prometheus",
        args=[
            str(binary),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        log=workdir / "prometheus.log",
        env={},
    )


def operator(
    log: Path,
    kubeconfig: str,
    tracking_uri: str,
    health_port: int,
    namespace: str | None = None,
    webhook_secret: str = "",
) -> LocalProcess:
    """`aliasop run` for one namespace, or all of them, with a liveness endpoint on
    `health_port`."""
    bin_dir = Path(sys.executable).parent
    return LocalProcess(
        name="aliasop operator",
        args=[
            str(bin_dir / "aliasop"),
            "run",
            f"--namespace={namespace}" if namespace else "--all-namespaces",
            f"--liveness=http://127.0.0.1:{health_port}/healthz",
        ],
        log=log,
        env={
            "KUBECONFIG": kubeconfig,
            "ALIASOP_TRACKING_URI": tracking_uri,
            "ALIASOP_HTTP_PORT": str(free_port()),
            "ALIASOP_WEBHOOK_SECRET": webhook_secret,
            "MALLOC_ARENA_MAX": "2",  # as in the image (see Dockerfile)
        },
    )


def stop_group(pid: int, timeout: float = 15, reap: Callable[[], object] = lambda: None) -> bool:
    """SIGTERM process group `pid`, SIGKILL it after `timeout`, and return once every
    process in it is gone (servers fork workers that outlive their parent by a moment).
    `reap` collects the leader when it is our child. False if the group was already gone."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while True:
        reap()
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            deadline = float("inf")
        time.sleep(0.05)


def stop_pidfile(path: Path, timeout: float = 15) -> bool:
    """Stop the process group recorded in `path` (see `write_pidfile`); False if none ran."""
    if not path.exists():
        return False
    pid = int(path.read_text())
    path.unlink()
    return stop_group(pid, timeout)


def container_process(
    container: Mapping[str, Any],
    log: Path,
    secrets: Mapping[str, Mapping[str, str]] | None = None,
    cwd: Path | None = None,
    mounts: Mapping[str, Path] | None = None,
) -> LocalProcess:
    """One container of a pod as the API server returned it, as a local process: its command,
    args and literal env exactly as rendered, with this environment's tools (mlflow, uvicorn)
    on PATH.

    `secrets` holds the data of the Secrets its `envFrom` names (name -> key -> value), which
    reach the process as the kubelet passes them: every key, with the entry's prefix, and the
    container's own `env` winning over them. `mounts` maps volume names to local directories,
    put where an argument or a literal env value names the volume's mount path."""
    volumes = mounts or {}
    paths = {
        mount["mountPath"]: str(volumes[mount["name"]])
        for mount in container.get("volumeMounts") or []
        if mount["name"] in volumes
    }
    env = env_from(container, secrets or {})
    env.update(
        {
            e["name"]: paths.get(e["value"], e["value"])
            for e in container.get("env") or []
            if "value" in e
        }
    )
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    return LocalProcess(
        name=f"{container.get('name', 'container')} {container.get('image', '')}",
        args=[paths.get(arg, arg) for arg in [*container["command"], *container.get("args", [])]],
        log=log,
        env=env,
        cwd=cwd,
    )


def serving_pod(
    pod: Mapping[str, Any],
    workdir: Path,
    secrets: Mapping[str, Mapping[str, str]] | None = None,
    cwd: Path | None = None,
) -> LocalProcess:
    """A serving pod run as local processes (see `container_process`): its init containers
    (the model's download) to completion, then its first container, returned unstarted. Each
    volume is a directory under `workdir`; a failed init container raises RuntimeError with
    its log's tail."""
    volumes = {volume["name"]: workdir / volume["name"] for volume in pod.get("volumes") or []}
    for directory in volumes.values():
        directory.mkdir(parents=True, exist_ok=True)

    def process(container: Mapping[str, Any]) -> LocalProcess:
        log = workdir / f"{container['name']}.log"
        return container_process(container, log, secrets, cwd, volumes)

    for init in pod.get("initContainers") or []:
        step = process(init).start()
        code = step.wait_exit(timeout=300)
        if code != 0:
            raise RuntimeError(f"init container {init['name']} exited {code}:\n{step.tail()}")
    return process(pod["containers"][0])


def env_from(
    container: Mapping[str, Any], secrets: Mapping[str, Mapping[str, str]]
) -> dict[str, str]:
    """The variables a container's `envFrom` Secrets give it. A Secret it names that is not in
    `secrets` fails, as the kubelet refuses to start the container (unless it is optional)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        ref = source.get("secretRef")
        if ref is None:
            raise ValueError(f"only secretRef envFrom sources are supported: {source}")
        if ref["name"] not in secrets:
            if ref.get("optional"):
                continue
            raise KeyError(f"secret {ref['name']!r} not found")
        prefix = source.get("prefix", "")
        env.update({f"{prefix}{key}": value for key, value in secrets[ref["name"]].items()})
    return env


def service_account_kubeconfig(
    kubectl: list[str], namespace: str, account: str, path: Path, bound_secret: str = ""
) -> Path:
    """Write a kubeconfig that authenticates as a ServiceAccount (a fresh token), for the
    cluster `kubectl` (a command prefix, credentials included) talks to. A token bound to
    `bound_secret` (a Secret in `namespace`) dies with that Secret."""

    def run(*args: str) -> str:
        return subprocess.run([*kubectl, *args], check=True, capture_output=True, text=True).stdout

    bound = ["--bound-object-kind=Secret", f"--bound-object-name={bound_secret}"]
    options = ["--duration=24h", *(bound if bound_secret else [])]
    token = run("-n", namespace, "create", "token", account, *options).strip()
    cluster = json.loads(run("config", "view", "--minify", "--raw", "-o", "json"))["clusters"][0]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": cluster["name"], "user": account}}],
        "current-context": account,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


def mlflow_auth_server(workdir: Path, port: int, admin_password: str) -> LocalProcess:
    """`mlflow_server` with MLflow's basic-auth app: every request needs a user, the admin is
    `admin` with `admin_password`, and a new user may read nothing until granted (so a test
    shows exactly which permissions a client needs)."""
    server = mlflow_server(workdir, port)
    config = workdir / "basic_auth.ini"
    config.write_text(
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{workdir / 'basic_auth.db'}\n"
        "admin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    server.name = "mlflow server (basic-auth)"
    server.args += ["--app-name", "basic-auth"]
    server.env.update(
        MLFLOW_AUTH_CONFIG_PATH=str(config),
        MLFLOW_AUTH_ADMIN_PASSWORD=admin_password,
        MLFLOW_FLASK_SERVER_SECRET_KEY=base64.urlsafe_b64encode(os.urandom(24)).decode(),
    )
    return server


def tools_dir() -> Path:
    """Where tests/tools/build*.sh put the Go tools the tests run."""
    cache = os.environ.get("ALIASOP_CACHE") or str(Path.home() / ".cache" / "aliasop")
    return Path(cache) / "tools" / "bin"


def oci_registry(workdir: Path, port: int, host: str = "127.0.0.1") -> LocalProcess:
    """A real OCI registry: CNCF distribution's `registry` (built by
    tests/tools/build-registry.sh) on plain HTTP, keeping what is pushed under `workdir/data`.
    Ready when `/v2/` answers 200 (no authentication)."""
    binary = tools_dir() / "registry"
    if not binary.exists():
        raise FileNotFoundError(f"{binary} is missing: run tests/tools/build-registry.sh")
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {workdir / 'data'}}}}}\n"
        f"http: {{addr: '{host}:{port}'}}\n"
    )
    return LocalProcess(
        name="OCI registry (distribution)",
        args=[str(binary), "serve", str(config)],
        log=workdir / "registry.log",
        env={},
    )


@dataclass(frozen=True)
class S3Store:
    """An S3 endpoint and the credentials of one of its users."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def client_env(self) -> dict[str, str]:
        """The variables MLflow's S3 artifact repository (boto3) reads: the endpoint of an
        S3-compatible store (not needed for AWS's own), and the credentials. What a Secret for
        `spec.serving.credentialsSecret` holds."""
        return {
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }

    def client(self) -> Any:
        """A boto3 S3 client with these credentials."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )

    def create_bucket(self, bucket: str) -> None:
        self.client().create_bucket(Bucket=bucket)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key under `prefix` in `bucket`."""
        s3 = self.client()
        keys: list[str] = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys += [item["Key"] for item in page.get("Contents", [])]
        return keys


S3_HEALTH_PATH = "/health"


def s3_server(
    workdir: Path, port: int, access_key: str, secret_key: str, host: str = "127.0.0.1"
) -> LocalProcess:
    """A real S3 server: versitygw (built by tests/tools/build-s3.sh) serving buckets from
    the directories under `workdir/data`, with one root user. Healthy when
    `S3_HEALTH_PATH` answers 200."""
    binary = tools_dir() / "versitygw"
    if not binary.exists():
        raise FileNotFoundError(f"{binary} is missing: run tests/tools/build-s3.sh")
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    return LocalProcess(
        name="s3 server (versitygw)",
        args=[
            str(binary),
            "--port",
            f"{host}:{port}",
            "--health",
            S3_HEALTH_PATH,
            "--quiet",
            "posix",
            str(data),
        ],
        log=workdir / "versitygw.log",
        # The root user's keys from the environment, not the command line (`ps` shows that).
        env={"ROOT_ACCESS_KEY_ID": access_key, "ROOT_SECRET_ACCESS_KEY": secret_key},
    )
