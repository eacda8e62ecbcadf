import shlex
from typing import Any

from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT
from mlflow.pyfunc import scoring_server

from aliasop.builders import (
    ALIAS_ANNOTATION,
    IN_FLIGHT_SECONDS,
    MODEL_DIR,
    MODEL_URI_ANNOTATION,
    RUN_ID_ANNOTATION,
    SERVING_MODEL_PATH_ENV,
    VERSION_LABEL,
    ServingDefaults,
    get_deployment,
    get_selector_labels,
    get_service,
)
from aliasop.domain import Owner, PinnedVersion
from aliasop.models import RESERVED_PREFIX, SELECTOR_LABEL_KEYS, ModelDeploymentSpec

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
    (download,) = template["spec"]["initContainers"]
    container = template["spec"]["containers"][0]
    assert download["args"] == [
        "artifacts",
        "download",
        "--artifact-uri",
        "models:/bikes/4",
        "--dst-path",
        MODEL_DIR,
    ]
    assert container["command"] == ["uvicorn"]
    assert {"name": SERVING_MODEL_PATH_ENV, "value": MODEL_DIR} in container["env"]
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
    pod = custom["spec"]["template"]["spec"]
    container, (download,) = pod["containers"][0], pod["initContainers"]
    assert container["image"] == download["image"] == "mine:2"
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://other:5000"} in download["env"]
    assert {"name": "A", "value": "b"} in container["env"]
    # The credentials fetch the model; the server that runs it does not get them.
    assert download["envFrom"] == [{"secretRef": {"name": "mlflow-creds"}}]
    assert "envFrom" not in container
    assert container["resources"] == download["resources"] == {"limits": {"cpu": "1"}}
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
    assert pod["initContainers"][0]["securityContext"] == container["securityContext"]
    mounted = {m["mountPath"]: m.get("readOnly", False) for m in container["volumeMounts"]}
    assert mounted == {"/tmp": False, MODEL_DIR: True}


def test_the_model_is_downloaded_into_an_emptydir_of_the_size_the_spec_allows() -> None:
    def model_volume(**serving: object) -> dict[str, Any]:
        pod = get_deployment(OWNER, spec(serving=serving), PinnedVersion("1", ""), DEFAULTS)
        volumes = {v["name"]: v for v in pod["spec"]["template"]["spec"]["volumes"]}
        return volumes["model"]

    assert model_volume() == {"name": "model", "emptyDir": {}}
    assert model_volume(storage={"sizeLimit": "2Gi"}) == {
        "name": "model",
        "emptyDir": {"sizeLimit": "2Gi"},
    }


def test_service_selects_every_version() -> None:
    service = get_service(OWNER, spec(serving={"port": 9000}))
    assert VERSION_LABEL not in service["spec"]["selector"]
    assert service["spec"]["ports"][0]["port"] == 9000


# Every pod setting of spec.serving, as a user writes them (core/v1 shapes).
POD_SETTINGS: dict[str, Any] = {
    "serviceAccountName": "model-reader",
    "nodeSelector": {"type": "kwok"},
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
    ],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}
                        ]
                    }
                ]
            }
        }
    },
    "topologySpreadConstraints": [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "bikes"}},
        }
    ],
    "imagePullSecrets": [{"name": "registry"}],
    "priorityClassName": "serving-high",
}


def test_pod_settings_are_rendered_into_the_pod_template() -> None:
    serving = {
        **POD_SETTINGS,
        "podLabels": {"team": "ml", "example.com/cost-center": "42"},
        "podAnnotations": {"prometheus.io/scrape": "true"},
    }
    deployment = get_deployment(OWNER, spec(serving=serving), PinnedVersion("4", "run4"), DEFAULTS)
    template = deployment["spec"]["template"]
    pod = template["spec"]
    assert {key: pod[key] for key in POD_SETTINGS} == POD_SETTINGS
    # A ServiceAccount is for a cloud identity; the API token stays out of the pods.
    assert pod["automountServiceAccountToken"] is False
    assert template["metadata"]["labels"] == {
        "team": "ml",
        "example.com/cost-center": "42",
        **get_selector_labels(OWNER),
        VERSION_LABEL: "4",
    }
    assert template["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        MODEL_URI_ANNOTATION: "models:/bikes/4",
        RUN_ID_ANNOTATION: "run4",
        ALIAS_ANNOTATION: "champion",
    }
    # The Deployment's own labels are aliasop's: pod labels are for the pods.
    assert "team" not in deployment["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == get_selector_labels(OWNER)


def test_pod_settings_left_unset_are_not_rendered() -> None:
    pod = get_deployment(OWNER, spec(), PinnedVersion("1", ""), DEFAULTS)["spec"]["template"][
        "spec"
    ]
    assert not set(POD_SETTINGS) & set(pod)
    assert pod["automountServiceAccountToken"] is False


def test_pod_labels_and_annotations_never_override_aliasops() -> None:
    """The CRD refuses these keys; were one to get through, the selector still selects."""
    hostile = spec(
        serving={
            "podLabels": {
                "app.kubernetes.io/instance": "other",
                "app.kubernetes.io/managed-by": "someone",
                VERSION_LABEL: "9",
            },
            "podAnnotations": {MODEL_URI_ANNOTATION: "models:/other/1"},
        }
    )
    template = get_deployment(OWNER, hostile, PinnedVersion("4", "run4"), DEFAULTS)["spec"][
        "template"
    ]
    assert template["metadata"]["labels"] == {**get_selector_labels(OWNER), VERSION_LABEL: "4"}
    assert template["metadata"]["annotations"][MODEL_URI_ANNOTATION] == "models:/bikes/4"


def test_the_reserved_keys_are_the_ones_aliasop_sets() -> None:
    """What the CRD refuses in podLabels (aliasop.crd) covers every label aliasop sets."""
    labels = get_deployment(OWNER, spec(), PinnedVersion("4", ""), DEFAULTS)["spec"]["template"][
        "metadata"
    ]["labels"]
    assert set(get_selector_labels(OWNER)) == set(SELECTOR_LABEL_KEYS)
    assert all(key in SELECTOR_LABEL_KEYS or key.startswith(RESERVED_PREFIX) for key in labels)
    for key in (MODEL_URI_ANNOTATION, RUN_ID_ANNOTATION, ALIAS_ANNOTATION, VERSION_LABEL):
        assert key.startswith(RESERVED_PREFIX)


def test_the_rendered_pod_settings_are_copies() -> None:
    """Whoever changes a rendered manifest does not change the spec it came from."""
    serving_spec = spec(serving=POD_SETTINGS)
    pod = get_deployment(OWNER, serving_spec, PinnedVersion("1", ""), DEFAULTS)["spec"]["template"][
        "spec"
    ]
    pod["tolerations"].clear()
    pod["affinity"]["nodeAffinity"] = {}
    assert serving_spec.serving.tolerations == POD_SETTINGS["tolerations"]
    assert serving_spec.serving.affinity == POD_SETTINGS["affinity"]


def pod_spec(**serving: object) -> dict[str, Any]:
    deployment = get_deployment(OWNER, spec(serving=serving), PinnedVersion("1", ""), DEFAULTS)
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def test_a_stopping_pod_serves_while_it_leaves_the_endpoints_then_finishes_in_flight() -> None:
    pod = pod_spec(drainSeconds=8)
    assert pod["containers"][0]["lifecycle"] == {"preStop": {"sleep": {"seconds": 8}}}
    assert pod["terminationGracePeriodSeconds"] == 8 + IN_FLIGHT_SECONDS


def test_no_drain_renders_no_prestop_hook() -> None:
    # Kubernetes before 1.33 refuses a preStop sleep of 0 seconds.
    pod = pod_spec(drainSeconds=0)
    assert "lifecycle" not in pod["containers"][0]
    assert pod["terminationGracePeriodSeconds"] == IN_FLIGHT_SECONDS


def test_the_server_is_the_uvicorn_that_mlflow_models_serve_would_start() -> None:
    """`mlflow models serve --env-manager local` runs MLflow's get_cmd as its child; the pod
    runs that command itself, as PID 1, so that SIGTERM reaches it. The variable naming the
    model is private to MLflow: an MLflow update that changes it, or the command, fails here."""
    container = pod_spec(port=9000, workers=3)["containers"][0]
    command, env = scoring_server.get_cmd(MODEL_DIR, port=9000, host="0.0.0.0", nworkers=3)
    assert [*container["command"], *container["args"]] == shlex.split(command)
    assert SERVING_MODEL_PATH_ENV == scoring_server._SERVER_MODEL_PATH
    assert {"name": SERVING_MODEL_PATH_ENV, "value": MODEL_DIR} in container["env"]
    # get_cmd also sets the request timeout, to the default the app reads when it is unset:
    # left out, so that serving.env may set it without a duplicate entry.
    timeout = MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT
    assert env[timeout.name] == str(timeout.default)
    assert timeout.name not in {e["name"] for e in container["env"]}


def test_a_failed_download_leaves_its_reason_in_the_pod_status() -> None:
    (download,) = pod_spec()["initContainers"]
    assert download["command"] == ["mlflow"]
    assert download["terminationMessagePolicy"] == "FallbackToLogsOnError"
