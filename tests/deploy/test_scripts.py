"""Every shell script in the repository passes shellcheck; the Prometheus configuration and
alerting rules pass promtool (the real Prometheus tool) and fire as intended."""
import subprocess

import pytest

from conftest import REPO


def shell_scripts():
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, check=True, capture_output=True, text=True).stdout.split()
    scripts = []
    for f in files:
        path = REPO / f
        if not path.is_file() or f.startswith("build/"):
            continue
        with open(path, "rb") as fh:
            first = fh.readline()
        if f.endswith(".sh") or (first.startswith(b"#!") and (b"sh" in first.split(b"/")[-1])):
            scripts.append(f)
    return sorted(scripts)


def test_the_repository_has_scripts():
    found = shell_scripts()
    for expected in (".ci/run", "scripts/test.sh", "scripts/install-deps.sh"):
        assert expected in found


@pytest.mark.parametrize("script", shell_scripts())
def test_shellcheck(script):
    r = subprocess.run(["shellcheck", "--external-sources", script], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_shellcheck_finds_problems(tmp_path):
    bad = tmp_path / "bad.sh"
    bad.write_text('#!/bin/sh\ncd $1\nrm -rf $DIR/*\n')
    r = subprocess.run(["shellcheck", str(bad)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "SC2086" in r.stdout


def test_prometheus_config_and_rules():
    d = REPO / "deploy/prometheus"
    for cmd in (["promtool", "check", "config", "prometheus.yml"],
                ["promtool", "check", "rules", "rules.yml"],
                ["promtool", "test", "rules", "rules_test.yml"]):
        r = subprocess.run(cmd, cwd=d, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, " ".join(cmd) + "\n" + r.stdout + r.stderr
