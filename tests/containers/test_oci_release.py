"""`make release` (images/release.sh) against a real OCI registry: CNCF distribution's
`registry`, built by tests/tools/build-registry.sh and run on loopback. Both images land in it
byte for byte (podman pulls back the same image IDs), and so does the chart, as an OCI artefact
whose values name the registry: `helm template oci://...` renders the pushed images."""

from __future__ import annotations

import os
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from aliasop_dev import chart, local

from podman import podman
from support import REPO

VERSION: str = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


@pytest.fixture(scope="module")
def oci_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of an empty registry on loopback (plain HTTP, no authentication)."""
    port = local.free_port()
    try:
        server = local.oci_registry(tmp_path_factory.mktemp("oci-registry"), port).start()
    except FileNotFoundError as missing:
        pytest.fail(f"{missing} (make tools-build)")
    try:
        server.wait_ready(f"http://127.0.0.1:{port}/v2/", timeout=30)
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def released(
    images: tuple[str, str], oci_registry: str, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """What `make release REGISTRY=<the registry> PLAIN_HTTP=1` runs after building the
    images; its output."""
    helm = chart.default_helm()
    if not helm.is_file():
        pytest.fail(f"{helm} is missing: run `make tools-build`")
    home = tmp_path_factory.mktemp("helm-home")
    done = subprocess.run(
        [str(REPO / "images" / "release.sh"), oci_registry],
        capture_output=True,
        text=True,
        timeout=900,  # the serving image is about 1 GB
        env={
            **os.environ,
            "PLAIN_HTTP": "1",
            "HELM": str(helm),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        },
    )
    assert done.returncode == 0, f"images/release.sh:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def registry_get(registry: str, path: str, accept: str = "") -> httpx.Response:
    headers = {"Accept": accept} if accept else {}
    answer = httpx.get(f"http://{registry}/v2/{path}", headers=headers, timeout=30)
    answer.raise_for_status()
    return answer


@pytest.mark.timeout(1500)
def test_oci_release_pushes_both_images_and_the_chart(released: str, oci_registry: str) -> None:
    catalog = registry_get(oci_registry, "_catalog").json()["repositories"]
    assert sorted(catalog) == ["aliasop", "aliasop-serving", "charts/aliasop"]
    for repository in catalog:
        assert registry_get(oci_registry, f"{repository}/tags/list").json()["tags"] == [VERSION]
    chart_manifest = registry_get(
        oci_registry,
        f"charts/aliasop/manifests/{VERSION}",
        "application/vnd.oci.image.manifest.v1+json",
    ).json()
    assert chart_manifest["config"]["mediaType"] == "application/vnd.cncf.helm.config.v1+json"
    assert (
        f"helm install aliasop oci://{oci_registry}/charts/aliasop --version {VERSION}" in released
    )


@pytest.mark.timeout(1500)
def test_oci_release_images_pull_back_as_built(
    images: tuple[str, str], released: str, oci_registry: str
) -> None:
    """What a node pulls is what was built: the same image IDs (config digests)."""
    for local_name in images:
        built = podman("image", "inspect", "--format", "{{.Id}}", local_name).stdout.strip()
        remote = f"{oci_registry}/{local_name}"
        podman("pull", "--quiet", "--tls-verify=false", remote, timeout=600)
        try:
            pulled = podman("image", "inspect", "--format", "{{.Id}}", remote).stdout.strip()
        finally:
            podman("untag", built, remote, check=False)
        assert pulled == built, local_name


@pytest.mark.timeout(1500)
def test_oci_release_chart_names_the_registry(
    images: tuple[str, str], released: str, oci_registry: str, tmp_path: Path
) -> None:
    """`helm template oci://...` of the released chart runs the pushed images."""
    helm = chart.default_helm()
    rendered = subprocess.run(
        [
            str(helm),
            "template",
            "aliasop",
            f"oci://{oci_registry}/charts/aliasop",
            "--version",
            VERSION,
            "--plain-http",
            "--skip-tests",
            "--namespace",
            "aliasop-system",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HELM_CACHE_HOME": str(tmp_path), "HELM_CONFIG_HOME": str(tmp_path)},
    )
    assert rendered.returncode == 0, rendered.stderr
    manifests: list[dict[str, Any]] = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    (deployment,) = [m for m in manifests if m["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    operator_image, serving_image = images
    assert container["image"] == f"{oci_registry}/{operator_image}"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["ALIASOP_SERVING_IMAGE"] == f"{oci_registry}/{serving_image}"
