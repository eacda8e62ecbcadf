"""charts/aliasop/README.md is what helm-docs (built by tests/tools/build-helm-docs.sh) makes of
the chart's values.yaml and README.md.gotmpl: it documents every value, and is never stale."""

import pytest
import yaml

from aliasop_dev import chart

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def rendered() -> str:
    helm_docs = chart.tool("helm-docs")
    if not helm_docs.is_file():
        pytest.fail(f"{helm_docs} is missing: run `make tools-build`")
    return chart.render_chart_readme(helm_docs)


def test_chart_readme_is_current(rendered: str) -> None:
    assert chart.CHART_README.read_text() == rendered, "the chart's README: run `make chart-docs`"


def leaves(values: object, path: str = "") -> list[str]:
    """The dotted names of values.yaml's leaves (an empty map or list is a leaf)."""
    if isinstance(values, dict) and values:
        return [leaf for key, value in values.items() for leaf in leaves(value, f"{path}{key}.")]
    return [path.rstrip(".")]


def test_chart_readme_lists_every_value(rendered: str) -> None:
    """Each value has a described row of its own, or is part of one (a map documented whole,
    such as podSecurityContext)."""
    values = yaml.safe_load((chart.CHART / "values.yaml").read_text())
    rows = {}
    for line in rendered.splitlines():
        cells = [cell.strip() for cell in line.split(" | ")]
        if len(cells) == 4 and line.startswith("| "):
            rows[cells[0].removeprefix("| ")] = cells[3].removesuffix(" |").strip(" |")
    undocumented = []
    for name in leaves(values):
        parts = name.split(".")
        documented = [".".join(parts[:n]) for n in range(len(parts), 0, -1)]
        if not any(rows.get(row) for row in documented):
            undocumented.append(name)
    assert undocumented == []
    for new in ("image.registry", "servingImage.registry", "extraVolumes", "extraVolumeMounts"):
        assert f"| {new} |" in rendered
