"""The Dockerfile: its runtime stage has every shared library iotd links (checked with ldd, so the
image cannot miss one), its build stage has what install-deps.sh installs for the product, the
build context holds what the build needs, and the final stage runs a real role as non-root."""
import fnmatch
import re
import shutil
import subprocess

import pytest

# Allowed in the runtime stage though no library of iotd is in them: TLS roots for Kafka/MongoDB.
RUNTIME_EXTRAS = {"ca-certificates"}
# The base image's C library (every program in it needs it; it cannot be missing).
BASE_IMAGE = {"libc6"}


def instructions(text):
    """[(stage index, KEYWORD, arguments)] with line continuations joined and comments dropped."""
    out, stage, buf = [], -1, ""
    for line in text.splitlines():
        if not buf and line.lstrip().startswith("#"):
            continue
        buf += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if line.endswith("\\") or not buf.strip():
            if not line.endswith("\\"):
                buf = ""
            continue
        keyword, _, args = buf.partition(" ")
        if keyword.upper() == "FROM":
            stage += 1
        out.append((stage, keyword.upper(), args.strip()))
        buf = ""
    return out


def apt_packages(run_args):
    """Packages of `apt-get install` in a RUN line."""
    m = re.search(r"apt-get install ([^&;]*)", run_args)
    return {w for w in m.group(1).split() if not w.startswith("-")} if m else set()


@pytest.fixture(scope="module")
def dockerfile(repo):
    return instructions((repo / "Dockerfile").read_text())


def stage_packages(dockerfile, stage):
    pkgs = set()
    for s, kw, args in dockerfile:
        if s == stage and kw == "RUN":
            pkgs |= apt_packages(args)
    return pkgs


def last_stage(dockerfile):
    return max(s for s, _, _ in dockerfile)


def library_packages(binary):
    """Debian packages owning every shared library the binary loads (ldd: transitive too)."""
    out = subprocess.run(["ldd", str(binary)], check=True, capture_output=True, text=True).stdout
    assert "not found" not in out, out
    pkgs = {}
    for line in out.splitlines():
        m = re.search(r"=> (/\S+)", line)
        if not m:
            continue
        owner = subprocess.run(["dpkg-query", "-S", m.group(1)], capture_output=True, text=True)
        if owner.returncode != 0:  # /lib is a symlink to /usr/lib on Debian 12: ask both ways
            alt = m.group(1).replace("/lib/", "/usr/lib/", 1) if not m.group(1).startswith("/usr") \
                else m.group(1).replace("/usr/lib/", "/lib/", 1)
            owner = subprocess.run(["dpkg-query", "-S", alt], capture_output=True, text=True)
        assert owner.returncode == 0, f"no Debian package owns {m.group(1)}"
        pkg = owner.stdout.split(":")[0].strip()
        pkgs[pkg] = m.group(1)
    return pkgs


def test_runtime_stage_has_every_library_iotd_links(dockerfile, iotd_bin):
    needed = library_packages(iotd_bin)
    # The binary really links the product's libraries (a static or stub build would hide them).
    for lib in ("libsimdjson", "libsqlite3", "libmongoc", "librdkafka", "libyaml-cpp"):
        assert any(p.startswith(lib) for p in needed), f"iotd does not link {lib}: {needed}"
    runtime = stage_packages(dockerfile, last_stage(dockerfile))
    missing = sorted(set(needed) - runtime - BASE_IMAGE)
    assert not missing, f"the image lacks {missing} ({[needed[m] for m in missing]})"
    unused = sorted(runtime - set(needed) - RUNTIME_EXTRAS)
    assert not unused, f"the runtime stage installs {unused}, which iotd does not load"


def test_build_stage_matches_install_deps(dockerfile, repo):
    text = (repo / "scripts/install-deps.sh").read_text()
    block = text[text.index("packages=(") + len("packages=("):text.index("# tests")]
    product = {w for line in block.splitlines() for w in line.split("#")[0].split()}
    build = stage_packages(dockerfile, 0)
    assert build == product, f"Dockerfile build stage {sorted(build ^ product)} differs"


def test_final_stage_runs_a_role_as_non_root(dockerfile, options, iotd_bin):
    final = [(kw, args) for s, kw, args in dockerfile if s == last_stage(dockerfile)]
    kws = dict(final)
    assert kws["USER"].split(":")[0] not in ("root", "0")
    assert kws["ENTRYPOINT"] == '["iotd"]'
    role = re.fullmatch(r'\["(\w+)"\]', kws["CMD"]).group(1)
    assert role in options.roles
    assert re.search(r'CMD \["iotd", "health"\]$', kws["HEALTHCHECK"])
    r = subprocess.run([str(iotd_bin), "health", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    exposed = {int(p) for p in kws["EXPOSE"].split()}
    every_port = set()
    for r in ("ingest", "dashboard", "aggregator", "alerts"):
        every_port |= options.ports(r, {})
    assert exposed == every_port
    env = dict(a.split("=", 1) for kw, a in final if kw == "ENV")
    assert "DATA_DIR" in options.env(role) and kws["VOLUME"] == f'["{env["DATA_DIR"]}"]'
    assert any(kw == "COPY" and a.startswith("--from=build ") for kw, a in final)


def context_files(repo):
    """The files `docker build .` sends: tracked files that .dockerignore does not exclude
    (later patterns win; `!` re-includes; a pattern matching a directory covers its files)."""
    patterns = [p.strip() for p in (repo / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                             cwd=repo, check=True, capture_output=True, text=True).stdout.split()

    def matches(pattern, path):
        pattern = pattern.rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        return any(fnmatch.fnmatchcase(p, pattern) and p.count("/") == pattern.count("/")
                   or pattern.startswith("**/") and fnmatch.fnmatchcase(p, pattern[3:])
                   for p in prefixes)

    kept = []
    for path in tracked:
        included = True
        for p in patterns:
            if matches(p.lstrip("!"), path):
                included = p.startswith("!")
        if included:
            kept.append(path)
    return kept


def test_build_context_configures(dockerfile, repo, tmp_path):
    """The build stage's COPYs from the context, then its cmake command, configure for real."""
    files = context_files(repo)
    assert "CMakeLists.txt" in files and not any(f.startswith(("build/", "tests/", ".git/"))
                                                 for f in files)
    sources = []
    for s, kw, args in dockerfile:
        if s == 0 and kw == "COPY":
            sources += args.split()[:-1]
    for src in sources:
        assert any(f == src or f.startswith(src + "/") for f in files), f"{src} not in context"
    for f in files:
        if any(f == src or f.startswith(src + "/") for src in sources):
            (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / f, tmp_path / f)
    run = next(a for s, kw, a in dockerfile if s == 0 and kw == "RUN" and "cmake -S" in a)
    configure = run.split("&&")[0].split()
    assert configure[:4] == ["cmake", "-S", ".", "-B"]
    r = subprocess.run(configure, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
