"""`iotd token create|list|revoke` against the real binary: what it prints, what it stores (never
a secret; mode 0600), its exit codes, and the options it reads (TOKENS_FILE, DATA_DIR)."""
import hashlib
import json
import os
import re
import stat
import subprocess

from conftest import IOTD

TOKEN_RE = re.compile(r"iotd_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")
# The secret is everything after "iotd_<id>_" (it may contain "_" itself: base64url).


def run(*args, env=None):
    return subprocess.run([IOTD, "token", *args], capture_output=True, text=True, timeout=20,
                          env=env)


def test_create_prints_the_token_once_and_stores_only_its_sha256(tmp_path):
    path = tmp_path / "tokens"
    r = run("create", "--device", "dev-1", "--name", "boiler room", "--tokens-file", str(path))
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert TOKEN_RE.fullmatch(token), r.stdout
    text = path.read_text()
    assert token not in text and token[18:] not in text
    assert hashlib.sha256(token.encode()).hexdigest() in text
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # Every token is new.
    again = run("create", "--device", "dev-1", "--tokens-file", str(path)).stdout.strip()
    assert TOKEN_RE.fullmatch(again) and again != token


def test_list_shows_ids_kinds_and_scopes_never_secrets(tmp_path):
    path = str(tmp_path / "tokens")
    made = [run(*args, "--tokens-file", path).stdout.strip() for args in (
        ("create", "--device", "dev-1", "--name", "boiler room"),
        ("create", "--gateway", "gw-1, gw-2"),
        ("create", "--read"),
        ("create", "--read", "--prefix", "site-a-", "--name", "site A"))]
    assert all(TOKEN_RE.fullmatch(t) for t in made), made
    listed = json.loads(run("list", "--json", "--tokens-file", path).stdout)
    assert [(t["id"], t["kind"], t["devices"], t["prefix"], t["name"], t["revoked"])
            for t in listed] == [
        (made[0].split("_")[1], "device", ["dev-1"], None, "boiler room", None),
        (made[1].split("_")[1], "gateway", ["gw-1", "gw-2"], None, "", None),
        (made[2].split("_")[1], "read", [], "", "", None),
        (made[3].split("_")[1], "read", [], "site-a-", "site A", None)]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT.*Z", t["created"]) for t in listed)
    table = run("list", "--tokens-file", path)
    assert table.returncode == 0
    for t in made:
        assert t.split("_")[1] in table.stdout and t[18:] not in table.stdout
    assert "site-a-*" in table.stdout and "gw-1,gw-2" in table.stdout


def test_revoke_marks_the_token_and_unknown_ids_fail(tmp_path):
    path = str(tmp_path / "tokens")
    token = run("create", "--read", "--tokens-file", path).stdout.strip()
    token_id = token.split("_")[1]
    r = run("revoke", token_id, "--tokens-file", path)
    assert r.returncode == 0 and r.stdout.strip() == f"revoked {token_id}", r.stderr
    assert run("revoke", token_id, "--tokens-file", path).stdout.strip() == \
        f"already revoked {token_id}"
    listed = json.loads(run("list", "--json", "--tokens-file", path).stdout)
    assert listed[0]["revoked"] is not None
    r = run("revoke", "0123456789ab", "--tokens-file", path)
    assert r.returncode == 1 and "no token 0123456789ab" in r.stderr


def test_bad_arguments_exit_2_and_write_nothing(tmp_path):
    path = tmp_path / "tokens"
    for args in (("create",), ("create", "--device", "bad id"), ("create", "--gateway", "a,,b"),
                 ("create", "--gateway", "a,a"), ("create", "--read", "--prefix", "a b"),
                 ("create", "--device", "d", "--name", "line\nbreak")):
        r = run(*args, "--tokens-file", str(path))
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stdout == "", args
    for args in (("create", "--device", "a", "--read"), ("create", "--prefix", "p"),
                 ("create", "--device", "a", "--gateway", "b")):
        assert run(*args, "--tokens-file", str(path)).returncode not in (0, 1), args
    assert not path.exists()


def test_the_tokens_file_comes_from_tokens_file_or_data_dir(tmp_path):
    env = dict(os.environ, DATA_DIR=str(tmp_path / "data"))
    assert run("create", "--device", "d", env=env).returncode == 0
    assert (tmp_path / "data/tokens").is_file()
    env["TOKENS_FILE"] = str(tmp_path / "elsewhere")
    assert run("create", "--device", "d", env=env).returncode == 0
    assert len(json.loads(run("list", "--json", env=env).stdout)) == 1
    roles = json.loads(subprocess.run([IOTD, "options", "--json"], capture_output=True,
                                      text=True, timeout=20).stdout)["roles"]
    env_of = lambda role: {o["env"] for o in roles[role] if o["env"]}  # noqa: E731
    assert {"INGEST_AUTH", "DASHBOARD_AUTH", "TOKENS_FILE"} <= env_of("all")
    assert {"INGEST_AUTH", "TOKENS_FILE"} <= env_of("ingest") and \
        "DASHBOARD_AUTH" not in env_of("ingest")
    assert {"DASHBOARD_AUTH", "TOKENS_FILE"} <= env_of("dashboard") and \
        "INGEST_AUTH" not in env_of("dashboard")
    assert {"TOKENS_FILE", "DATA_DIR"} <= env_of("token create")
    assert "LOADGEN_TOKEN" in env_of("loadgen")
