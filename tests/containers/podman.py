"""Kubernetes pods run with podman, the way a kubelet would run them.

`Pod` runs a pod spec (as the operator renders it, or as a manifest has it): its init
containers one after the other, each to completion, then its containers. `run_options` maps
one container to `podman run` options: command and args, env (literal, and from Secrets the
caller hands in), the pod's and the container's securityContext, emptyDir volumes as host
directories that the pod's containers share (as the kubelet makes them), resource limits,
the grace period, and the ServiceAccount token mount. What it cannot map faithfully it refuses
(`Unsupported`) rather than run something else. Containers share the host's network
(`--network host`), as the test cluster's API server and MLflow listen on loopback: a
container port is the host port. How podman runs on this kind of machine comes from
images/podman.env.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import httpx

from support import REPO

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# Every container the tests start carries this label, so leftovers can be found and removed.
TEST_LABEL = "aliasop.io/test=containers"

_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_DECIMAL = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


class Unsupported(ValueError):
    """A pod spec field this mapping does not translate: refused, never approximated away."""


@cache
def podman_env() -> dict[str, list[str]]:
    """The arrays and values of images/podman.env, read by bash: one source for the scripts and
    the tests."""
    script = (
        f"source {REPO / 'images' / 'podman.env'}; "
        'printf "%s\\0" "${PODMAN_GLOBAL_OPTS[*]}" "${PODMAN_RUN_OPTS[*]}" "$BASE_IMAGE"'
    )
    out = subprocess.run(["bash", "-c", script], check=True, capture_output=True, text=True).stdout
    global_opts, run_opts, base_image = out.split("\0")[:3]
    return {
        "global": global_opts.split(),
        "run": run_opts.split(),
        "base_image": [base_image],
    }


def podman(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """podman with this machine's global options, output captured as text."""
    return subprocess.run(
        ["podman", *podman_env()["global"], *args],
        check=check,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def image_exists(image: str) -> bool:
    return podman("image", "exists", image, check=False).returncode == 0


def image_user(image: str) -> str:
    """The USER an image runs as ('' for root by default)."""
    return podman("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip()


def parse_quantity(quantity: str | int | float) -> float:
    """A Kubernetes resource quantity ('512Mi', '100m', '2', '1.5G') as a plain number."""
    text = str(quantity)
    match = _QUANTITY.match(text)
    if not match:
        raise Unsupported(f"resource quantity {text!r}")
    number, suffix = float(match[1]), match[2]
    if suffix == "m":
        return number / 1000
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    raise Unsupported(f"resource quantity {text!r}")


@dataclass(frozen=True)
class ServiceAccount:
    """What the kubelet gives a pod whose ServiceAccount token is mounted: a directory with
    `token`, `ca.crt` and `namespace`, and the API server's address in the environment."""

    directory: Path
    api_host: str
    api_port: int


@dataclass
class PodmanRun:
    """`podman run` for one container: options, then the image and its arguments."""

    name: str
    options: list[str]
    image: str
    args: list[str] = field(default_factory=list)

    def argv(self) -> list[str]:
        return [*self.options, self.image, *self.args]


def run_options(
    pod_spec: Mapping[str, Any],
    container_name: str | None = None,
    *,
    volumes_dir: Path,
    secrets: Mapping[str, Mapping[str, str]] | None = None,
    service_account: ServiceAccount | None = None,
    extra_hosts: Mapping[str, str] | None = None,
    name: str | None = None,
    pod_fields: Mapping[str, str] | None = None,
) -> PodmanRun:
    """Map container `container_name` (an init container or a container; default: the first
    container) of `pod_spec` to `podman run`.

    emptyDir volumes are the directories `volumes_dir/<volume name>`, shared by every
    container of the pod given the same `volumes_dir`. `secrets` holds the Secrets the pod
    may read (name -> data); an optional reference to a Secret or key not given is left out, a
    required one is an error, as for a kubelet. `service_account` is mounted unless the pod
    sets `automountServiceAccountToken: false`. `extra_hosts` adds /etc/hosts entries (what
    cluster DNS would resolve). `pod_fields` are the pod's fields the downward API gives env
    (`fieldRef`), by field path (e.g. metadata.namespace, metadata.name, status.podIP); a field
    not given is an error.
    """
    candidates = [*(pod_spec.get("initContainers") or []), *(pod_spec.get("containers") or [])]
    if container_name is None:
        candidates = list(pod_spec.get("containers") or [])
    container = next((c for c in candidates if container_name in (None, c["name"])), None)
    if container is None:
        raise ValueError(f"no container {container_name!r} in the pod spec")
    _refuse_unknown(pod_spec, container)
    name = name or f"aliasop-test-{container['name']}-{uuid.uuid4().hex[:8]}"
    options = [
        "--name",
        name,
        "--label",
        TEST_LABEL,
        "--pull",
        "never",  # images come from the local store, as imagePullPolicy: Never
        "--network",
        "host",
        # No /etc/passwd entry for the container's user unless the image has one: a kubelet
        # adds none (podman does by default, which hid an operator that needed one).
        "--passwd=false",
        *podman_env()["run"],
    ]
    if "terminationGracePeriodSeconds" in pod_spec:
        options += ["--stop-timeout", str(pod_spec["terminationGracePeriodSeconds"])]
    if container.get("workingDir"):
        options += ["--workdir", container["workingDir"]]
    if "command" in container:
        options += ["--entrypoint", json.dumps(container["command"])]
    options += _security_options(pod_spec, container)
    options += _resource_options(container.get("resources") or {})
    options += _volume_options(pod_spec, container, volumes_dir)
    env = _environment(container, secrets or {}, pod_fields or {})
    mount_token = pod_spec.get("automountServiceAccountToken", True)
    if service_account is not None:
        # The kubelet sets these for every pod; the token only where it is mounted.
        env = {
            "KUBERNETES_SERVICE_HOST": service_account.api_host,
            "KUBERNETES_SERVICE_PORT": str(service_account.api_port),
            **env,
        }
        if mount_token:
            options += ["-v", f"{service_account.directory}:{SERVICE_ACCOUNT_DIR}:ro"]
    for key, value in env.items():
        options += ["--env", f"{key}={value}"]
    for host, address in (extra_hosts or {}).items():
        options += ["--add-host", f"{host}:{address}"]
    return PodmanRun(name, options, container["image"], list(container.get("args") or []))


def _refuse_unknown(pod_spec: Mapping[str, Any], container: Mapping[str, Any]) -> None:
    for key in ("hostNetwork", "hostPID", "hostIPC", "shareProcessNamespace"):
        if pod_spec.get(key):
            raise Unsupported(f"pod spec {key}")
    for key in ("stdin", "tty", "volumeDevices", "restartPolicy"):
        if container.get(key):
            raise Unsupported(f"container {key}")
    lifecycle = dict(container.get("lifecycle") or {})
    # A preStop sleep only delays a graceful stop; Pod.remove stops at once, as
    # `kubectl delete --grace-period=0` does. Other hooks would run code: refused.
    if set(lifecycle.pop("preStop", None) or {"sleep": {}}) != {"sleep"} or lifecycle:
        raise Unsupported(f"container lifecycle {sorted(container['lifecycle'])}")
    text = json.dumps([container.get("command"), container.get("args"), container.get("env")])
    if "$(" in text:
        raise Unsupported("$(VAR) references in command, args or env are not expanded here")


def _security_options(pod_spec: Mapping[str, Any], container: Mapping[str, Any]) -> list[str]:
    pod = pod_spec.get("securityContext") or {}
    own = container.get("securityContext") or {}
    merged = {**pod, **own}  # the container's settings win, as in Kubernetes
    options: list[str] = []
    user = merged.get("runAsUser")
    group = merged.get("runAsGroup")
    if user is not None:
        options += ["--user", f"{user}:{group}" if group is not None else str(user)]
    elif group is not None:
        raise Unsupported("runAsGroup without runAsUser")
    if merged.get("runAsNonRoot"):
        # The kubelet's check: a numeric, non-zero user, from the spec or else the image.
        effective = str(user) if user is not None else image_user(container["image"])
        uid = effective.split(":")[0]
        if not uid.isdigit() or int(uid) == 0:
            raise ValueError(f"runAsNonRoot, but the container would run as {effective!r}")
    for gid in [pod.get("fsGroup"), *(pod.get("supplementalGroups") or [])]:
        if gid is not None:
            options += ["--group-add", str(gid)]
    if own.get("privileged"):
        raise Unsupported("privileged containers")
    if own.get("readOnlyRootFilesystem"):
        options.append("--read-only")
    if own.get("allowPrivilegeEscalation") is False:
        options += ["--security-opt", "no-new-privileges"]
    capabilities = own.get("capabilities") or {}
    for cap in capabilities.get("drop") or []:
        options += ["--cap-drop", cap]
    for cap in capabilities.get("add") or []:
        options += ["--cap-add", cap]
    seccomp = (merged.get("seccompProfile") or {}).get("type")
    if seccomp == "Unconfined":
        options += ["--security-opt", "seccomp=unconfined"]
    elif seccomp not in (None, "RuntimeDefault"):  # podman's default profile is the runtime's
        raise Unsupported(f"seccompProfile {seccomp}")
    return options


def _resource_options(resources: Mapping[str, Any]) -> list[str]:
    limits = resources.get("limits") or {}
    options: list[str] = []
    if "memory" in limits:
        options += ["--memory", str(int(parse_quantity(limits["memory"])))]
    if "cpu" in limits:
        options += ["--cpus", f"{parse_quantity(limits['cpu']):g}"]
    return options


def _volume_options(
    pod_spec: Mapping[str, Any], container: Mapping[str, Any], volumes_dir: Path
) -> list[str]:
    volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
    options: list[str] = []
    for mount in container.get("volumeMounts") or []:
        volume = volumes.get(mount["name"])
        if volume is None:
            raise ValueError(f"volumeMount {mount['name']!r} names no volume of the pod")
        if "emptyDir" not in volume or mount.get("subPath"):
            raise Unsupported(f"volume {mount['name']!r}: only emptyDir volumes are mapped")
        if (volume["emptyDir"] or {}).get("medium"):
            raise Unsupported(f"volume {mount['name']!r}: emptyDir medium")
        # A fresh, world-writable directory on the node's disk, as the kubelet makes it, shared
        # by the pod's containers. (Its sizeLimit is the kubelet's eviction threshold: nothing
        # here evicts.)
        directory = volumes_dir / mount["name"]
        if not directory.exists():
            directory.mkdir(parents=True)
            os.chmod(directory, 0o777)
        suffix = ":ro" if mount.get("readOnly") else ""
        options += ["-v", f"{directory}:{mount['mountPath']}{suffix}"]
    return options


def _environment(
    container: Mapping[str, Any],
    secrets: Mapping[str, Mapping[str, str]],
    pod_fields: Mapping[str, str],
) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        if "secretRef" not in source:
            raise Unsupported(f"envFrom {sorted(source)}")
        ref = source["secretRef"]
        if ref["name"] in secrets:
            prefix = source.get("prefix", "")
            env.update({prefix + k: v for k, v in secrets[ref["name"]].items()})
        elif not ref.get("optional"):
            raise ValueError(f"envFrom names Secret {ref['name']!r}, which was not given")
    for var in container.get("env") or []:  # env wins over envFrom
        if "value" in var or "valueFrom" not in var:
            env[var["name"]] = str(var.get("value", ""))
            continue
        field_ref = var["valueFrom"].get("fieldRef")
        if field_ref is not None:
            if field_ref["fieldPath"] not in pod_fields:
                raise ValueError(f"env {var['name']}: pod field {field_ref['fieldPath']!r}")
            env[var["name"]] = pod_fields[field_ref["fieldPath"]]
            continue
        ref = var["valueFrom"].get("secretKeyRef")
        if ref is None:
            raise Unsupported(f"env {var['name']}: valueFrom {sorted(var['valueFrom'])}")
        value = secrets.get(ref["name"], {}).get(ref["key"])
        if value is not None:
            env[var["name"]] = value
        elif not ref.get("optional"):
            raise ValueError(f"env {var['name']}: Secret {ref['name']!r} key {ref['key']!r}")
    return env


def readiness_url(container: Mapping[str, Any], host: str = "127.0.0.1") -> str:
    """The URL of the container's HTTP readiness probe, its named port resolved."""
    probe = container["readinessProbe"]["httpGet"]
    port = probe["port"]
    if isinstance(port, str):
        port = next(p["containerPort"] for p in container["ports"] if p.get("name") == port)
    return f"http://{host}:{port}{probe.get('path', '/')}"


class Container:
    """One detached podman container: started, waited for, read, removed."""

    def __init__(self, run: PodmanRun) -> None:
        self.run = run
        self.name = run.name

    def start(self) -> Container:
        podman("run", "--detach", *self.run.argv())
        return self

    @property
    def running(self) -> bool:
        result = podman("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return result.stdout.strip() == "true"

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def exec(self, *command: str) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, *command, check=False)

    def inspect(self) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(podman("inspect", self.name).stdout)
        return data[0]

    def wait_ready(self, url: str, timeout: float) -> None:
        """Wait until `url` answers 200; fail at once, with the logs, if the container exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"container {self.name} exited:\n{self.tail()}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{self.name} not ready at {url} after {timeout}s:\n{self.tail()}")

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.logs().splitlines()[-lines:])

    def stop(self, grace_seconds: int) -> int:
        """Stop it as the kubelet does: SIGTERM, SIGKILL after `grace_seconds`; its exit code."""
        podman("stop", "--time", str(grace_seconds), self.name, timeout=grace_seconds + 60)
        code: int = self.inspect()["State"]["ExitCode"]
        return code

    def remove(self) -> None:
        podman("rm", "--force", "--time", "10", self.name, check=False, timeout=60)


class Pod:
    """A pod spec run by podman: the init containers in order, each to completion, then the
    containers, sharing the pod's emptyDir volumes (directories under `workdir`)."""

    def __init__(
        self,
        pod_spec: Mapping[str, Any],
        workdir: Path,
        *,
        secrets: Mapping[str, Mapping[str, str]] | None = None,
        service_account: ServiceAccount | None = None,
        extra_hosts: Mapping[str, str] | None = None,
        pod_fields: Mapping[str, str] | None = None,
    ) -> None:
        self.pod_spec = pod_spec
        self.workdir = workdir
        self.options: dict[str, Any] = {
            "volumes_dir": workdir / "volumes",
            "secrets": secrets,
            "service_account": service_account,
            "extra_hosts": extra_hosts,
            "pod_fields": pod_fields,
        }
        self.containers: dict[str, Container] = {}
        self.init_logs: dict[str, str] = {}

    def run(self, container_name: str) -> PodmanRun:
        return run_options(self.pod_spec, container_name, **self.options)

    def start(self, init_timeout: float = 300) -> Pod:
        for init in self.pod_spec.get("initContainers") or []:
            result = podman(
                "run", "--rm", *self.run(init["name"]).argv(), check=False, timeout=init_timeout
            )
            self.init_logs[init["name"]] = result.stdout + result.stderr
            if result.returncode != 0:
                raise RuntimeError(
                    f"init container {init['name']} exited {result.returncode} (Init:Error):\n"
                    + "\n".join(self.init_logs[init["name"]].splitlines()[-40:])
                )
        for spec in self.pod_spec["containers"]:
            self.containers[spec["name"]] = Container(self.run(spec["name"])).start()
        return self

    def remove(self) -> None:
        for container in self.containers.values():
            container.remove()


def remove_test_containers() -> None:
    """Remove containers earlier test runs left behind (killed sessions)."""
    names = podman("ps", "--all", "--filter", f"label={TEST_LABEL}", "--format", "{{.Names}}")
    for leftover in names.stdout.split():
        podman("rm", "--force", leftover, check=False)
