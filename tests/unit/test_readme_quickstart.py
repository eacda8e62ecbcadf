"""The README's quickstart, extracted as a runner of it would (the fenced bash blocks between
its markers): every command parses, the Python is valid, the ModelDeployment is one the CRD
accepts and follows the alias the Python sets, and the versions it names are this release's."""

import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from aliasop.models import ModelDeploymentSpec, ModelUri

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).parents[2]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
START = "<!-- quickstart:"
END = "<!-- End of the quickstart -->"


def quickstart_blocks() -> list[str]:
    """The quickstart's fenced bash blocks, in order."""
    readme = (REPO / "README.md").read_text()
    assert START in readme and END in readme, "the README's quickstart markers"
    section = readme[readme.index(START) : readme.index(END)]
    return re.findall(r"^```bash\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)


def heredocs(block: str) -> list[str]:
    """The bodies of the block's <<'EOF' here-documents."""
    return re.findall(r"<<'EOF'\n(.*?)^EOF$", block, re.MULTILINE | re.DOTALL)


def test_quickstart_commands_parse() -> None:
    blocks = quickstart_blocks()
    assert len(blocks) >= 5
    for block in blocks:
        checked = subprocess.run(
            ["bash", "-n"], input=block, capture_output=True, text=True, timeout=10
        )
        assert checked.returncode == 0, f"{checked.stderr}\n{block}"


def test_quickstart_python_and_resource_agree() -> None:
    documents = [doc for block in quickstart_blocks() for doc in heredocs(block)]
    (python,) = [doc for doc in documents if doc.startswith("import mlflow")]
    compile(python, "README quickstart", "exec")
    (manifest,) = [yaml.safe_load(doc) for doc in documents if "kind: ModelDeployment" in doc]
    assert manifest["apiVersion"] == "aliasop.io/v1alpha1"
    spec = ModelDeploymentSpec.model_validate(manifest["spec"])
    uri = ModelUri.parse(spec.model)
    assert f'registered_model_name="{uri.name}"' in python
    assert f'set_registered_model_alias("{uri.name}", "{uri.alias}", "1")' in python


def test_quickstart_installs_this_release() -> None:
    commands = "\n".join(quickstart_blocks())
    assert f'"oci://$REGISTRY/charts/aliasop" --version {VERSION}' in commands
    images = re.findall(r"\$REGISTRY/(aliasop[-a-z]*):([^\s\"]+)", commands)
    assert images and all(tag == VERSION for _, tag in images), images
