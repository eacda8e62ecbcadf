"""What ships: the wheel holds the product package only, and every place that names the
version agrees with pyproject.toml, where it is written."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import version
from pathlib import Path, PurePosixPath

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
VERSION: str = PYPROJECT["project"]["version"]
DEV_MODULES = {"demo", "bikes", "local"}


@pytest.mark.timeout(120)
def test_the_wheel_holds_the_operator_and_no_development_tooling(tmp_path: Path) -> None:
    pytest.importorskip("hatchling", reason="the test extra provides hatchling (make install)")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    build = subprocess.run(
        [*pip_wheel, "--quiet", "--wheel-dir", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("*.whl")
    assert wheel.name == f"aliasop-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = [PurePosixPath(name) for name in archive.namelist()]
        entry_points = archive.read(f"aliasop-{VERSION}.dist-info/entry_points.txt").decode()

    assert {name.parts[0] for name in names} == {"aliasop", f"aliasop-{VERSION}.dist-info"}
    files = {name.name for name in names if name.parts[0] == "aliasop"}
    shipped_tooling = {name for name in files if PurePosixPath(name).stem in DEV_MODULES}
    assert not shipped_tooling, sorted(shipped_tooling)
    assert {"__init__.py", "cli.py", "models.py", "rollout.py", "py.typed"} <= files
    # The CRD's core/v1 schemas: `aliasop crd` reads them from the installed package.
    assert PurePosixPath("aliasop/schemas/core_v1.json") in names
    assert "aliasop-dev" not in entry_points and "aliasop = aliasop.cli:main" in entry_points


def test_the_installed_version_is_the_one_in_pyproject() -> None:
    """Fails after a version bump until `make install` reinstalls the package."""
    import aliasop
    from aliasop.settings import Settings

    assert version("aliasop") == aliasop.__version__ == VERSION
    assert Settings.model_fields["serving_image"].default == f"aliasop-serving:{VERSION}"


def test_the_chart_is_of_this_version() -> None:
    """The chart's version and appVersion are aliasop's; the images' tags default to
    appVersion."""
    chart = yaml.safe_load((REPO / "charts" / "aliasop" / "Chart.yaml").read_text())
    assert (chart["version"], chart["appVersion"]) == (VERSION, VERSION), "Chart.yaml"


def test_the_manifests_run_the_images_of_this_version() -> None:
    """manifests/ is the chart rendered (test_helm.py keeps it so): its operator runs the
    operator image of this version, and serving pods default to the serving image of it."""
    rendered = yaml.safe_load_all((REPO / "manifests" / "aliasop.yaml").read_text())
    (operator,) = [doc for doc in rendered if doc and doc["kind"] == "Deployment"]
    (container,) = operator["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"aliasop:{VERSION}"
    env = {variable["name"]: variable.get("value") for variable in container["env"]}
    assert env["ALIASOP_SERVING_IMAGE"] == f"aliasop-serving:{VERSION}"


def test_the_argocd_snippet_carries_the_health_script() -> None:
    argocd = REPO / "manifests" / "argocd"
    snippet = yaml.safe_load((argocd / "argocd-cm.yaml").read_text())
    script = snippet["data"]["resource.customizations.health.aliasop.io_ModelDeployment"]
    assert script == (argocd / "health.lua").read_text()


def test_every_setting_is_in_the_user_guide_s_configuration_table() -> None:
    from aliasop.settings import Settings

    table = (REPO / "docs" / "user-guide.md").read_text().partition("## Configuration")[2]
    nested = {"registry_access", "registry_writer"}  # MLflow's variables, listed by prefix
    missing = [
        f"ALIASOP_{name.upper()}"
        for name in Settings.model_fields
        if name not in nested and f"`ALIASOP_{name.upper()}`" not in table
    ]
    assert not missing, f"add to docs/user-guide.md's Configuration table: {missing}"
