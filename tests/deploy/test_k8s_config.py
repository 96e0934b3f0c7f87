"""deploy/k8s: every iotd container sets only variables its role reads (its own `env:` and the
ConfigMaps it loads whole), exposes and probes only ports the role serves. The manifests' types,
HPA bounds and selectors are checked with Kubernetes' own Go types in tests/deploy/k8s."""
import pytest
import yaml

from conftest import REPO, check_role_config

K8S = REPO / "deploy/k8s"


def documents():
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


def config_maps():
    return {d["metadata"]["name"]: d.get("data", {}) for _, d in documents()
            if d["kind"] == "ConfigMap"}


def iotd_containers():
    out = []
    for file, d in documents():
        if d["kind"] not in ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"):
            continue
        for c in d["spec"]["template"]["spec"]["containers"]:
            if c["image"].split(":")[0].split("/")[-1] == "iotd":
                out.append((f"{file}:{d['metadata']['name']}", c))
    return out


def container_env(where, container, maps):
    env = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            assert name in maps, f"{where}: ConfigMap {name} is not in deploy/k8s"
            env.update({k: str(v) for k, v in maps[name].items()})
        else:
            # Secrets are made by the operator (deploy/k8s/configmap.yaml says which keys);
            # they must be optional, so that the manifests apply without them.
            assert source["secretRef"].get("optional") is True, where
    for e in container.get("env", []):
        ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
        if ref:
            assert ref["key"] in maps.get(ref["name"], {}), f"{where}: {e['name']} -> {ref}"
            env[e["name"]] = str(maps[ref["name"]][ref["key"]])
        else:
            env[e["name"]] = str(e.get("value", ""))
    return env


SEED_DEPLOYMENTS = {"ingestion-api": "ingest", "dashboard-api": "dashboard",
                    "aggregator-worker": "aggregator", "alerts-worker": "alerts"}


def test_every_role_is_deployed():
    roles = {where.split(":")[1]: c["args"][0] for where, c in iotd_containers()}
    assert roles == SEED_DEPLOYMENTS


@pytest.mark.parametrize("where,container", iotd_containers(), ids=lambda x: x
                         if isinstance(x, str) else "")
def test_container_sets_only_what_its_role_reads(options, where, container):
    env = container_env(where, container, config_maps())
    ports = {p["containerPort"] for p in container["ports"]}
    role = check_role_config(where, options, container["args"], env, ports)
    served = options.ports(role, env)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        if probe in container:
            port = container[probe]["httpGet"]["port"]
            named = {p.get("name"): p["containerPort"] for p in container["ports"]}
            assert named.get(port, port) in served, f"{where}: {probe} on {port}"
    # The distributed roles need Kafka and MongoDB where they use them (the dashboard reads
    # Kafka for its live stream).
    assert env.get("BUS") == "kafka", where
    if role != "ingest":
        assert env.get("STORE") == "mongodb", where


def test_the_check_sees_configmap_keys(options):
    # A key that `iotd dashboard` does not read, loaded whole into its environment, is caught.
    maps = {"m": {"DLQ_TOPIC": "telemetry.dlq"}}
    env = container_env("x", {"envFrom": [{"configMapRef": {"name": "m"}}]}, maps)
    with pytest.raises(AssertionError, match="ignores"):
        check_role_config("x", options, ["dashboard"], env, {8002})
