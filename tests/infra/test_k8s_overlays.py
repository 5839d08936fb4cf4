"""The Kubernetes deploy as it must hold up on a real cluster: the base and
each overlay (infra/k8s-overlays/production, in-cluster) rendered separately
with `kubectl kustomize` and validated with kubernetes-validate --strict, then
checked for spreading, disruption budgets that scale, the preStop pause,
autoscaling on custom metrics next to CPU, network policies, per-pod scraping,
the gateway balancing over pods, pinned images, TLS, and the trial's data stores."""

from __future__ import annotations

import re
import subprocess
from functools import cache

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from gateway import render
from services.common import settings as cfg
from tests.conftest import ROOT
from tests.infra.test_k8s import KUBECTL

BASE = ROOT / "infra" / "k8s"
OVERLAYS = ROOT / "infra" / "k8s-overlays"
TARGETS = {
    "base": BASE,
    "production": OVERLAYS / "production",
    "in-cluster": OVERLAYS / "in-cluster",
}
SERVICES = (*cfg.SERVICES, "photos")
APPS = (*SERVICES, "gateway")


@cache
def rendered(target: str) -> tuple[dict, ...]:
    out = subprocess.run(
        [KUBECTL, "kustomize", str(TARGETS[target])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def find(target: str, kind: str, name: str) -> dict:
    matches = [d for d in rendered(target) if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, (target, kind, name)
    return matches[0]


def kinds(target: str, kind: str) -> list[dict]:
    return [d for d in rendered(target) if d["kind"] == kind]


@pytest.mark.parametrize("target", TARGETS)
def test_each_overlay_renders_and_validates_strictly(target: str) -> None:
    version = latest_version()
    docs = rendered(target)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("app", APPS)
def test_pods_spread_pause_before_stopping_and_have_no_cpu_limit(target: str, app: str) -> None:
    pod = find(target, "Deployment", app)["spec"]["template"]["spec"]
    keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    for constraint in pod["topologySpreadConstraints"]:
        assert constraint["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": app}
    main = pod["containers"][0]
    pause = main["lifecycle"]["preStop"]["sleep"]["seconds"]
    # Longer than the endpoint-removal lag (kube-proxy, the gateway's 5 s DNS
    # re-resolution), and room left for the process's own drain after it.
    assert pause >= 6 and pod["terminationGracePeriodSeconds"] >= pause + 10
    for container in pod["containers"]:
        assert "cpu" not in container["resources"].get("limits", {})
        assert "cpu" in container["resources"]["requests"]


@pytest.mark.parametrize("app", APPS)
def test_disruption_budgets_scale_with_replicas(app: str) -> None:
    pdb = find("base", "PodDisruptionBudget", app)["spec"]
    assert "minAvailable" not in pdb
    assert re.fullmatch(r"\d+%", str(pdb["maxUnavailable"]))


@pytest.mark.parametrize("app", APPS)
def test_autoscaling_on_load_next_to_cpu(app: str) -> None:
    metrics = find("base", "HorizontalPodAutoscaler", app)["spec"]["metrics"]
    assert {
        "type": "Resource",
        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
    } in metrics
    custom = {m["pods"]["metric"]["name"] for m in metrics if m["type"] == "Pods"}
    want = (
        {"nginx_connections_active"}
        if app == "gateway"
        else {"runway_http_requests_per_second", "runway_http_requests_in_flight"}
    )
    assert custom == want
    # Each custom metric is one prometheus-adapter serves (its rules).
    rules = find("production", "ConfigMap", "prometheus-adapter-config")["data"]["config.yaml"]
    served = {r["name"]["as"] for r in yaml.safe_load(rules)["rules"]}
    assert custom <= served


@pytest.mark.parametrize("service", SERVICES)
def test_the_gateway_can_balance_over_each_services_pods(service: str) -> None:
    headless = find("base", "Service", f"{service}-pods")["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["selector"] == {"app.kubernetes.io/name": service}
    port = cfg.BASE_PORTS.get(service, 8004)
    assert headless["ports"][0]["port"] == port
    # The gateway's config for that: every upstream server re-resolved.
    env = {
        "GATEWAY_RESOLVER": "kube-dns.kube-system.svc.cluster.local",
        f"{service.upper()}_UPSTREAM": f"{service}-pods.runway.svc.cluster.local:{port}",
    }
    text = render.render(render.GatewayConfig.from_env(ROOT / "run" / "unused", env))
    assert "resolver kube-dns.kube-system.svc.cluster.local valid=5s" in text
    server = f"server {service}-pods.runway.svc.cluster.local:{port} max_fails=2"
    assert f"{server} fail_timeout=5s resolve;" in text


def test_every_pod_that_serves_metrics_is_scraped_as_its_own_target() -> None:
    annotated = {}
    for deployment in kinds("base", "Deployment"):
        template = deployment["spec"]["template"]
        annotations = template["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") == "true":
            port = int(annotations["prometheus.io/port"])
            ports = {p["containerPort"] for c in template["spec"]["containers"] for p in c["ports"]}
            assert port in ports, deployment["metadata"]["name"]
            job = annotations.get(
                "prometheus.io/job", template["metadata"]["labels"]["app.kubernetes.io/name"]
            )
            annotated[deployment["metadata"]["name"]] = job
    assert annotated == {
        **{s: s for s in SERVICES},
        "gateway": "nginx",
        "redis-exporter": "redis",
        "postgres-exporter": "postgres",
    }
    config = yaml.safe_load((OVERLAYS / "monitoring" / "prometheus.yml").read_text())
    [pods] = [j for j in config["scrape_configs"] if j["job_name"] == "runway-pods"]
    assert pods["kubernetes_sd_configs"][0]["role"] == "pod"
    relabel = pods["relabel_configs"]
    targets = [r.get("target_label") for r in relabel]
    assert {"__address__", "__metrics_path__", "job", "namespace", "pod"} <= set(targets)
    for rule in relabel:  # RE2 and Python agree on these simple patterns
        re.compile(rule.get("regex", "(.*)"))
    address = next(r for r in relabel if r.get("target_label") == "__address__")
    match = re.fullmatch(address["regex"], "10.1.2.3:8002;8002")
    assert match and match.expand(address["replacement"].replace("$", "\\")) == "10.1.2.3:8002"


def test_network_policies_let_only_the_gateway_reach_the_services() -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in kinds("base", "NetworkPolicy")}
    assert policies["default-deny-ingress"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    services = policies["services-from-gateway-and-prometheus"]
    assert services["podSelector"]["matchExpressions"][0]["values"] == list(SERVICES)
    sources = [f.get("podSelector", {}).get("matchLabels") for f in services["ingress"][0]["from"]]
    assert sources[:2] == [
        {"app.kubernetes.io/name": "gateway"},
        {"app.kubernetes.io/name": "prometheus"},
    ]
    egress = policies["gateway-egress"]["egress"]
    assert egress[0]["to"][0]["podSelector"]["matchExpressions"][0]["values"] == list(SERVICES)
    # Production: client traffic only from the Ingress controller.
    prod = find("production", "NetworkPolicy", "gateway-ingress")["spec"]["ingress"][0]
    assert prod["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    ]


def test_only_services_reach_the_in_cluster_data_stores() -> None:
    postgres = find("in-cluster", "NetworkPolicy", "postgres-from-services")["spec"]
    allowed = postgres["ingress"][0]["from"][0]["podSelector"]["matchExpressions"][0]["values"]
    assert "gateway" not in allowed and {"overview", "reviews", "qa"} <= set(allowed)
    redis = find("in-cluster", "NetworkPolicy", "redis-from-services")["spec"]
    allowed = redis["ingress"][0]["from"][0]["podSelector"]["matchExpressions"][0]["values"]
    assert "gateway" not in allowed and {"overview", "reviews", "qa"} <= set(allowed)


def test_production_pins_images_and_terminates_tls() -> None:
    for kind in ("Deployment", "Job", "CronJob"):
        for doc in kinds("production", kind):
            spec = doc["spec"]
            pod = (spec.get("jobTemplate", {}).get("spec", spec))["template"]["spec"]
            for container in pod["containers"]:
                image = container["image"]
                assert not image.endswith(":latest") and ":" in image.split("/")[-1], image
                tag = image.split(":")[-1]
                assert re.fullmatch(r"v?\d+\.\d+\.\d+[\w.-]*|[0-9a-f]{64}", tag), image
    ingress = find("production", "Ingress", "runway")["spec"]
    assert ingress["tls"][0]["secretName"] and ingress["tls"][0]["hosts"]
    backend = ingress["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == "gateway"
    assert {d["metadata"].get("namespace") for d in rendered("production")} - {None} == {"runway"}


def test_the_trial_runs_bounded_redis_and_postgres() -> None:
    redis = find("in-cluster", "StatefulSet", "redis")["spec"]["template"]["spec"]
    args = redis["containers"][0]["args"]
    assert args[args.index("--maxmemory-policy") + 1] == "allkeys-lru"
    assert "--maxmemory" in args
    postgres = find("in-cluster", "StatefulSet", "postgres")
    assert postgres["spec"]["volumeClaimTemplates"]
    assert any(
        "shared_buffers" in a for a in postgres["spec"]["template"]["spec"]["containers"][0]["args"]
    )
    secret = find("in-cluster", "Secret", "runway-databases")
    keys = set(secret.get("data", {})) | set(secret.get("stringData", {}))
    for service in cfg.SERVICES:
        assert {f"{service}-database-url", f"{service}-migrate-database-url"} <= keys
    assert "postgres-exporter-dsn" in keys


def test_the_exporter_queries_are_the_local_stacks() -> None:
    config = find("base", "ConfigMap", "postgres-exporter-queries")["data"]["queries.yaml"]
    local = (ROOT / "infra" / "prometheus" / "postgres-queries.yaml").read_text()
    assert config == local
