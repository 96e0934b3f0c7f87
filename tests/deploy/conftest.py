"""Fixtures of the deployment tests: the repository, the iotd binary and its own option list."""
import json
import os
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def repo():
    return REPO


@pytest.fixture(scope="session")
def iotd_bin():
    path = pathlib.Path(os.environ.get("IOTD", REPO / "build/release/src/app/iotd"))
    if not path.is_file():
        pytest.fail(f"no iotd binary at {path}: build it (make build) or set IOTD")
    return path


class Options:
    """What `iotd options --json` says each role reads: its variables and their defaults."""

    def __init__(self, roles):
        self.roles = roles

    def env(self, role):
        """{variable: default} of `iotd <role>`."""
        if role not in self.roles:
            raise KeyError(f"iotd has no role {role!r} (it has {sorted(self.roles)})")
        return {o["env"]: o["default"] for o in self.roles[role] if o["env"]}

    def ports(self, role, environment):
        """The TCP ports `iotd <role>` listens on with `environment` (its *_PORT options)."""
        return {int(environment.get(name, default))
                for name, default in self.env(role).items() if name.endswith("_PORT")}


@pytest.fixture(scope="session")
def options(iotd_bin):
    out = subprocess.run([str(iotd_bin), "options", "--json"], check=True, capture_output=True,
                         text=True, timeout=30).stdout
    return Options(json.loads(out)["roles"])


def check_role_config(where, options, args, environment, container_ports):
    """Asserts that a container running `iotd <args>` sets only variables its role reads and
    publishes only ports the role serves. Returns the role."""
    assert args, f"{where}: no command: the image's default (all) is implicit; name the role"
    role = args[0]
    known = options.env(role)
    unknown = sorted(set(environment) - set(known))
    assert not unknown, f"{where}: `iotd {role}` ignores {unknown}"
    served = options.ports(role, environment)
    extra = sorted(set(container_ports) - served)
    assert not extra, f"{where}: `iotd {role}` serves {sorted(served)}, not {extra}"
    assert served <= set(container_ports), \
        f"{where}: `iotd {role}` serves {sorted(served)} but only {sorted(container_ports)} exposed"
    return role
