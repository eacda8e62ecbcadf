from aliasop.builders import (
    MODEL_URI_ANNOTATION,
    RUN_ID_ANNOTATION,
    VERSION_LABEL,
    Owner,
    PinnedVersion,
    ServingDefaults,
    get_deployment,
    get_service,
)
from aliasop.models import ModelDeploymentSpec

OWNER = Owner(name="bikes", namespace="ml", uid="uid-1")
DEFAULTS = ServingDefaults(image="serving:1", tracking_uri="http://mlflow:5000")


def spec(**fields: object) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate({"model": "models:/bikes@champion", **fields})


def test_pod_template_pins_the_version_not_the_alias() -> None:
    deployment = get_deployment(OWNER, spec(replicas=2), PinnedVersion("4", "run4"), DEFAULTS)
    template = deployment["spec"]["template"]
    assert template["metadata"]["labels"][VERSION_LABEL] == "4"
    assert template["metadata"]["annotations"][MODEL_URI_ANNOTATION] == "models:/bikes/4"
    assert template["metadata"]["annotations"][RUN_ID_ANNOTATION] == "run4"
    container = template["spec"]["containers"][0]
    assert "models:/bikes/4" in container["args"]
    assert not any("@" in arg for arg in container["args"])
    assert container["readinessProbe"]["httpGet"]["path"] == "/ping"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert deployment["spec"]["replicas"] == 2
    assert VERSION_LABEL not in deployment["spec"]["selector"]["matchLabels"]
    owner_ref = deployment["metadata"]["ownerReferences"][0]
    assert (owner_ref["kind"], owner_ref["uid"], owner_ref["controller"]) == (
        "ModelDeployment",
        "uid-1",
        True,
    )


def test_replicas_are_left_alone_when_unset() -> None:
    deployment = get_deployment(OWNER, spec(), PinnedVersion("1", ""), DEFAULTS)
    assert "replicas" not in deployment["spec"]


def test_defaults_and_overrides() -> None:
    plain = get_deployment(OWNER, spec(), PinnedVersion("1", ""), DEFAULTS)
    container = plain["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "serving:1"
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"} in container["env"]
    assert "envFrom" not in container

    custom = get_deployment(
        OWNER,
        spec(
            trackingUri="http://other:5000",
            serving={
                "image": "mine:2",
                "port": 9000,
                "credentialsSecret": "mlflow-creds",
                "env": [{"name": "A", "value": "b"}],
                "resources": {"limits": {"cpu": "1"}},
            },
        ),
        PinnedVersion("1", ""),
        DEFAULTS,
    )
    container = custom["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "mine:2"
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://other:5000"} in container["env"]
    assert {"name": "A", "value": "b"} in container["env"]
    assert container["envFrom"] == [{"secretRef": {"name": "mlflow-creds"}}]
    assert container["resources"] == {"limits": {"cpu": "1"}}
    assert container["ports"][0]["containerPort"] == 9000
    assert "9000" in container["args"]


def test_serving_pods_are_hardened() -> None:
    pod = get_deployment(OWNER, spec(), PinnedVersion("1", ""), DEFAULTS)["spec"]["template"][
        "spec"
    ]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    mounted = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/tmp" in mounted


def test_service_selects_every_version() -> None:
    service = get_service(OWNER, spec(serving={"port": 9000}))
    assert VERSION_LABEL not in service["spec"]["selector"]
    assert service["spec"]["ports"][0]["port"] == 9000
