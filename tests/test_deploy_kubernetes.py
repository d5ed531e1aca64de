"""deploy/kubernetes/ without a cluster: both kustomizations (base, inferencepool overlay) are rendered
by a small kustomize stand-in here (and by `kubectl kustomize` where kubectl exists, which must agree);
core kinds validate with kubernetes-validate (strict) against a recent Kubernetes, ServiceMonitor and
InferencePool against their own CRDs' schemas (vendored: tests/data/README.md); and the pieces fit:
the ConfigMap's qroute YAML loads with `load_settings` under the Deployment's environment, probes hit
/readyz and /healthz on the container port, every Secret reference is in the example Secret, and the
InferencePool selects the vLLM pods that its Gateway and qroute's local backend lead to."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from gateway.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "kubernetes"
CRDS = ROOT / "tests" / "data" / "crds"
KUBERNETES_VERSION = "1.34.0"
CORE_GROUPS = {"v1", "apps/v1", "autoscaling/v2", "policy/v1"}
VARIANTS = ("base", "inferencepool")

Doc = dict[str, Any]


def load_docs(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def merge(target: Any, patch: Any) -> Any:
    """Strategic merge as kustomize applies it to these manifests: maps merge, null deletes a key,
    lists of named maps merge by name, other lists are replaced."""
    if isinstance(target, dict) and isinstance(patch, dict):
        out = dict(target)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if (isinstance(target, list) and isinstance(patch, list) and patch
            and all(isinstance(x, dict) and "name" in x for x in [*target, *patch])):
        out_list = [copy.deepcopy(x) for x in target]
        for item in patch:
            for i, existing in enumerate(out_list):
                if existing["name"] == item["name"]:
                    out_list[i] = merge(existing, item)
                    break
            else:
                out_list.append(copy.deepcopy(item))
        return out_list
    return copy.deepcopy(patch)


def same_object(a: Doc, b: Doc) -> bool:
    return a["kind"] == b["kind"] and a["metadata"]["name"] == b["metadata"]["name"]


def render(folder: Path) -> list[Doc]:
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    docs: list[Doc] = []
    for resource in kustomization.get("resources", []):
        path = folder / resource
        docs += render(path) if path.is_dir() else load_docs(path)
    for entry in kustomization.get("patches", []):
        for patch in load_docs(folder / entry["path"]):
            matches = [i for i, d in enumerate(docs) if same_object(d, patch)]
            assert len(matches) == 1, f"{entry['path']}: patch {patch['kind']}/{patch['metadata']['name']} matches {len(matches)}"
            if patch.get("$patch") == "delete":
                del docs[matches[0]]
            else:
                docs[matches[0]] = merge(docs[matches[0]], patch)
    namespace = kustomization.get("namespace")
    for doc in docs:
        if namespace and doc["kind"] != "Namespace":
            doc["metadata"]["namespace"] = namespace
        for group in kustomization.get("labels", []):
            doc["metadata"].setdefault("labels", {}).update(group["pairs"])
        for image in kustomization.get("images", []):
            for container in pod_spec(doc).get("containers", []) if doc["kind"] == "Deployment" else []:
                name = container["image"].split(":")[0]
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image['newTag']}"
    return docs


@pytest.fixture(scope="module", params=VARIANTS)
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Doc]]:
    return {v: render(K8S / v) for v in VARIANTS}


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def pod_spec(doc: Doc) -> Doc:
    return doc["spec"]["template"]["spec"]


def container(doc: Doc, name: str) -> Doc:
    return next(c for c in pod_spec(doc)["containers"] if c["name"] == name)


def qroute_settings(docs: list[Doc], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """The ConfigMap's qroute.yaml, loaded under the environment the Deployment gives the container
    (Secret references get dummy values, field references the pod's name)."""
    config = find(docs, "ConfigMap", "qroute-config")["data"]["qroute.yaml"]
    path = tmp_path / "qroute.yaml"
    path.write_text(config)
    for env in container(find(docs, "Deployment", "qroute"), "qroute")["env"]:
        if "value" in env:
            monkeypatch.setenv(env["name"], env["value"])
        elif "secretKeyRef" in env["valueFrom"]:
            monkeypatch.setenv(env["name"], f"dummy-{env['valueFrom']['secretKeyRef']['key']}")
        else:
            monkeypatch.setenv(env["name"], "qroute-7c9f-abcde")
    return load_settings(path)


# --- rendering ---------------------------------------------------------------------------------------

def test_kubectl_kustomize_renders_the_same(rendered: dict[str, list[Doc]], variant: str) -> None:
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl not installed: the stand-in renderer above is used alone")
    proc = subprocess.run([kubectl, "kustomize", str(K8S / variant)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    theirs = sorted((d for d in yaml.safe_load_all(proc.stdout) if d), key=lambda d: (d["kind"], d["metadata"]["name"]))
    ours = sorted(rendered[variant], key=lambda d: (d["kind"], d["metadata"]["name"]))
    assert [(d["kind"], d["metadata"]["name"]) for d in theirs] == [(d["kind"], d["metadata"]["name"]) for d in ours]
    for a, b in zip(theirs, ours, strict=True):
        assert json.loads(json.dumps(a)) == json.loads(json.dumps(b)), f"{a['kind']}/{a['metadata']['name']}"


def test_the_overlay_changes_only_what_it_says(rendered: dict[str, list[Doc]]) -> None:
    base = {(d["kind"], d["metadata"]["name"]) for d in rendered["base"]}
    pool = {(d["kind"], d["metadata"]["name"]) for d in rendered["inferencepool"]}
    assert pool - base == {("InferencePool", "vllm-qwen3-8b"), ("Gateway", "inference-gateway"),
                           ("HTTPRoute", "vllm-qwen3-8b")}
    assert base - pool == {("PersistentVolumeClaim", "vllm-model-cache")}
    assert find(rendered["inferencepool"], "Deployment", "vllm")["spec"]["replicas"] == 2


# --- schemas -----------------------------------------------------------------------------------------

def test_core_kinds_validate_against_kubernetes(rendered: dict[str, list[Doc]], variant: str) -> None:
    core = [d for d in rendered[variant] if d["apiVersion"] in CORE_GROUPS]
    assert {d["kind"] for d in core} >= {"Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler",
                                          "PodDisruptionBudget", "Namespace"}
    for doc in core:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    secret = load_docs(K8S / "secret.example.yaml")
    for doc in secret:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_validation_catches_mistakes(rendered: dict[str, list[Doc]]) -> None:
    bad = copy.deepcopy(find(rendered["base"], "Deployment", "qroute"))
    container(bad, "qroute")["readinesProbe"] = container(bad, "qroute").pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


def crd_validator(filename: str, version: str) -> jsonschema.Draft7Validator:
    crd = yaml.safe_load((CRDS / filename).read_text())
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == version)["schema"]["openAPIV3Schema"]
    return jsonschema.Draft7Validator(schema)


def test_servicemonitors_match_the_prometheus_operator_crd(rendered: dict[str, list[Doc]], variant: str) -> None:
    validator = crd_validator("monitoring.coreos.com_servicemonitors.yaml", "v1")
    monitors = [d for d in rendered[variant] if d["kind"] == "ServiceMonitor"]
    assert {m["metadata"]["name"] for m in monitors} == {"qroute", "vllm"}
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        errors = list(validator.iter_errors(monitor))
        assert not errors, [e.message for e in errors]
        # it selects a Service, on a port that Service names
        services = [s for s in rendered[variant] if s["kind"] == "Service" and
                    monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"].get("labels", {}).items()]
        assert len(services) == 1, monitor["metadata"]["name"]
        port_names = {p["name"] for p in services[0]["spec"]["ports"]}
        assert all(e["port"] in port_names and e["path"] == "/metrics" for e in monitor["spec"]["endpoints"])
        # the job label (the Service's name) is what deploy/prometheus/rules/ expects
        assert services[0]["metadata"]["name"] in ("qroute", "vllm")


def test_inferencepool_matches_its_crd_and_selects_the_vllm_pods(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["inferencepool"]
    pool = find(docs, "InferencePool", "vllm-qwen3-8b")
    assert pool["apiVersion"] == "inference.networking.k8s.io/v1"
    validator = crd_validator("inference.networking.k8s.io_inferencepools.yaml", "v1")
    errors = list(validator.iter_errors(pool))
    assert not errors, [e.message for e in errors]
    assert {"selector", "targetPorts"} <= set(pool["spec"])  # the CRD's required fields
    # the CRD's CEL rule: a Service-kind endpoint picker needs a port
    picker = pool["spec"]["endpointPickerRef"]
    assert picker.get("kind", "Service") != "Service" or "port" in picker
    # the schema rejects the pre-v1 field names
    old = copy.deepcopy(pool)
    old["spec"]["targetPortNumber"] = old["spec"].pop("targetPorts")[0]["number"]
    assert list(validator.iter_errors(old))

    vllm = find(docs, "Deployment", "vllm")
    assert pool["spec"]["selector"]["matchLabels"].items() <= vllm["spec"]["template"]["metadata"]["labels"].items()
    ports = {p["containerPort"] for p in container(vllm, "vllm")["ports"]}
    assert {p["number"] for p in pool["spec"]["targetPorts"]} <= ports


def test_gateway_routes_to_the_pool_and_qroute_points_at_the_gateway(
        rendered: dict[str, list[Doc]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    docs = rendered["inferencepool"]
    gateway = find(docs, "Gateway", "inference-gateway")
    route = find(docs, "HTTPRoute", "vllm-qwen3-8b")
    for doc in (gateway, route):
        assert doc["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert gateway["spec"]["gatewayClassName"] and gateway["spec"]["listeners"]
    assert [p["name"] for p in route["spec"]["parentRefs"]] == ["inference-gateway"]
    backends = [b for rule in route["spec"]["rules"] for b in rule["backendRefs"]]
    assert backends == [{"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": "vllm-qwen3-8b"}]
    settings = qroute_settings(docs, monkeypatch, tmp_path)
    local = urlsplit(str(settings.backends["vllm-local"].api_base))
    # Istio names the Gateway's Service <gateway>-<class>; the listener's port
    assert local.hostname == f"{gateway['metadata']['name']}-{gateway['spec']['gatewayClassName']}"
    assert local.port == gateway["spec"]["listeners"][0]["port"]
    assert local.path == "/v1"
    assert settings.backends["vllm-local"].hardware is not None
    assert settings.backends["vllm-local"].hardware.gpus == find(docs, "Deployment", "vllm")["spec"]["replicas"]


def test_overlay_config_differs_from_the_base_only_in_the_local_endpoint_and_gpus(
        rendered: dict[str, list[Doc]]) -> None:
    base = yaml.safe_load(find(rendered["base"], "ConfigMap", "qroute-config")["data"]["qroute.yaml"])
    pool = yaml.safe_load(find(rendered["inferencepool"], "ConfigMap", "qroute-config")["data"]["qroute.yaml"])
    # The Gateway does not serve vLLM's /metrics: spill-over reads the queue from the vllm Service.
    base_api = urlsplit(base["backends"]["vllm-local"]["api_base"])
    assert pool["backends"]["vllm-local"].pop("metrics_url") == f"{base_api.scheme}://{base_api.netloc}/metrics"
    pool["backends"]["vllm-local"]["api_base"] = base["backends"]["vllm-local"]["api_base"]
    pool["backends"]["vllm-local"]["hardware"]["gpus"] = base["backends"]["vllm-local"]["hardware"]["gpus"]
    assert pool == base


# --- the pieces fit ----------------------------------------------------------------------------------

def test_configmap_loads_with_load_settings(rendered: dict[str, list[Doc]], variant: str,
                                            monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    docs = rendered[variant]
    settings = qroute_settings(docs, monkeypatch, tmp_path)
    assert settings.server.host == "0.0.0.0" and settings.server.port == 4000
    assert settings.server.replica_id == "qroute-7c9f-abcde"
    assert settings.backends["dashscope"].api_key is not None
    assert settings.backends["dashscope"].api_key.get_secret_value() == "dummy-dashscope-api-key"
    assert settings.client_keys() == {"dummy-client-api-keys"}
    assert settings.redis is not None
    redis = urlsplit(settings.redis.url)
    service = find(docs, "Service", redis.hostname or "")
    assert redis.port in {p["port"] for p in service["spec"]["ports"]}
    if variant == "base":
        local = urlsplit(str(settings.backends["vllm-local"].api_base))
        vllm = find(docs, "Service", local.hostname or "")
        assert local.port in {p["port"] for p in vllm["spec"]["ports"]}
    # the state file lives on a writable volume (the root filesystem is read-only)
    mounts = {m["mountPath"] for m in container(find(docs, "Deployment", "qroute"), "qroute")["volumeMounts"]}
    assert settings.router.state_file and str(Path(settings.router.state_file).parent) in mounts


def named_port(c: Doc, port: str | int) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in c["ports"] if p["name"] == port)


def test_qroute_deployment(rendered: dict[str, list[Doc]], variant: str) -> None:
    docs = rendered[variant]
    deploy = find(docs, "Deployment", "qroute")
    c = container(deploy, "qroute")
    port = int(c["args"][c["args"].index("--port") + 1])
    assert c["args"][:3] == ["serve", "--config", "/etc/qroute/qroute.yaml"]
    assert named_port(c, c["readinessProbe"]["httpGet"]["port"]) == port
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert named_port(c, c["livenessProbe"]["httpGet"]["port"]) == port
    assert deploy["spec"]["replicas"] >= 2
    assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
    # non-root, as the image's user
    pod = pod_spec(deploy)["securityContext"]
    dockerfile_user = re.search(r"^USER (\d+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert dockerfile_user and pod["runAsNonRoot"] is True and pod["runAsUser"] == int(dockerfile_user.group(1))
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}}
    # the config comes from the ConfigMap, mounted where the command reads it
    volume = next(v for v in pod_spec(deploy)["volumes"] if "configMap" in v)
    assert volume["configMap"]["name"] == "qroute-config"
    mount = next(m for m in c["volumeMounts"] if m["name"] == volume["name"])
    assert f"{mount['mountPath']}/{volume['configMap']['items'][0]['path']}" == "/etc/qroute/qroute.yaml"
    # the Service, HPA and PDB lead to these pods
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    service = find(docs, "Service", "qroute")
    assert service["spec"]["selector"].items() <= labels.items()
    assert named_port(c, service["spec"]["ports"][0]["targetPort"]) == port
    pdb = find(docs, "PodDisruptionBudget", "qroute")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = find(docs, "HorizontalPodAutoscaler", "qroute")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "qroute"}
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_secret_references_are_in_the_example_secret(rendered: dict[str, list[Doc]], variant: str) -> None:
    (secret,) = load_docs(K8S / "secret.example.yaml")
    assert secret["kind"] == "Secret"
    data = secret["stringData"]
    refs = []
    for doc in rendered[variant]:
        assert doc["kind"] != "Secret", "no Secret inside the kustomization: keys are created apart"
        if doc["kind"] != "Deployment":
            continue
        for c in pod_spec(doc)["containers"]:
            for env in c.get("env", []):
                if "value" in env:
                    assert not re.search(r"(?i)(key|token|password|secret)", env["name"]), env["name"]
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.append(ref)
                    assert ref["name"] == secret["metadata"]["name"]
                    assert ref["key"] in data, ref["key"]
                    if not ref.get("optional"):
                        assert "REPLACE-ME" in data[ref["key"]], ref["key"]  # a placeholder, clearly not real
    assert refs
    assert not (set(data) - {r["key"] for r in refs}), "example keys nobody reads"


def test_vllm_deployment(rendered: dict[str, list[Doc]], variant: str) -> None:
    docs = rendered[variant]
    deploy = find(docs, "Deployment", "vllm")
    c = container(deploy, "vllm")
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    argv = " ".join([*c["command"], *c["args"]]).replace("=", " ")
    for flag in ("vllm serve Qwen/Qwen3-8B", "--served-model-name Qwen/Qwen3-8B", "--gpu-memory-utilization 0.90",
                 "--max-model-len 32768", "--reasoning-parser qwen3"):
        assert flag in argv, flag
    port = int(re.search(r"--port (\d+)", argv).group(1))  # type: ignore[union-attr]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == "/health"
        assert named_port(c, c[probe]["httpGet"]["port"]) == port
    cache = next(m for m in c["volumeMounts"] if m["name"] == "model-cache")
    assert cache["mountPath"] == "/root/.cache/huggingface"
    volume = next(v for v in pod_spec(deploy)["volumes"] if v["name"] == "model-cache")
    if variant == "base":
        claim = volume["persistentVolumeClaim"]["claimName"]
        find(docs, "PersistentVolumeClaim", claim)
    else:
        assert "ephemeral" in volume and "persistentVolumeClaim" not in volume
    assert any(e["name"] == "HF_ENDPOINT" for e in c["env"])
    service = find(docs, "Service", "vllm")
    assert service["spec"]["selector"].items() <= deploy["spec"]["template"]["metadata"]["labels"].items()


def test_everything_is_in_one_namespace(rendered: dict[str, list[Doc]], variant: str) -> None:
    namespaces = {d["metadata"].get("namespace") for d in rendered[variant] if d["kind"] != "Namespace"}
    assert namespaces == {find(rendered[variant], "Namespace", "qroute")["metadata"]["name"]}
