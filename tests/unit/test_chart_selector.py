"""An operator Deployment installed from an earlier manifests/ whose selector differs is found
(the session's install and the demo replace it: a Deployment's selector is immutable)."""

import copy

import pytest
import yaml

from aliasop_dev import chart

pytestmark = pytest.mark.timeout(30)


def rendered_deployment() -> dict:
    (deployment,) = [
        doc
        for doc in yaml.safe_load_all(chart.MANIFESTS.read_text())
        if doc and doc["kind"] == "Deployment"
    ]
    return deployment


def test_the_current_selector_is_kept() -> None:
    assert not chart.selector_changed(rendered_deployment())


def test_a_selector_of_an_earlier_chart_is_found() -> None:
    earlier = copy.deepcopy(rendered_deployment())
    earlier["spec"]["selector"] = {"matchLabels": {"app.kubernetes.io/name": "aliasop"}}
    assert chart.selector_changed(earlier)
