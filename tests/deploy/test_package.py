"""The Debian package (`make package`: cmake/Package.cmake, packaging/).

The .deb is $IOTD_DEB when set, else built here with `make package`. Checked:
- its control fields, contents and conffile; Depends names the package of every shared library the
  binary needs; the binary is stripped; the maintainer scripts parse and pass shellcheck;
- the unit passes `systemd-analyze verify` (and `security --offline`) against the extracted tree,
  whose /usr/bin/iotd is the packaged one;
- the packaged binary serves `iotd all` with the packaged /etc/iotd/iotd.env (DATA_DIR and the
  ports overridden), takes a reading and stops cleanly on SIGTERM;
- as root, on a machine without an iotd install: a real `dpkg -i`, an upgrade, a remove and a
  purge, each checked (user, data directory, conffile, unit, enablement), and always undone.
"""
import grp
import json
import os
import pathlib
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
UNIT = "lib/systemd/system/iotd.service"
ENV_FILE = "etc/iotd/iotd.env"
BINARY = "usr/bin/iotd"
SCRIPTS = ("postinst", "prerm", "postrm")
# The seed's example reading (README of the original system).
SEED_READING = {"device_id": "dev-1", "temperature_c": 25.5, "humidity": 60.0}
# What dpkg and the maintainer scripts may print; anything else is a warning or an error.
DPKG_OK = [
    r"Selecting previously unselected package iotd\.",
    r"\(Reading database \.\.\. .*\)",
    r"Preparing to unpack .*\.deb \.\.\.",
    r"Unpacking iotd \(\S+\)( over \(\S+\))? \.\.\.",
    r"Setting up iotd \(\S+\) \.\.\.",
    r"Removing iotd \(\S+\) \.\.\.",
    r"Purging configuration files for iotd \(\S+\) \.\.\.",
    r"Created symlink /etc/systemd/system/multi-user\.target\.wants/iotd\.service "
    r"\S+ /lib/systemd/system/iotd\.service\.",
]


def run(args, timeout=120, check=True, **kw):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL, **kw)
    if check:
        assert r.returncode == 0, f"{args} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r


def project_version():
    m = re.search(r"project\(iotd VERSION ([0-9.]+)", (REPO / "CMakeLists.txt").read_text())
    assert m, "no project(iotd VERSION ...) in CMakeLists.txt"
    return m.group(1)


def duration_seconds(text):
    m = re.fullmatch(r"(\d+)(ms|s|m|min)?", text.strip())
    assert m, f"not a duration: {text!r}"
    n, unit = int(m.group(1)), m.group(2) or "s"
    return n / 1000 if unit == "ms" else n * 60 if unit in ("m", "min") else n


def parse_env_file(text):
    """{KEY: VALUE} as systemd's EnvironmentFile= reads this file: KEY=VALUE lines, comments
    (#, ;) and blank lines ignored. Anything else (shell syntax, quotes) is refused here, since
    systemd and a shell would read it differently."""
    env = {}
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s[0] in "#;":
            continue
        m = re.fullmatch(r"([A-Z][A-Z0-9_]*)=([^\"'`$\\]*)", s)
        assert m, f"iotd.env:{n}: not a plain KEY=VALUE line: {line!r}"
        assert m.group(1) not in env, f"iotd.env:{n}: {m.group(1)} set twice"
        env[m.group(1)] = m.group(2).strip()
    return env


def commented_keys(text):
    return re.findall(r"^#([A-Z][A-Z0-9_]*)=", text, re.M)


def parse_unit(text):
    """{(section, key): [values]} of a unit file (keys may repeat)."""
    out, section = {}, None
    for line in text.splitlines():
        s = line.strip()
        if not s or s[0] in "#;":
            continue
        if s.startswith("["):
            section = s.strip("[]")
            continue
        key, _, value = s.partition("=")
        out.setdefault((section, key.strip()), []).append(value.strip())
    return out


def help_options(binary):
    """{ENV: default or None} of `iotd all --help`."""
    text = run([binary, "all", "--help"], timeout=30).stdout
    out = {}
    for line in text.splitlines():
        m = re.search(r"--[\w-]+ (.*) \(Env:(\w+)\)\s*$", line)
        if m:
            spec = m.group(1)
            out[m.group(2)] = spec.rsplit("=", 1)[1] if "=" in spec else None
    assert "DATA_DIR" in out and "INGEST_PORT" in out, f"cannot read `iotd all --help`:\n{text}"
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, timeout=5):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return None, b""


def wait_for(fn, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}", pytrace=False)
        time.sleep(0.1)


def serve_and_stop(args, env, ingest, dashboard, log, cwd, data_dir):
    """Starts `args` (iotd all), waits for /health on both ports, ingests the seed's reading,
    sees it on the dashboard, then SIGTERM: the exit must be 0 within 20 s."""
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(a) for a in args], env=env, cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        def healthy():
            if proc.poll() is not None:
                pytest.fail(f"iotd exited {proc.returncode} at start:\n{log.read_text()}",
                            pytrace=False)
            return all(http("GET", f"http://127.0.0.1:{p}/health")[0] == 200
                       for p in (ingest, dashboard))
        wait_for(healthy, 30, "GET /health 200 on both ports")
        status, body = http("POST", f"http://127.0.0.1:{ingest}/ingest", SEED_READING)
        assert status == 202, f"POST /ingest: {status} {body!r}"
        wait_for(lambda: http("GET", f"http://127.0.0.1:{dashboard}/devices/dev-1")[0] == 200,
                 15, "dev-1 on the dashboard")
        for name in ("bus.db", "store.db"):
            assert (pathlib.Path(data_dir) / name).is_file(), f"no {name} in DATA_DIR {data_dir}"
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail("iotd did not stop within 20 s of SIGTERM", pytrace=False)
        assert code == 0, f"iotd exited {code} on SIGTERM:\n{log.read_text()}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


# ---- the package ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def deb():
    path = os.environ.get("IOTD_DEB")
    if path:
        p = pathlib.Path(path)
        assert p.is_file(), f"IOTD_DEB={path}: no such file"
        return p.resolve()
    # Under `make test` this is a sub-make: without the parent's MAKE* variables and with
    # --no-print-directory, the last line is the package's path, as for a user.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    r = run(["make", "--no-print-directory", "package"], timeout=2400, cwd=REPO, env=env)
    lines = r.stdout.strip().splitlines()
    assert lines, f"`make package` printed nothing:\n{r.stderr}"
    p = pathlib.Path(lines[-1])
    assert p.is_absolute() and p.suffix == ".deb" and p.is_file(), \
        f"`make package` must print the .deb's path last, printed {lines[-1]!r}"
    return p


@pytest.fixture(scope="module")
def pkg(deb):
    """The .deb extracted: .root (the files, with the host's unit directory under it so that
    systemd-analyze finds the targets the unit depends on) and .control (DEBIAN/)."""
    with tempfile.TemporaryDirectory(prefix="iotd-pkg-") as tmp:
        tmp = pathlib.Path(tmp)
        root, control = tmp / "root", tmp / "control"
        assert shutil.which("systemd-analyze") and os.path.isdir("/lib/systemd/system"), \
            "systemd-analyze and the systemd units are missing: apt-get install systemd"
        shutil.copytree("/lib/systemd/system", root / "lib/systemd/system", symlinks=True)
        run(["dpkg-deb", "-x", deb, root])
        run(["dpkg-deb", "-e", deb, control])

        class Pkg:
            pass
        p = Pkg()
        p.deb, p.root, p.control, p.tmp = deb, root, control, tmp
        yield p


def field(deb, name):
    return run(["dpkg-deb", "--field", deb, name]).stdout.strip()


def test_control_fields(pkg):
    assert field(pkg.deb, "Package") == "iotd"
    assert field(pkg.deb, "Version") == project_version() + "-1"
    assert field(pkg.deb, "Architecture") == run(["dpkg", "--print-architecture"]).stdout.strip()
    for name in ("Maintainer", "Section", "Priority", "Homepage", "Description"):
        assert field(pkg.deb, name), f"no {name} field"
    out = run([pkg.root / BINARY, "--version"], timeout=30).stdout
    assert out.split() == ["iotd", project_version()], f"iotd --version: {out!r}"


def test_depends_has_every_library(pkg):
    depends = {d.split()[0].split(":")[0]
               for d in re.split(r"[,|]", field(pkg.deb, "Depends")) if d.strip()}
    assert {"adduser", "init-system-helpers"} <= depends, sorted(depends)
    for prefix in ("libsimdjson", "libsqlite3", "libmongoc", "libbson", "librdkafka", "libc6"):
        assert [d for d in depends if d.startswith(prefix)], \
            f"Depends has no {prefix}*: {sorted(depends)}"
    # Every NEEDED library of the binary is in a package that Depends names.
    dynamic = run(["readelf", "-d", pkg.root / BINARY]).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dynamic)
    assert [n for n in needed if n.startswith("libsimdjson")], dynamic
    for lib in needed:
        owners = run(["dpkg", "-S", lib], check=False).stdout.splitlines()
        pkgs = {line.split(":")[0] for line in owners
                if line.rsplit("/", 1)[-1] == lib and not line.startswith("diversion")}
        assert pkgs, f"no package has {lib}"
        # A library package may be depended on through a name it provides (libspdlog1.10 is
        # libspdlog1.10-fmt9 in its shlibs file).
        names = set(pkgs)
        for p in pkgs:
            provides = run(["dpkg-query", "-W", "-f=${Provides}", p]).stdout
            names |= {x.split()[0] for x in provides.split(",") if x.strip()}
        assert names & depends, f"{lib} is in {sorted(names)}, none of them in Depends"


def test_contents(pkg):
    listing = run(["dpkg-deb", "--contents", pkg.deb]).stdout.splitlines()
    files = {}
    for line in listing:
        parts = line.split()
        mode, owner, path = parts[0], parts[1], parts[5]
        assert owner == "root/root", f"{path} owned by {owner}"
        if not mode.startswith("d"):
            files[path] = mode
    assert files == {
        "./usr/bin/iotd": "-rwxr-xr-x",
        "./lib/systemd/system/iotd.service": "-rw-r--r--",
        "./etc/iotd/iotd.env": "-rw-r-----",
    }, files


def test_binary_is_stripped(pkg):
    sections = run(["readelf", "-S", "-W", pkg.root / BINARY]).stdout
    names = re.findall(r"\]\s+(\.\S+)", sections)
    assert ".text" in names, sections
    assert ".symtab" not in names and not [n for n in names if n.startswith(".debug")], \
        f"not stripped: {names}"
    assert (pkg.root / BINARY).stat().st_size < 20 * 1024 * 1024


def test_conffile(pkg):
    assert (pkg.control / "conffiles").read_text().split() == ["/etc/iotd/iotd.env"]


def test_maintainer_scripts(pkg):
    assert shutil.which("shellcheck"), "shellcheck is missing: apt-get install shellcheck"
    for name in SCRIPTS:
        path = pkg.control / name
        assert path.is_file(), f"no {name} in the package"
        assert stat.S_IMODE(path.stat().st_mode) == 0o755, f"{name} is not 0755"
        text = path.read_text()
        assert text.startswith("#!/bin/sh\n") and "\nset -e\n" in text, name
        run(["sh", "-n", path])
        run(["shellcheck", "--shell=sh", path])
    postinst = (pkg.control / "postinst").read_text()
    assert re.search(r"adduser --system .*--home /var/lib/iotd --no-create-home", postinst)
    assert "deb-systemd-helper enable 'iotd.service'" in postinst
    assert "if [ -d /run/systemd/system ]; then" in postinst
    assert "deb-systemd-invoke stop 'iotd.service'" in (pkg.control / "prerm").read_text()
    postrm = (pkg.control / "postrm").read_text()
    assert "rm -rf /var/lib/iotd" in postrm and "deluser" in postrm


def test_unit_settings(pkg):
    unit = parse_unit((pkg.root / UNIT).read_text())
    svc = {k: v[-1] for (s, k), v in unit.items() if s == "Service"}
    assert svc["ExecStart"] == "/usr/bin/iotd all"
    assert svc["Type"] == "simple"
    assert svc["User"] == svc["Group"] == "iotd"
    assert svc["StateDirectory"] == "iotd"
    assert svc["EnvironmentFile"].lstrip("-") == "/etc/iotd/iotd.env"
    assert svc["Restart"] == "on-failure"
    assert svc["KillSignal"] == "SIGTERM"
    assert int(svc["LimitNOFILE"]) >= 65536
    assert svc["ProtectSystem"] == "strict"
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices",
                "ProtectKernelTunables", "ProtectKernelModules", "ProtectControlGroups"):
        assert svc[key] == "yes", key
    assert set(svc["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    env = parse_env_file((pkg.root / ENV_FILE).read_text())
    assert duration_seconds(svc["TimeoutStopSec"]) > duration_seconds(env["SHUTDOWN_TIMEOUT"])
    assert unit[("Install", "WantedBy")] == ["multi-user.target"]


def test_unit_verifies(pkg):
    """systemd-analyze verify in the extracted tree: --root makes it check ExecStart's
    /usr/bin/iotd there (the packaged binary); any message at all fails."""
    r = run(["systemd-analyze", "verify", f"--root={pkg.root}", "--man=no", "iotd.service"],
            check=False, cwd=pkg.tmp)
    assert r.returncode == 0 and not r.stderr.strip() and not r.stdout.strip(), \
        f"systemd-analyze verify: {r.returncode}\n{r.stdout}{r.stderr}"
    # The same check fails without the binary: it really looks at the tree.
    binary = pkg.root / BINARY
    binary.rename(binary.with_suffix(".away"))
    try:
        r = run(["systemd-analyze", "verify", f"--root={pkg.root}", "--man=no", "iotd.service"],
                check=False, cwd=pkg.tmp)
        assert r.returncode != 0 and "/usr/bin/iotd" in r.stderr, r.stderr
    finally:
        binary.with_suffix(".away").rename(binary)
    # The sandbox, as systemd scores it: exposure 2.0 or less ("OK"; 0 is best, 10 worst).
    r = run(["systemd-analyze", "security", "--offline=yes", f"--root={pkg.root}",
             "--threshold=20", "iotd.service"], check=False, cwd=pkg.tmp)
    assert r.returncode == 0, f"exposure above 2.0:\n{r.stdout}{r.stderr}"


def test_env_file_holds_the_defaults(pkg):
    text = (pkg.root / ENV_FILE).read_text()
    env = parse_env_file(text)
    options = help_options(pkg.root / BINARY)
    for key in list(env) + commented_keys(text):
        assert key in options, f"iotd.env sets {key}, which `iotd all --help` does not list"
    for key in ("INGEST_PORT", "DASHBOARD_PORT", "BIND_ADDRESS", "DATA_DIR", "SYNC", "STORE_SYNC",
                "TEMP_MIN_THRESHOLD", "TEMP_MAX_THRESHOLD", "HUMIDITY_MIN_THRESHOLD",
                "HUMIDITY_MAX_THRESHOLD", "LOG_LEVEL"):
        assert key in env, f"iotd.env does not set {key}"
    assert "RAW_RETENTION" in commented_keys(text) + list(env)
    assert env["DATA_DIR"] == "/var/lib/iotd"
    assert (env["INGEST_PORT"], env["DASHBOARD_PORT"]) == ("8001", "8002")
    for key, value in env.items():
        if key != "DATA_DIR":
            assert value == options[key], f"iotd.env: {key}={value}, the default is {options[key]}"


def test_packaged_binary_serves_with_packaged_env(pkg):
    env = {"PATH": "/usr/bin:/bin", "DATA_DIR": "/var/lib/iotd"}  # the unit's Environment=
    env.update(parse_env_file((pkg.root / ENV_FILE).read_text()))
    data = pkg.tmp / "data"
    ingest, dashboard = free_port(), free_port()
    env.update(DATA_DIR=str(data), INGEST_PORT=str(ingest), DASHBOARD_PORT=str(dashboard),
               BIND_ADDRESS="127.0.0.1")
    try:
        serve_and_stop([pkg.root / BINARY, "all"], env, ingest, dashboard, pkg.tmp / "iotd.log",
                       pkg.tmp, data)
    finally:
        shutil.rmtree(data, ignore_errors=True)


# ---- a real install ---------------------------------------------------------------------------

LEFTOVERS = [  # everything an install may leave on the host, removed by the test's cleanup
    "/etc/iotd", "/var/lib/iotd",
    "/etc/systemd/system/multi-user.target.wants/iotd.service",
    "/etc/systemd/system/iotd.service",
    "/var/lib/systemd/deb-systemd-helper-enabled/iotd.service.dsh-also",
    "/var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/iotd.service",
    "/var/lib/systemd/deb-systemd-helper-masked/iotd.service",
]


def installed_status():
    r = run(["dpkg-query", "-W", "-f=${Status}", "iotd"], check=False)
    return r.stdout.strip() if r.returncode == 0 else ""


def user_exists(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def group_exists(name):
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def dpkg(args, timeout=300):
    r = run(["dpkg", *args], timeout=timeout, check=False,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    assert r.returncode == 0, f"dpkg {args}: {r.returncode}\n{r.stdout}\n{r.stderr}"
    lines = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]
    alarming = [line for line in lines if not any(re.fullmatch(p, line) for p in DPKG_OK)]
    assert not alarming, f"dpkg {args} printed:\n" + "\n".join(alarming)
    return r


def systemd_running():
    return os.path.isdir("/run/systemd/system")


@pytest.fixture
def host_without_iotd():
    """The real host, root, with no iotd anywhere; afterwards nothing of iotd is left."""
    if os.geteuid() != 0:
        pytest.skip("installs the package on this machine: needs root")
    present = [p for p in LEFTOVERS[:2] if os.path.lexists(p)]
    if installed_status() or user_exists("iotd") or group_exists("iotd") or present:
        pytest.skip("an iotd install exists on this machine (package, user, group or "
                    f"{present}): not touching it")
    try:
        yield
    finally:
        if installed_status():
            subprocess.run(["dpkg", "--purge", "iotd"], capture_output=True, timeout=300)
        if user_exists("iotd"):
            subprocess.run(["userdel", "iotd"], capture_output=True, timeout=60)
        if group_exists("iotd"):
            subprocess.run(["groupdel", "iotd"], capture_output=True, timeout=60)
        for p in LEFTOVERS:
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            elif os.path.lexists(p):
                os.unlink(p)


def newer_version(deb, tmp):
    """The same package as version <v>-2: what an upgrade runs (postinst configure <v>-1)."""
    tree = tmp / "upgrade"
    run(["dpkg-deb", "-R", deb, tree])
    control = tree / "DEBIAN/control"
    control.write_text(re.sub(r"^Version: (\S+)-1$", r"Version: \1-2", control.read_text(),
                              flags=re.M))
    out = tmp / "iotd_upgrade.deb"
    run(["dpkg-deb", "--root-owner-group", "-Zxz", "-b", tree, out], timeout=300)
    shutil.rmtree(tree)
    return out


def test_install_upgrade_remove_purge(pkg, host_without_iotd):
    version = project_version()
    dpkg(["-i", pkg.deb])
    assert installed_status() == "install ok installed"
    user = pwd.getpwnam("iotd")
    assert user.pw_uid < 1000, f"iotd is not a system user: uid {user.pw_uid}"
    assert user.pw_dir == "/var/lib/iotd" and user.pw_shell == "/usr/sbin/nologin"
    assert grp.getgrgid(user.pw_gid).gr_name == "iotd"
    data = os.stat("/var/lib/iotd")
    assert (data.st_uid, data.st_gid) == (user.pw_uid, user.pw_gid)
    assert stat.S_IMODE(data.st_mode) == 0o750
    assert pathlib.Path("/etc/iotd/iotd.env").read_bytes() == (pkg.root / ENV_FILE).read_bytes()
    assert "/etc/iotd/iotd.env" in run(["dpkg-query", "-W", "-f=${Conffiles}", "iotd"]).stdout
    assert os.path.isfile("/" + UNIT) and os.access("/usr/bin/iotd", os.X_OK)
    # Enabled for boot, whether or not systemd runs now.
    assert os.path.realpath("/etc/systemd/system/multi-user.target.wants/iotd.service") == \
        os.path.realpath("/" + UNIT)
    r = run(["systemd-analyze", "verify", "/" + UNIT], check=False, cwd="/")
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr

    env = {"PATH": "/usr/bin:/bin", "DATA_DIR": "/var/lib/iotd"}
    env.update(parse_env_file(pathlib.Path("/etc/iotd/iotd.env").read_text()))
    if systemd_running():
        # The postinst started the service: on the packaged ports.
        wait_for(lambda: run(["systemctl", "is-active", "iotd"], check=False).stdout.strip()
                 == "active", 30, "iotd.service active")
        wait_for(lambda: http("GET", "http://127.0.0.1:8001/health")[0] == 200, 30,
                 "/health on 8001")
        status, body = http("POST", "http://127.0.0.1:8001/ingest", SEED_READING)
        assert status == 202, f"POST /ingest: {status} {body!r}"
    else:
        # No systemd: nothing was started. Run what the unit runs, as the user it runs as,
        # with the installed settings (ports moved to free ones: this machine is shared).
        ingest, dashboard = free_port(), free_port()
        env.update(INGEST_PORT=str(ingest), DASHBOARD_PORT=str(dashboard),
                   BIND_ADDRESS="127.0.0.1")
        serve_and_stop(["setpriv", "--reuid=iotd", "--regid=iotd", "--init-groups",
                        "--no-new-privs", "/usr/bin/iotd", "all"], env, ingest, dashboard,
                       pkg.tmp / "installed.log", "/var/lib/iotd", "/var/lib/iotd")
    for name in ("bus.db", "store.db"):
        assert os.stat(f"/var/lib/iotd/{name}").st_uid == user.pw_uid, name

    # Upgrade: the admin's change to the conffile, the user and the data stay.
    with open("/etc/iotd/iotd.env", "a") as f:
        f.write("# changed by the admin\n")
    dpkg(["-i", newer_version(pkg.deb, pkg.tmp)])
    assert run(["dpkg-query", "-W", "-f=${Version}", "iotd"]).stdout == f"{version}-2"
    assert pathlib.Path("/etc/iotd/iotd.env").read_text().endswith("# changed by the admin\n")
    assert not os.path.exists("/etc/iotd/iotd.env.dpkg-new")
    assert pwd.getpwnam("iotd").pw_uid == user.pw_uid
    assert os.path.isfile("/var/lib/iotd/store.db") and os.path.isfile("/var/lib/iotd/bus.db")
    if systemd_running():
        wait_for(lambda: http("GET", "http://127.0.0.1:8001/health")[0] == 200, 30,
                 "/health on 8001 after the upgrade")

    # Remove: program and unit go; configuration, user and data stay.
    dpkg(["--remove", "iotd"])
    assert not os.path.exists("/usr/bin/iotd") and not os.path.exists("/" + UNIT)
    assert os.path.isfile("/etc/iotd/iotd.env") and user_exists("iotd")
    assert os.path.isfile("/var/lib/iotd/store.db")
    if systemd_running():
        assert run(["systemctl", "is-active", "iotd"], check=False).stdout.strip() != "active"

    # Purge: everything goes, the data too.
    dpkg(["--purge", "iotd"])
    assert installed_status() == ""
    assert not user_exists("iotd") and not group_exists("iotd")
    for p in LEFTOVERS:
        assert not os.path.lexists(p), f"{p} is left after the purge"
