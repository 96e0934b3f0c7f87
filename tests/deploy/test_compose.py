"""docker-compose.yml and docker-compose.embedded.yml: accepted by Debian's docker-compose, the
seed's services and ports, start-up order, and nothing iotd would ignore."""
import subprocess

import pytest
import yaml

from conftest import check_role_config

COMPOSE_FILES = ["docker-compose.yml", "docker-compose.embedded.yml"]
# The seed's service table (README "Docker Services"); ZooKeeper is gone: Kafka runs in KRaft mode.
SEED_PORTS = {
    "ingestion-api": {8001},
    "dashboard-api": {8002},
    "aggregator-worker": {8003},
    "alerts-worker": {8004},
    "kafka": {9092, 9094},
    "mongo": {27017},
}
SEED_ROLES = {"ingestion-api": "ingest", "dashboard-api": "dashboard",
              "aggregator-worker": "aggregator", "alerts-worker": "alerts"}


def compose(repo, file, *args, profile=None):
    cmd = ["docker-compose", "-f", str(repo / file)]
    if profile:
        cmd += ["--profile", profile]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=60, cwd=repo)


def resolved(repo, file, profile=None):
    """The file as docker-compose itself resolves it (anchors, merges, defaults)."""
    r = compose(repo, file, "config", profile=profile)
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)


def published(service):
    """Container ports of `ports:` entries (docker-compose config gives long or short syntax)."""
    ports = set()
    for p in service.get("ports", []):
        if isinstance(p, dict):
            ports.add(int(p["target"]))
        else:
            ports.add(int(str(p).split(":")[-1].split("/")[0]))
    return ports


def volume_targets(service):
    """(kind, container path) of `volumes:` entries, long or short syntax."""
    out = set()
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            out.add((v["type"], v["target"]))
        else:
            source, target = str(v).split(":")[:2]
            out.add(("bind" if source.startswith((".", "/")) else "volume", target))
    return out


def is_iotd(service):
    return service.get("image", "").startswith("iotd") or "build" in service


@pytest.mark.parametrize("file", COMPOSE_FILES)
def test_docker_compose_accepts_the_file(repo, file):
    r = compose(repo, file, "config", "-q")
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_docker_compose_rejects_a_broken_file(repo, tmp_path):
    # The check above can fail: a misspelt key is refused by the same command.
    broken = (repo / "docker-compose.embedded.yml").read_text().replace("healthcheck:", "healtcheck:")
    (tmp_path / "docker-compose.yml").write_text(broken)
    r = subprocess.run(["docker-compose", "-f", str(tmp_path / "docker-compose.yml"), "config", "-q"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "healtcheck" in r.stderr


def test_seed_services_and_ports(repo):
    services = resolved(repo, "docker-compose.yml")["services"]
    for name, ports in SEED_PORTS.items():
        assert name in services, f"the seed's service {name} is missing"
        assert published(services[name]) == ports, name
    assert "zookeeper" not in services
    assert "KRaft" in (repo / "README.md").read_text(), "the README says ZooKeeper is not needed"
    for name, role in SEED_ROLES.items():
        assert services[name]["command"] == [role], name


@pytest.mark.parametrize("file", COMPOSE_FILES)
def test_iotd_services_set_only_what_iotd_reads(repo, options, file):
    services = resolved(repo, file, profile="monitoring")["services"]
    roles = []
    for name, s in services.items():
        if not is_iotd(s):
            continue
        env = {k: str(v) for k, v in (s.get("environment") or {}).items()}
        roles.append(check_role_config(f"{file}:{name}", options, s["command"], env, published(s)))
        # The health check probes a port this role serves (or, with no URL, all of them).
        test = s["healthcheck"]["test"]
        assert test[:3] == ["CMD", "iotd", "health"], f"{name}: {test}"
        for url in test[3:]:
            port = int(url.split(":")[2].split("/")[0])
            assert port in options.ports(s["command"][0], env), f"{name}: {url}"
        assert s["stop_grace_period"] in ("20s",), "longer than SHUTDOWN_TIMEOUT (10s)"
    assert roles, f"{file} runs no iotd"
    if file == "docker-compose.embedded.yml":
        assert roles == ["all"]
        data_dir = services["iotd"]["environment"]["DATA_DIR"]
        assert volume_targets(services["iotd"]) == {("volume", data_dir)}


def test_the_check_catches_a_variable_iotd_ignores(options):
    with pytest.raises(AssertionError, match="ignores"):
        check_role_config("x", options, ["ingest"], {"STORE": "mongodb"}, {8001})
    with pytest.raises(AssertionError, match="serves"):
        check_role_config("x", options, ["dashboard"], {}, {8001})


def test_start_up_order(repo):
    services = resolved(repo, "docker-compose.yml")["services"]
    needs = {"ingestion-api": {"kafka"}, "aggregator-worker": {"kafka", "mongo"},
             "alerts-worker": {"kafka", "mongo"}, "dashboard-api": {"mongo"}}
    for name, deps in needs.items():
        depends = services[name]["depends_on"]
        assert set(depends) == deps, name
        for d in deps:
            assert depends[d]["condition"] == "service_healthy", f"{name} -> {d}"
            assert "healthcheck" in services[d], d
    # Every stateful service keeps its data in a named volume.
    for name, path in {"kafka": "/var/lib/kafka/data", "mongo": "/data/db"}.items():
        assert ("volume", path) in volume_targets(services[name]), name


def test_kafka_listeners_match_what_iotd_connects_to(repo):
    services = resolved(repo, "docker-compose.yml")["services"]
    env = services["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    advertised = env["KAFKA_ADVERTISED_LISTENERS"]
    for name in SEED_ROLES:
        s = services[name]
        if "KAFKA_BOOTSTRAP_SERVERS" in (s.get("environment") or {}):
            assert s["environment"]["KAFKA_BOOTSTRAP_SERVERS"] in advertised
    for name in ("dashboard-api", "aggregator-worker", "alerts-worker"):
        assert services[name]["environment"]["MONGO_URL"] == "mongodb://mongo:27017"


def test_prometheus_profile_scrapes_every_role(repo):
    services = resolved(repo, "docker-compose.yml", profile="monitoring")["services"]
    assert services["prometheus"]["profiles"] == ["monitoring"]
    config = yaml.safe_load((repo / "deploy/prometheus/prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]}
    expected = {f"{name}:{port}" for name, ports in SEED_PORTS.items() if name in SEED_ROLES
                for port in ports}
    assert targets == expected
