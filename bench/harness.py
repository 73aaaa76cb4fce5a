#!/usr/bin/env python3
"""kiln against BuildKit and Buildah: the scenarios of docs/BENCHMARKS.md.

Run it through `bench/run`, which installs the peers and builds kiln first.
Everything it makes lives under the work dir (default target/bench): the
Debian base image (made once with debootstrap), the wheelhouse (downloaded
once), the registries' storage, each tool's outputs and logs, and
results.json. It writes the results between the markers of
docs/BENCHMARKS.md (or the file given with --output) and leaves the rest
of that file, the hand-written analysis, as it is.

Only the Python standard library is used.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
SCENARIOS = BENCH / "scenarios"
KILN = REPO / "target" / "release" / "kiln"
# Scenario 9: the static kiln (scripts/lib/common.sh, ensure_static_kiln),
# the binary kiln's image holds, run both on the host and in the image.
STATIC_KILN = REPO / "target" / "static" / f"{platform.machine()}-unknown-linux-gnu" / "dist" / "kiln"
BASE_REPO = "bench/python"
BASE_TAG = "bookworm"
PUSH_REPO = "bench/ml"
# Scenario 8: each tool pushes its image to bench/fresh-<tool> and its
# registry cache to bench/fresh-<tool>-cache.
FRESH_REPO = "bench/fresh"
MIRROR = os.environ.get("KILN_BENCH_MIRROR", "http://deb.debian.org/debian")
BEGIN = "<!-- bench:results begin -->"
END = "<!-- bench:results end -->"
FRESH_BEGIN = "<!-- bench:fresh-runner begin -->"
FRESH_END = "<!-- bench:fresh-runner end -->"
EXECUTOR_BEGIN = "<!-- bench:executor begin -->"
EXECUTOR_END = "<!-- bench:executor end -->"
SEED_BEGIN = "<!-- bench:seed begin -->"
SEED_END = "<!-- bench:seed end -->"
# Scenario 9's two ways of running kiln, each its own column.
EXECUTOR_WAYS = ("kiln-build", "kiln-executor")
TOOLS = ("kiln", "buildkit", "buildah")
# kiln_image::compress::DEFAULT_GZIP_LEVEL: scenario 4's floor is measured
# at it too, so that kiln is compared with the same work.
KILN_GZIP_LEVEL = 4
PEERS = ("buildkit", "buildah")
TOOL_NAMES = {"kiln": "kiln", "buildkit": "BuildKit", "buildah": "Buildah"}


def log(msg: str) -> None:
    print(f"==> {msg}", file=sys.stderr, flush=True)


def run(cmd, check=True, capture=False, env=None, cwd=None, quiet=False) -> subprocess.CompletedProcess:
    """An untimed command. Output goes to stderr unless captured or quiet."""
    out = subprocess.PIPE if capture else (subprocess.DEVNULL if quiet else sys.stderr)
    p = subprocess.run(
        [str(c) for c in cmd], env=env, cwd=cwd, stdout=out, stderr=subprocess.PIPE if (capture or quiet) else None, text=True
    )
    if check and p.returncode != 0:
        detail = (p.stderr or "").strip()[-3000:]
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {p.returncode}\n{detail}")
    return p


def output(cmd, env=None) -> str:
    try:
        return run(cmd, capture=True, env=env).stdout.strip()
    except (RuntimeError, FileNotFoundError) as e:
        return f"unknown ({str(e).splitlines()[0]})"


def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port")


# ---------------------------------------------------------------- registry


# A blob download in the registry's access log (Apache combined format,
# written by the registry when it has served the request): the repository,
# the status and the bytes of the response body. Manifests are not blobs.
BLOB_GET = re.compile(
    r'"GET /v2/(?P<repo>[^ ]+?)/blobs/(?P<digest>[a-z0-9]+:[0-9a-f]+)(?:\?[^ ]*)? HTTP/[0-9.]+" '
    r'(?P<status>[0-9]{3}) (?P<size>[0-9]+|-)'
)


class Registry:
    """A Distribution registry on loopback, as the tests start one. With
    `access_log`, it logs every request with its response size, which is
    how scenario 8 counts the blob bytes each tool pulls."""

    def __init__(self, root: Path, preferred_port: int, access_log: bool = False):
        self.root = root
        self.port = free_port(preferred_port)
        self.access_log = access_log
        self.proc: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, wipe: bool = False) -> None:
        if wipe and (self.root / "data").exists():
            shutil.rmtree(self.root / "data")
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        config = self.root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            f"log:\n  level: warn\n  accesslog:\n    disabled: {'false' if self.access_log else 'true'}\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.root / 'data'}\n  delete:\n    enabled: true\n"
            "  maintenance:\n    uploadpurging:\n      enabled: false\n"
            f"http:\n  addr: {self.host}\n  secret: kiln-bench\n"
        )
        logf = open(self.root / "registry.log", "ab")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=logf, stderr=logf)
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1).read()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"docker-registry exited; see {self.root / 'registry.log'}")
                time.sleep(0.05)
        raise RuntimeError(f"docker-registry did not answer on {self.host}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart_empty(self) -> None:
        self.stop()
        self.start(wipe=True)

    @property
    def log_path(self) -> Path:
        return self.root / "registry.log"

    def log_offset(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def blob_bytes_since(self, offset: int) -> dict[str, int]:
        """The blob bytes the registry served since `offset` of its log,
        by repository (responses 200 and 206 to `GET /v2/<repo>/blobs/<digest>`)."""
        # The registry writes a request's line once its handler returns,
        # which can be just after the client has read the last byte and
        # exited: wait until the log stops growing.
        size = -1
        while (now := self.log_offset()) != size:
            size = now
            time.sleep(0.3)
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        pulled: dict[str, int] = {}
        for m in BLOB_GET.finditer(text):
            if m["status"] in ("200", "206") and m["size"] != "-":
                pulled[m["repo"]] = pulled.get(m["repo"], 0) + int(m["size"])
        return pulled

    def has_manifest(self, repo: str, tag: str) -> bool:
        req = urllib.request.Request(
            f"http://{self.host}/v2/{repo}/manifests/{tag}",
            method="HEAD",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        )
        try:
            urllib.request.urlopen(req, timeout=5)
            return True
        except OSError:
            return False


# ---------------------------------------------------------------- inputs


def ensure_wheelhouse(work: Path, name: str = "wheels", reqs: Path = BENCH / "requirements.txt") -> Path:
    """The pinned wheels of `reqs` (bench/requirements.txt), downloaded
    once into WORK/`name`."""
    wheels = work / name
    stamp = wheels / f".complete-{hashlib.sha256(reqs.read_bytes()).hexdigest()[:16]}"
    if stamp.exists():
        return wheels
    log(f"downloading the wheelhouse into {wheels}")
    wheels.mkdir(parents=True, exist_ok=True)
    run([
        sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet",
        "--no-deps", "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
        "--abi", "cp311", "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
        "--platform", "manylinux_2_28_x86_64", "-d", wheels, "-r", reqs,
    ])
    stamp.touch()
    return wheels


def ensure_base_layout(work: Path) -> Path:
    """A minimal Debian bookworm with python3 and pip, as an OCI layout.

    debootstrap (minbase) once; then the apt lists, caches, docs and
    locales go, the tree becomes one gzip layer, and the config gets the
    PATH and CMD an official python image would have.
    """
    base = work / "base"
    layout = base / "oci"
    if (layout / "index.json").exists():
        return layout
    rootfs = base / "rootfs"
    if not rootfs.exists():
        tmp = base / "rootfs.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        base.mkdir(parents=True, exist_ok=True)
        log("debootstrap: Debian bookworm (minbase) with python3-pip; takes a few minutes, once")
        with open(base / "debootstrap.log", "w") as f:
            p = subprocess.run(
                ["debootstrap", "--variant=minbase", "--include=python3-pip", "bookworm", str(tmp), MIRROR],
                stdout=f, stderr=subprocess.STDOUT,
            )
        if p.returncode != 0:
            raise RuntimeError(f"debootstrap failed; see {base / 'debootstrap.log'}")
        tmp.rename(rootfs)
    log("making the base image layer")
    for rel in ["var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
                "usr/share/locale", "usr/share/info", "var/log", "dev", "proc", "sys", "run", "tmp"]:
        d = rootfs / rel
        if d.is_dir():
            for child in d.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    tar = base / "rootfs.tar"
    run(["tar", "-C", rootfs, "--numeric-owner", "--sort=name", "--xattrs", "-cf", tar, "."])
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    diff_id = sha256_file(tar)
    gz = base / "rootfs.tar.gz"
    with open(gz, "wb") as out:
        subprocess.run(["pigz", "-6", "-n", "-c", str(tar)], stdout=out, check=True)
    layer_digest = sha256_file(gz)
    layer_size = gz.stat().st_size
    gz.rename(blobs / layer_digest)
    tar.unlink()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2026-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"],
            "Cmd": ["python3"],
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [{"created": "2026-01-01T00:00:00Z", "created_by": "debootstrap --variant=minbase --include=python3-pip bookworm"}],
    }
    config_desc = put_json(blobs, config, "application/vnd.oci.image.config.v1+json")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": f"sha256:{layer_digest}", "size": layer_size}],
    }
    manifest_desc = put_json(blobs, manifest, "application/vnd.oci.image.manifest.v1+json")
    manifest_desc["annotations"] = {"org.opencontainers.image.ref.name": BASE_TAG}
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest_desc]}))
    return layout


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def put_json(blobs: Path, doc: dict, media_type: str) -> dict:
    data = json.dumps(doc, separators=(",", ":")).encode()
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def push_base(registry: Registry, layout: Path) -> str:
    ref = f"{registry.host}/{BASE_REPO}:{BASE_TAG}"
    if not registry.has_manifest(BASE_REPO, BASE_TAG):
        log(f"pushing the base image to {ref}")
        run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:{BASE_TAG}", f"docker://{ref}"])
    return ref


def prepare_ml_context(work: Path, wheels: Path, quick: bool) -> Path:
    """target/bench/ctx/ml: the scenario folder, the wheelhouse (hard
    links, so file identities stay and context hashing can be memoised)
    and the requirements file."""
    return fill_context(work / "ctx" / "ml", SCENARIOS / "1-ml", wheels,
                        "requirements.txt",
                        BENCH / ("requirements-quick.txt" if quick else "requirements.txt"))


def prepare_seed_context(work: Path, wheels: Path) -> Path:
    """target/bench/ctx/seed: scenario 11's folder, its wheelhouse (hard
    links) and bench/requirements-seed.txt as pip's constraints."""
    return fill_context(work / "ctx" / "seed", SCENARIOS / "11-seed", wheels,
                        "constraints.txt", BENCH / "requirements-seed.txt")


def fill_context(ctx: Path, src: Path, wheels: Path, reqs_name: str, reqs: Path) -> Path:
    """`ctx` made from the scenario folder `src`: its app and Dockerfile
    copied, `reqs` as `reqs_name` (rewritten only when it changed, so its
    mtime stays), and the wheelhouse hard-linked (only its current wheels)."""
    if (ctx / "app").exists():
        shutil.rmtree(ctx / "app")
    ctx.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src / "app", ctx / "app")
    shutil.copy2(src / "Dockerfile", ctx / "Dockerfile")
    text = reqs.read_text()
    if not (ctx / reqs_name).exists() or (ctx / reqs_name).read_text() != text:
        (ctx / reqs_name).write_text(text)
    (ctx / "wheels").mkdir(exist_ok=True)
    want = {w.name for w in wheels.glob("*.whl")}
    for old in (ctx / "wheels").iterdir():
        if old.name not in want:
            old.unlink()
    for name in want:
        dst = ctx / "wheels" / name
        if not dst.exists():
            os.link(wheels / name, dst)
    return ctx


# ---------------------------------------------------------------- timing


@dataclass
class Sample:
    seconds: float
    kiln_rss_mib: float | None = None  # VmHWM of the kiln process itself
    tree_rss_mib: float | None = None  # ru_maxrss over kiln and its reaped children
    load: float = 0.0
    pulled: dict | None = None  # scenario 8: blob bytes served by the registry, by repository
    # kiln: the process time on the critical path of the builds it ran
    # (report.json's totals.process_critical_ms, summed over the builds of
    # the sample); the sample's seconds less this is kiln's own overhead.
    process_s: float | None = None


def timed(cmds: list[list], env: dict, logf, watch_rss: bool = False) -> Sample:
    """Runs `cmds` one after the other and times them together."""
    total = 0.0
    hwm = 0
    tree = 0
    load = os.getloadavg()[0]
    for cmd in cmds:
        logf.write(f"$ {' '.join(map(str, cmd))}\n".encode())
        logf.flush()
        t0 = time.perf_counter()
        p = subprocess.Popen([str(c) for c in cmd], env=env, stdout=logf, stderr=logf, stdin=subprocess.DEVNULL)
        peak = [0]
        stop = threading.Event()
        if watch_rss:
            thread = threading.Thread(target=sample_hwm, args=(p.pid, peak, stop), daemon=True)
            thread.start()
        _, status, usage = os.wait4(p.pid, 0)
        total += time.perf_counter() - t0
        stop.set()
        if watch_rss:
            thread.join()
        p.returncode = os.waitstatus_to_exitcode(status)
        hwm = max(hwm, peak[0])
        tree = max(tree, usage.ru_maxrss)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, cmd))} exited {p.returncode}; see {logf.name}")
    return Sample(
        seconds=total,
        kiln_rss_mib=hwm / 1024 if watch_rss else None,
        tree_rss_mib=tree / 1024 if watch_rss else None,
        load=load,
    )


def sample_hwm(pid: int, peak: list, stop: threading.Event) -> None:
    """The peak resident set (VmHWM, KiB) of one process, read from
    /proc every 10 ms; the kernel keeps the high-water mark, so a sample
    shortly before exit sees the whole run."""
    path = f"/proc/{pid}/status"
    while not stop.is_set():
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak[0] = max(peak[0], int(line.split()[1]))
                        break
        except OSError:
            return
        stop.wait(0.01)


# ---------------------------------------------------------------- tools


class Tool:
    name = ""

    def __init__(self, work: Path):
        self.work = work
        self.out = work / "out"
        self.out.mkdir(parents=True, exist_ok=True)

    def env(self) -> dict:
        return dict(os.environ)

    def oci_out(self) -> Path:
        return self.out / f"{self.name}.tar"

    def reset(self) -> None:
        raise NotImplementedError

    def build_cmds(self, ctx: Path, dockerfile: Path, args: dict, tag: str, keep: bool = False) -> list[list]:
        """Build and export an OCI tarball to oci_out(). With `keep`, the
        build deletes none of the files it wrote (kiln and BuildKit never
        do; Buildah removes its working containers unless told not to), so
        that it does not slow down the next run (see SETTLE_SECONDS)."""
        raise NotImplementedError

    def store_cmds(self, ctx: Path, dockerfile: Path, args: dict, ref: str) -> list[list]:
        """Build into the tool's own image store, named `ref` (for push)."""
        raise NotImplementedError

    def push_cmds(self, ref: str) -> list[list]:
        raise NotImplementedError

    def fresh_reset(self) -> None:
        """Everything the tool keeps between builds gone, as on a new CI
        runner (scenario 8)."""
        self.reset()

    def fresh_cmds(self, ctx: Path, dockerfile: Path, args: dict, ref: str, cache_repo: str) -> list[list]:
        """Build with the registry cache in `cache_repo` read and written
        (all steps: mode=max), then push the image to `ref`, as a CI job
        does (scenario 8)."""
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError


def build_args(args: dict) -> list[str]:
    out = []
    for k, v in args.items():
        out += ["--build-arg", f"{k}={v}"]
    return out


class Kiln(Tool):
    name = "kiln"

    def __init__(self, work: Path):
        super().__init__(work)
        self.root = work / "kiln-root"

    def env(self) -> dict:
        env = dict(os.environ)
        env["KILN_ROOT"] = str(self.root)
        return env

    def reset(self) -> None:
        if self.root.exists():
            # A store holds no mounts between builds; kiln sweeps leftovers.
            run(["rm", "-rf", "--one-file-system", self.root])

    def base_cmd(self) -> list:
        return [KILN, "--progress", "plain"]

    def reports(self) -> set[Path]:
        """The build reports kiln keeps in its store (docs/REPORT.md)."""
        history = self.root / "history"
        return set(history.glob("*/report.json")) if history.is_dir() else set()

    def build_cmds(self, ctx, dockerfile, args, tag, keep=False):
        return [self.base_cmd() + ["build", "-f", dockerfile, *build_args(args), "-t", tag,
                                   "--output", f"type=oci,dest={self.oci_out()}", ctx]]

    def store_cmds(self, ctx, dockerfile, args, ref):
        return [self.base_cmd() + ["build", "-f", dockerfile, *build_args(args), "-t", ref, ctx]]

    def push_cmds(self, ref):
        return [self.base_cmd() + ["push", ref]]

    def fresh_cmds(self, ctx, dockerfile, args, ref, cache_repo):
        cache = f"{cache_repo}:cache"
        return [self.base_cmd() + ["build", "-f", dockerfile, *build_args(args), "-t", ref, "--push",
                                   "--cache-from", f"type=registry,ref={cache}",
                                   "--cache-to", f"type=registry,ref={cache},mode=max", ctx]]

    def version(self) -> str:
        rev = output(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
        dirty = output(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"])
        return f"{output([KILN, '--version'])} (git {rev}{' + local changes' if dirty else ''}, release build)"


class KilnHost(Kiln):
    """Scenario 9: `kiln build` on the host as root (runc on overlayfs), the
    static kiln, with kiln's registry cache as a CI job uses it."""

    name = "kiln-build"

    def __init__(self, work: Path):
        super().__init__(work)
        self.root = work / "kiln-build-root"

    def base_cmd(self) -> list:
        return [STATIC_KILN, "--progress", "plain"]

    def fresh_cmds(self, ctx, dockerfile, args, ref, cache_repo):
        # The cache ref the executor's --cache-repo names.
        cache = f"{cache_repo}:buildcache"
        return [self.base_cmd() + ["build", "-f", dockerfile, *build_args(args), "-t", ref, "--push",
                                   "--cache-from", f"type=registry,ref={cache}",
                                   "--cache-to", f"type=registry,ref={cache},mode=max", ctx]]

    def version(self) -> str:
        rev = output(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
        return f"{output([STATIC_KILN, '--version'])} (git {rev}, static dist build)"


class KilnExecutor(Tool):
    """Scenario 9: Kaniko's job with kiln's image (scripts/image, the same
    static kiln) in `docker run` with docker's default security: no
    privileges, so RUN steps run by chroot on a tree diffed by walking
    (docs/ISOLATION.md). Each build is a new container, whose store is its
    own writable layer: a fresh runner. The loopback registry is reached
    through the host's network."""

    name = "kiln-executor"
    CONTAINER_PREFIX = "kiln-bench-executor-"

    def __init__(self, work: Path, image: str):
        super().__init__(work)
        self.image = image
        self.runs = 0

    def fresh_reset(self) -> None:
        # The containers are kept until here (not --rm), so that their files
        # are deleted before the inodes settle, not during the next build.
        names = output(["docker", "ps", "-a", "--format", "{{.Names}}"]).split()
        ours = [n for n in names if n.startswith(self.CONTAINER_PREFIX)]
        if ours:
            run(["docker", "rm", "-f", *ours], quiet=True)

    reset = fresh_reset

    def fresh_cmds(self, ctx, dockerfile, args, ref, cache_repo):
        self.runs += 1
        return [["docker", "run", "--name", f"{self.CONTAINER_PREFIX}{os.getpid()}-{self.runs}",
                 "--network", "host", "-v", f"{ctx}:/workspace:ro", self.image,
                 "--context=dir:///workspace", f"--dockerfile={dockerfile.relative_to(ctx)}",
                 f"--destination={ref}", "--cache=true", f"--cache-repo={cache_repo}",
                 "--log-format=text", *build_args(args)]]

    def version(self) -> str:
        return f"kiln's image {self.image} ({output(['docker', 'run', '--rm', '--entrypoint', '/kaniko/kiln', self.image, '--version'])})"


def ensure_kiln_image(work: Path) -> str:
    """kiln's image of the static kiln, loaded into docker (untimed): what
    `scripts/image --load` makes, named after the binary's digest."""
    tag = f"kiln.bench/kiln:{sha256_file(STATIC_KILN)[:12]}"
    if not output(["docker", "image", "ls", "-q", tag]).strip():
        log(f"building kiln's image {tag} (scripts/image)")
        env = dict(os.environ, KILN_ROOT=str(work / "image-store"))
        run([REPO / "scripts" / "image", "--kiln", STATIC_KILN, "--tag", tag, "--out", work / "kiln-image", "--load"],
            env=env)
    return tag


class BuildKit(Tool):
    """Docker Engine's BuildKit through buildx (the `docker` driver, with
    the containerd image store so the OCI exporter is available)."""

    name = "buildkit"

    def reset(self) -> None:
        run(["docker", "buildx", "prune", "--builder", "default", "-af"], quiet=True)
        images = output(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]).split()
        ours = [i for i in images if "/bench/" in i or i.startswith("bench/")]
        if ours:
            run(["docker", "image", "rm", "-f", *ours], quiet=True)

    def common(self, dockerfile, args):
        return ["docker", "buildx", "build", "--builder", "default", "--progress", "plain",
                "--provenance=false", "--sbom=false", "-f", dockerfile, *build_args(args)]

    def build_cmds(self, ctx, dockerfile, args, tag, keep=False):
        return [self.common(dockerfile, args) + ["--output", f"type=oci,dest={self.oci_out()}", ctx]]

    def store_cmds(self, ctx, dockerfile, args, ref):
        return [self.common(dockerfile, args) + ["-t", ref, ctx]]

    def push_cmds(self, ref):
        return [["docker", "push", "--quiet", ref]]

    def fresh_cmds(self, ctx, dockerfile, args, ref, cache_repo):
        # The docker driver exports through the daemon's containerd image
        # store: it unpacks the image there before pushing, so it fetches
        # every layer, cache hits included (a standalone buildkitd, the
        # docker-container driver, would not; its image cannot be pulled
        # here).
        cache = f"{cache_repo}:cache"
        return [self.common(dockerfile, args) + [
            "--cache-from", f"type=registry,ref={cache}",
            "--cache-to", f"type=registry,ref={cache},mode=max", "-t", ref, "--push", ctx]]

    def version(self) -> str:
        inspect = output(["docker", "buildx", "inspect", "default"])
        m = re.search(r"BuildKit( version)?:\s*(\S+)", inspect, re.IGNORECASE)
        engine = output(["docker", "version", "--format", "{{.Server.Version}}"])
        buildx = output(["docker", "buildx", "version"]).split()
        version = m.group(2) if m else "?"
        if version.startswith("v0.0.0") and engine.startswith("26.1"):
            # Distribution builds lose the module version; moby 26.1 vendors BuildKit 0.13.
            version = f"0.13 (vendored by Docker Engine 26.1; this build reports {version})"
        return f"BuildKit {version}, Docker Engine {engine} (docker driver, containerd image store), buildx {buildx[1] if len(buildx) > 1 else '?'}"


class Buildah(Tool):
    """buildah bud with --layers (its build cache), then push to an
    oci-archive (where it compresses the layers)."""

    name = "buildah"

    # Which blobs Buildah (containers/image) has seen in which repositories,
    # kept across builds to skip uploads and mount blobs.
    BLOB_INFO_CACHE = Path("/var/lib/containers/cache/blob-info-cache-v1.boltdb")

    def reset(self) -> None:
        run(["buildah", "rm", "--all"], quiet=True)
        run(["buildah", "rmi", "--all", "--force"], quiet=True, check=False)

    def fresh_reset(self) -> None:
        self.reset()
        remove(self.BLOB_INFO_CACHE)

    def bud(self, ctx, dockerfile, args, tag, keep=False, extra=()):
        # --rm=false keeps the working container of each step. By default
        # Buildah copies a RUN step's files into a new layer and deletes
        # the container's copy: in scenario 5, 400,000 inodes allocated and
        # 200,000 freed per build (perf stat, ext4:ext4_free_inode).
        return ["buildah", "bud", "--quiet", "--layers", *(["--rm=false"] if keep else []),
                "--network", "host", "--jobs", "2",
                "--tls-verify=false", *extra, "-f", dockerfile, *build_args(args), "-t", tag, ctx]

    def build_cmds(self, ctx, dockerfile, args, tag, keep=False):
        return [self.bud(ctx, dockerfile, args, tag, keep),
                ["buildah", "push", "--quiet", tag, f"oci-archive:{self.oci_out()}"]]

    def store_cmds(self, ctx, dockerfile, args, ref):
        return [self.bud(ctx, dockerfile, args, ref)]

    def push_cmds(self, ref):
        return [["buildah", "push", "--quiet", "--tls-verify=false", ref, f"docker://{ref}"]]

    def fresh_cmds(self, ctx, dockerfile, args, ref, cache_repo):
        # Buildah's registry cache (since 1.27): each step's layer is pushed
        # to `cache_repo` as an image tagged with the step's cache key, and
        # looked up by that tag. It has no mode: every step is cached.
        return [self.bud(ctx, dockerfile, args, ref, extra=["--cache-from", cache_repo, "--cache-to", cache_repo]),
                *self.push_cmds(ref)]

    def version(self) -> str:
        return output(["buildah", "--version"])


# ---------------------------------------------------------------- scenarios


@dataclass
class Phase:
    """One timed build of a scenario that has several (scenario 8): its
    row in the report is the scenario's id and this suffix."""

    suffix: str
    title: str
    mutate: bool = False  # change one line of the app before the build
    pull_target_mb: float | None = None  # kiln pulls less than this many MB (10^6 bytes)
    # The row's own target, where the phases of a scenario have different ones (11).
    target: float | None = None
    target_text: str | None = None


@dataclass
class Scenario:
    id: str
    title: str
    # cold: every cache cleared before each run; base: caches cleared, the
    # base image pulled and unpacked (untimed) before each run; primed: the
    # same, once, before the runs, and each run given a new RUN_ID build
    # arg (which the Dockerfile's step reads), so that it builds the step
    # afresh, and nothing is deleted from the first run to the last (see
    # SETTLE_SECONDS); warm: the
    # same build done once (untimed) before the runs; push: the image built
    # into the tool's store once, the registry emptied before each run;
    # fresh: a previous CI run (untimed) built and pushed the image and its
    # registry cache, and each build starts with the tool's state wiped;
    # series: the first phase cold (every cache cleared), each phase after
    # it built on what the one before left (scenario 11: cold, no-change
    # rebuild, one-line edit).
    state: str
    context: Path
    dockerfile: Path
    args: dict = field(default_factory=dict)
    target: float | None = None
    target_text: str = ""
    mutate: bool = False  # scenario 3: change one line before each run
    # Several timed builds per run, one after the other for the same tool
    # (scenario 8: an edit, then the unchanged tree), each its own row.
    phases: tuple[Phase, ...] = ()

    def phase_list(self) -> tuple[Phase, ...]:
        return self.phases or (Phase("", self.title, self.mutate),)


def scenarios(ctx_ml: Path, base_ref: str, fresh_base_ref: str, quick: bool,
              ctx_seed: Path | None = None) -> list[Scenario]:
    base = {"BASE": base_ref}
    big = dict(base, MIB=256 if quick else 2048)
    small = dict(base, FILES=20000 if quick else 200000)
    stages = dict(base, ROUNDS=2000000 if quick else 12000000)
    ml_df = ctx_ml / "Dockerfile"
    return [
        Scenario("1", "cold build of the ML image", "cold", ctx_ml, ml_df, base, 0.9, "≤ 0.9×"),
        Scenario("2", "rebuild, nothing changed", "warm", ctx_ml, ml_df, base, 0.2, "≤ 0.2×"),
        Scenario("3", "rebuild after a one-line change", "warm", ctx_ml, ml_df, base, 0.5, "≤ 0.5×", mutate=True),
        Scenario("4", f"a step writing {big['MIB'] / 1024:g} GiB, then export", "base",
                 SCENARIOS / "4-big-layer", SCENARIOS / "4-big-layer" / "Dockerfile", big, 0.5, "≤ 0.5×"),
        Scenario("5", f"a step creating {small['FILES']:,} small files", "primed",
                 SCENARIOS / "5-small-files", SCENARIOS / "5-small-files" / "Dockerfile", small, 0.7, "≤ 0.7×"),
        Scenario("6", "two independent stages of equal work", "base",
                 SCENARIOS / "6-stages", SCENARIOS / "6-stages" / "Dockerfile", stages, None,
                 "close to one stage (6′)"),
        Scenario("6′", "one of those stages alone (reference)", "base",
                 SCENARIOS / "6-stages", SCENARIOS / "6-stages" / "Dockerfile.one", stages, None, "—"),
        Scenario("7", "push of the scenario-1 image", "push", ctx_ml, ml_df, base, 0.9, "≤ 0.9×"),
        # The base image is in the same registry as the caches, so that a
        # tool that pulls it is seen to.
        Scenario("8", "fresh CI runner with a registry cache", "fresh", ctx_ml, ml_df, {"BASE": fresh_base_ref},
                 0.3, "≤ 0.3×", phases=(Phase("a", "one-line app edit", mutate=True),
                                       Phase("b", "unchanged tree", pull_target_mb=5.0))),
        # kiln executor in kiln's image without privileges against kiln build
        # on the host, each with its registry cache (#12).
        Scenario("9", "kiln executor (unprivileged container) vs kiln build", "executor", ctx_ml, ml_df,
                 {"BASE": fresh_base_ref}, 1.3, "≤ 1.3×",
                 phases=(Phase("a", "cold: empty runner, empty cache"),
                         Phase("b", "one-line app edit, fresh runner, the cache of (a)", mutate=True))),
    ] + ([] if ctx_seed is None else [
        # The seed-sized image (#16): TensorFlow and ONNX, three pip steps
        # with cache mounts. Not in the default list: it takes long.
        Scenario("11", "seed-sized image (TensorFlow, ONNX)", "series", ctx_seed, ctx_seed / "Dockerfile", base,
                 phases=(Phase("a", "seed image (TensorFlow, ONNX): cold", target=0.4, target_text="≤ 0.4×"),
                         Phase("b", "seed image: rebuild, nothing changed", target=0.1, target_text="≤ 0.1×"),
                         Phase("c", "seed image: one-line edit", mutate=True, target=0.1,
                               target_text="≤ 0.1×"))),
    ])


PRIME_DOCKERFILE = "ARG BASE\nFROM ${BASE}\nRUN true\n"


class Bench:
    def __init__(self, opts, work: Path):
        self.opts = opts
        self.work = work
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        all_tools = {"kiln": Kiln, "buildkit": BuildKit, "buildah": Buildah}
        self.tools = [all_tools[t](work) for t in opts.tools]
        self.results: dict = {}
        self.push_registry: Registry | None = None
        self.cache_registry: Registry | None = None  # scenario 8's, with its access log
        self.edited: dict[str, str] = {}  # the app's main.py as each tool's last edit left it
        self.base_layout: Path | None = None
        self.prime_ctx = work / "ctx" / "prime"
        self.prime_ctx.mkdir(parents=True, exist_ok=True)
        (self.prime_ctx / "Dockerfile").write_text(PRIME_DOCKERFILE)

    def logfile(self, scn: Scenario, tool: Tool, label: str):
        safe = scn.id.replace("′", "p")
        return open(self.logs / f"{safe}-{tool.name}-{label}.log", "wb")

    def prepare(self, scn: Scenario, tool: Tool, base_ref: str) -> None:
        if scn.state in ("cold", "series"):
            tool.reset()
        elif scn.state == "base":
            self.prime(scn, tool, base_ref)
        elif scn.state == "push":
            self.push_registry.restart_empty()
        elif scn.state == "fresh":
            tool.fresh_reset()
        remove(tool.oci_out())
        subprocess.run(["sync"])

    def prime(self, scn: Scenario, tool: Tool, base_ref: str) -> None:
        """An empty store but for the base image, pulled and unpacked."""
        tool.reset()
        with self.logfile(scn, tool, "prime") as f:
            timed(tool.build_cmds(self.prime_ctx, self.prime_ctx / "Dockerfile", {"BASE": base_ref}, "bench/prime"),
                  tool.env(), f)

    def setup(self, scn: Scenario, tool: Tool, base_ref: str) -> None:
        """Once per scenario and tool, before its runs."""
        if scn.state == "primed":
            self.prime(scn, tool, base_ref)
        elif scn.state == "warm":
            with self.logfile(scn, tool, "setup") as f:
                timed(tool.build_cmds(scn.context, scn.dockerfile, scn.args, self.tag(scn)), tool.env(), f)
        elif scn.state == "push":
            with self.logfile(scn, tool, "setup") as f:
                timed(tool.store_cmds(scn.context, scn.dockerfile, scn.args, self.push_ref()), tool.env(), f)
        elif scn.state == "fresh":
            # The previous CI run: on an empty runner, the unchanged tree
            # built (nothing in the cache yet) and pushed, with its cache.
            tool.fresh_reset()
            with self.logfile(scn, tool, "setup") as f:
                timed(self.fresh_cmds(scn, tool, scn.args), tool.env(), f)

    def tag(self, scn: Scenario) -> str:
        return f"bench/s{scn.id.replace('′', 'p')}:latest"

    def push_ref(self) -> str:
        return f"{self.push_registry.host}/{PUSH_REPO}:latest"

    def fresh_cmds(self, scn: Scenario, tool: Tool, args: dict) -> list[list]:
        repo = f"{self.cache_registry.host}/{FRESH_REPO}-{tool.name}"
        return tool.fresh_cmds(scn.context, scn.dockerfile, args, f"{repo}:latest", f"{repo}-cache")

    def mutate(self, scn: Scenario, tool: Tool, label: str) -> None:
        main = scn.context / "app" / "main.py"
        text = re.sub(r'^BUILD_STAMP = .*$', f'BUILD_STAMP = "{tool.name}-{label}-{time.time_ns()}"',
                      main.read_text(), flags=re.M)
        main.write_text(text)
        self.edited[tool.name] = text

    def run_scenario(self, scn: Scenario, base_ref: str) -> None:
        log(f"scenario {scn.id}: {scn.title}")
        phases = scn.phase_list()
        rows = {ph.suffix: f"{scn.id}{ph.suffix}" for ph in phases}
        samples: dict[str, dict[str, list[Sample]]] = {row: {t.name: [] for t in self.tools} for row in rows.values()}
        failed: dict[str, str] = {}
        retried: dict[str, dict[str, list[tuple[str, str]]]] = {row: {} for row in rows.values()}  # tool: (label, error)
        if scn.state == "fresh":
            # The caches, images and base of earlier runs of the bench gone.
            self.cache_registry.restart_empty()
            push_base(self.cache_registry, self.base_layout)
        for tool in self.tools:
            try:
                self.setup(scn, tool, base_ref)
            except RuntimeError as e:
                failed[tool.name] = str(e)
                log(f"  {tool.name}: setup failed: {e}")
        if scn.state == "primed":
            self.settle()
        # Scenario 8's setup build (the previous CI run) is its warm-up:
        # each round there costs two settles.
        warmups = 0 if scn.state == "fresh" else self.opts.warmups
        rounds = warmups + self.opts.runs
        for r in range(rounds):
            warm_up = r < warmups
            order = self.tools[r % len(self.tools):] + self.tools[: r % len(self.tools)]
            # Scenario 8 wipes each tool before each build. On an ext4
            # without a journal, files deleted then slow every file created
            # for minutes after (SETTLE_SECONDS), whichever tool creates
            # them, where a new CI runner's disk has nothing deleted. So
            # there, phase by phase, every tool is wiped, the inodes settle,
            # then each tool builds, deleting nothing between the builds.
            if scn.state == "fresh":
                steps = [(ph, [tool for tool in order]) for ph in phases]
            else:
                steps = [(ph, [tool]) for tool in order for ph in phases]
            # Scenario 11's series (cold, then rebuilds on what it left)
            # and scenario 1's cold build: every tool wiped at once and the
            # inodes let settle, so that no tool's cold build creates its
            # files right after a wipe (its own or the tool's before it;
            # kiln's pip step took 14.7 s after a settle and up to 33 s
            # after two wipes on 2026-12-08, see docs/BENCHMARKS.md);
            # nothing is deleted between the builds after that but the OCI
            # tarball.
            if scn.state in ("cold", "series"):
                for tool in order:
                    if tool.name not in failed:
                        self.prepare(scn, tool, base_ref)
                self.settle()
            for ph, tools in steps:
                tools = [t for t in tools if t.name not in failed]
                if scn.state == "fresh" and tools:
                    for tool in tools:
                        tool.fresh_reset()
                    self.settle()
                for tool in tools:
                    # A tool that failed a phase twice leaves the next one
                    # (in scenario 8, its registry cache) in no known state.
                    if tool.name in failed:
                        continue
                    row = rows[ph.suffix]
                    label = (f"warmup{r}" if warm_up else f"run{r - warmups}") + ph.suffix
                    # A run that fails is tried once more (runc now and then fails
                    # to start a container: "read init-p: connection reset by
                    # peer"); the report says so. Failing twice drops the tool
                    # from the scenario.
                    reset = scn.state not in ("fresh", "series", "cold")
                    try:
                        sample = self.run_once(scn, tool, base_ref, label, ph, reset=reset)
                    except RuntimeError as e:
                        retried[row].setdefault(tool.name, []).append((label, str(e)))
                        log(f"  {tool.name}: failed, trying once more: {e}")
                        try:
                            # Scenario 8's retry starts from a wiped tool too;
                            # 11's later phases need what the one before left.
                            sample = self.run_once(scn, tool, base_ref, f"{label}-retry", ph,
                                                   reset=scn.state != "series" or ph is phases[0])
                        except RuntimeError as e:
                            failed[tool.name] = str(e)
                            log(f"  {tool.name}: failed again: {e}")
                            continue
                    extra = f", kiln RSS {sample.kiln_rss_mib:.0f} MiB" if sample.kiln_rss_mib else ""
                    if sample.pulled is not None:
                        extra += f", pulled {sum(sample.pulled.values()) / 1e6:.1f} MB"
                    if sample.process_s is not None:
                        extra += f", step processes {sample.process_s:.2f} s"
                    log(f"  {tool.name:8} {label:8} {sample.seconds:7.2f} s{extra}")
                    if not warm_up:
                        samples[row][tool.name].append(sample)
        for ph in phases:
            row = rows[ph.suffix]
            self.results[row] = {
                "title": ph.title if scn.phases else scn.title,
                "target": ph.target if ph.target is not None else scn.target,
                "target_text": ph.target_text if ph.target_text is not None else scn.target_text,
                "samples": {k: [s.__dict__ for s in v] for k, v in samples[row].items()},
                "failed": failed,
                "retried": retried[row],
            }
            if scn.state == "fresh":
                self.results[row] |= {"fresh": True, "scenario": scn.title, "pull_target_mb": ph.pull_target_mb}
            if scn.state == "series":
                self.results[row]["seed"] = True
        if any(ph.mutate for ph in phases):
            main = scn.context / "app" / "main.py"
            main.write_text(re.sub(r'^BUILD_STAMP = .*$', 'BUILD_STAMP = "original"', main.read_text(), flags=re.M))

    def run_executor_scenario(self, scn: Scenario) -> None:
        """Scenario 9: the same CI job run by `kiln build` on the host and by
        `kiln executor` in kiln's image without privileges. Per round: (a)
        both start empty, with a cache repository of their own that is
        empty too; (b) one line of the app changed, both start empty again
        and read the cache (a) wrote. As in scenario 8, before each phase
        every runner is wiped and the inodes let settle, then each builds."""
        log(f"scenario {scn.id}: {scn.title}")
        ways: list[Tool] = [KilnHost(self.work), KilnExecutor(self.work, ensure_kiln_image(self.work))]
        self.cache_registry.restart_empty()
        push_base(self.cache_registry, self.base_layout)
        rows = {ph.suffix: f"{scn.id}{ph.suffix}" for ph in scn.phase_list()}
        samples = {row: {w.name: [] for w in ways} for row in rows.values()}
        failed: dict[str, str] = {}
        for r in range(self.opts.runs):
            order = ways[r % len(ways):] + ways[: r % len(ways)]
            for ph in scn.phase_list():
                for way in ways:
                    way.fresh_reset()
                self.settle()
                for way in order:
                    if way.name in failed:
                        continue
                    label = f"run{r}{ph.suffix}"
                    if ph.mutate:
                        self.mutate(scn, way, label)
                    elif way.name in self.edited:
                        (scn.context / "app" / "main.py").write_text(self.edited[way.name])
                    repo = f"{self.cache_registry.host}/bench/exec-{way.name}-r{r}"
                    cmds = way.fresh_cmds(scn.context, scn.dockerfile, scn.args, f"{repo}:latest", f"{repo}-cache")
                    try:
                        before = way.reports() if isinstance(way, Kiln) else None
                        with self.logfile(scn, way, label) as f:
                            sample = timed(cmds, way.env(), f)
                        if before is not None:
                            sample.process_s = process_seconds(way.reports() - before)
                    except RuntimeError as e:
                        failed[way.name] = str(e)
                        log(f"  {way.name}: failed: {e}")
                        continue
                    log(f"  {way.name:13} {label:6} {sample.seconds:7.2f} s")
                    samples[rows[ph.suffix]][way.name].append(sample)
        for way in ways:
            way.fresh_reset()
        for ph in scn.phase_list():
            row = rows[ph.suffix]
            self.results[row] = {
                "title": ph.title, "target": scn.target, "target_text": scn.target_text,
                "samples": {k: [s.__dict__ for s in v] for k, v in samples[row].items()},
                "failed": failed, "retried": {}, "executor": True,
                "versions": {w.name: w.version() for w in ways},
            }
        main = scn.context / "app" / "main.py"
        main.write_text(re.sub(r'^BUILD_STAMP = .*$', 'BUILD_STAMP = "original"', main.read_text(), flags=re.M))

    def run_once(self, scn: Scenario, tool: Tool, base_ref: str, label: str, phase: Phase,
                 reset: bool = True) -> Sample:
        if reset:
            self.prepare(scn, tool, base_ref)
        else:
            remove(tool.oci_out())
        if phase.mutate:
            self.mutate(scn, tool, label)
        elif scn.state == "fresh" and tool.name in self.edited:
            # The tree as this tool's last build left it (the other tools
            # have edited it since).
            (scn.context / "app" / "main.py").write_text(self.edited[tool.name])
        args, primed = scn.args, scn.state == "primed"
        if primed:
            args = dict(args, RUN_ID=f"{tool.name}-{label}-{time.time_ns()}")
        if scn.state == "push":
            cmds = tool.push_cmds(self.push_ref())
        elif scn.state == "fresh":
            cmds = self.fresh_cmds(scn, tool, args)
        else:
            cmds = tool.build_cmds(scn.context, scn.dockerfile, args, self.tag(scn), keep=primed)
        offset = self.cache_registry.log_offset() if scn.state == "fresh" else None
        before = tool.reports() if isinstance(tool, Kiln) else None
        with self.logfile(scn, tool, label) as f:
            sample = timed(cmds, tool.env(), f, watch_rss=tool.name == "kiln")
        if before is not None:
            sample.process_s = process_seconds(tool.reports() - before)
        if offset is not None:
            sample.pulled = self.cache_registry.blob_bytes_since(offset)
        return sample

    def settle(self) -> None:
        """Waits out ext4's hold on recently deleted inodes, where the tools
        keep their data on an ext4 without a journal; see SETTLE_SECONDS."""
        devices = sorted({d for d in map(journalless_ext4, data_dirs(self.work)) if d})
        if not devices or self.opts.quick:
            return
        subprocess.run(["sync"])
        log(f"  {', '.join(devices)}: ext4 without a journal; waiting {SETTLE_SECONDS} s for the inodes "
            "deleted before this scenario to be free again")
        time.sleep(SETTLE_SECONDS)

    def floor(self, scn: Scenario) -> None:
        """Scenario 4's floor: the same bytes generated on the host, then
        tar | pigz and sha256sum of both streams to /dev/null."""
        log("scenario 4 floor: the same bytes through gen.py, tar | pigz and sha256sum")
        d = self.work / "floor"
        if d.exists():
            shutil.rmtree(d)
        t0 = time.perf_counter()
        run([sys.executable, SCENARIOS / "4-big-layer" / "gen.py", d / "opt" / "torch", scn.args["MIB"]])
        subprocess.run(["sync"])
        gen = time.perf_counter() - t0
        exports, gzip_bytes = {}, {}
        # pigz's default level, and the level kiln compresses at by default.
        for level in sorted({6, KILN_GZIP_LEVEL}):
            pipeline = ("tar -C {d} --numeric-owner -cf - . | tee >(sha256sum >/dev/null) "
                        "| pigz -{level} | sha256sum >/dev/null; wait $!").format(d=d, level=level)
            t0 = time.perf_counter()
            run(["bash", "-c", pipeline])
            exports[level] = time.perf_counter() - t0
            gzip_bytes[level] = int(output(["bash", "-c", f"tar -C {d} -cf - . | pigz -{level} | wc -c"]))
            log(f"  tar | pigz -{level} | sha256sum {exports[level]:.2f} s")
        size = int(output(["du", "-sb", d]).split()[0])
        shutil.rmtree(d)
        self.results["floor4"] = {"generate": gen, "export": exports[6], "bytes": size,
                                  "gzip_bytes": gzip_bytes[6],
                                  "levels": {str(k): {"export": v, "gzip_bytes": gzip_bytes[k]}
                                             for k, v in exports.items()}}
        log(f"  generate {gen:.2f} s")


def process_seconds(reports: set[Path]) -> float | None:
    """The process time on the critical path of the builds whose reports
    these are, in seconds (totals.process_critical_ms, docs/REPORT.md);
    None without a report (a push builds nothing) or from a kiln that does
    not report it."""
    total = 0
    for path in reports:
        ms = json.loads(path.read_text()).get("totals", {}).get("process_critical_ms")
        if ms is None:
            return None
        total += ms
    return total / 1000 if reports else None


# ext4 without a journal does not hand out an inode again until 60 s after
# it was deleted, 360 s while its inode-table block is dirty again (Linux
# fs/ext4/ialloc.c, recently_deleted), and for each file it creates it walks
# past every such inode of the block group. On the machine of
# docs/BENCHMARKS.md, 200,000 small files took 12 s to write, and 89 s when
# 200,000 others had been deleted 65 s before (after a sync), whichever
# tool writes them. Scenarios that write many files wait this long after the
# last deletion before their first run.
SETTLE_SECONDS = 360


def data_dirs(work: Path) -> list[Path]:
    """Where the tools keep their stores."""
    return [p for p in (work, Path("/var/lib/containerd"), Path("/var/lib/docker"), Path("/var/lib/containers"))
            if p.exists()]


def journalless_ext4(path: Path) -> str | None:
    """The block device under `path` if it is ext4 without a journal."""
    dev = os.stat(path).st_dev
    sys_dev = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    if not sys_dev.exists():
        return None
    name = sys_dev.resolve().name
    if not Path("/proc/fs/ext4", name).is_dir():
        return None
    jbd2 = Path("/proc/fs/jbd2")
    journals = [j.name for j in jbd2.iterdir()] if jbd2.is_dir() else []
    return None if any(j.startswith(f"{name}-") for j in journals) else name


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


# ---------------------------------------------------------------- report


def machine_info(work: Path, tools: list[Tool]) -> dict:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) // 1024
    df = output(["df", "-h", "--output=source,fstype,size", str(work)]).splitlines()[-1].split()
    os_name = "unknown"
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("PRETTY_NAME="):
            os_name = line.split("=", 1)[1].strip('"')
    virt = ""
    for line in output(["lscpu"]).splitlines():
        if line.startswith("Hypervisor vendor:"):
            virt = line.split(":", 1)[1].strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_mib": mem,
        "disk": " ".join(df[:2]) + (" without a journal" if journalless_ext4(work) else "")
        + (f", {df[2]}" if len(df) > 2 else ""),
        "kernel": platform.release(),
        "os": os_name,
        "virt": virt,
        "uptime": output(["uptime"]),
        "versions": {t.name: t.version() for t in tools}
        | {
            "runc": output(["runc", "--version"]).splitlines()[0],
            "containerd": output(["containerd", "--version"]),
            "registry": output(["docker-registry", "--version"]),
            "pigz": output(["pigz", "--version"]),
            "python (host)": platform.python_version(),
        },
    }


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def fmt_s(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def time_cells(r: dict, names) -> tuple[dict, dict]:
    """A result row's cell for each of `names` (tools, or ways of running
    one): its median with the range of its runs, "failed" or "—"; and the
    medians it has."""
    cells, meds = {}, {}
    for name in names:
        s = r["samples"].get(name)
        if name in r["failed"]:
            cells[name] = "failed"
            continue
        if not s:
            cells[name] = "—"
            continue
        secs = [x["seconds"] for x in s]
        meds[name] = median(secs)
        rng = f" ({fmt_s(min(secs))}–{fmt_s(max(secs))})" if len(secs) > 1 else ""
        cells[name] = fmt_s(meds[name]) + rng
    return cells, meds


def overhead(samples: list[dict]) -> tuple[float, float] | None:
    """kiln's own overhead over `samples`: the median of wall time less the
    process time on the critical path (from kiln's build reports), and that
    median as a share of the median wall time. None without reports."""
    pairs = [(x["seconds"], x["seconds"] - x["process_s"]) for x in samples if x.get("process_s") is not None]
    if not pairs:
        return None
    return median([o for _, o in pairs]), median([o for _, o in pairs]) / median([w for w, _ in pairs])


def overhead_cell(samples: list[dict]) -> str:
    o = overhead(samples)
    return "—" if o is None else f"{fmt_s(o[0])} s ({o[1]:.0%})"


OVERHEAD_NOTE = ("kiln overhead: kiln's wall time less the time its step processes ran on the critical "
                 "path (`totals.process_critical_ms` of its build reports, docs/REPORT.md: the longest "
                 "chain of RUN process times through the stage graph; for one stage, their sum), median "
                 "of the timed runs, and its share of kiln's median wall time. It is what kiln spent on "
                 "its own work: cache keys, pulls and unpacks, COPY, mounts, starting the runtime, "
                 "committing layers, export.")


def measured_by(started: str, opts) -> str:
    """The opening of every report block: when, and the command line."""
    return f"Measured {started} by `bench/run{' ' + ' '.join(opts.argv) if opts.argv else ''}`"


def report(results: dict, machine: dict, opts, started: str, duration: float) -> str:
    lines = []
    lines.append(f"{measured_by(started, opts)} "
                 f"({opts.warmups} warm-up and {opts.runs} timed run{'s' if opts.runs != 1 else ''} per tool and scenario, "
                 f"tools alternating; scenario 1: before each round every tool wiped"
                 f"{'' if opts.quick else ' and, on an ext4 without a journal, its inodes let settle'}; "
                 f"the whole run took {duration / 60:.0f} min).")
    lines.append("")
    lines.append("### Machine")
    lines.append("")
    lines.append(f"- CPU: {machine['cpu']}, {machine['cores']} cores{' (' + machine['virt'] + ' guest)' if machine['virt'] else ''}")
    lines.append(f"- memory: {machine['memory_mib'] / 1024:.0f} GiB; disk: {machine['disk']}")
    lines.append(f"- {machine['os']}, Linux {machine['kernel']}")
    for k, v in machine["versions"].items():
        lines.append(f"- {TOOL_NAMES.get(k, k)}: {v}")
    lines.append("")
    lines.append("### Results")
    lines.append("")
    lines.append("Median wall time in seconds (min–max of the timed runs). Ratio: kiln's median over the "
                 "faster peer's median in the same run. Peak RSS: the kiln process's VmHWM (its threads, "
                 "not runc or the step's processes), largest of the runs. " + OVERHEAD_NOTE + " A push "
                 "(7) has no build report: all of its time is kiln's.")
    lines.append("")
    lines.append("| # | scenario | kiln | BuildKit | Buildah | kiln / faster peer | target | holds | kiln overhead "
                 "| kiln peak RSS |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for sid, r in main_rows(results).items():
        cells, meds = time_cells(r, TOOLS)
        peers = [meds[p] for p in PEERS if p in meds]
        ratio = meds["kiln"] / min(peers) if "kiln" in meds and peers else None
        holds = "—"
        if sid == "6" and "kiln" in meds and "6′" in results:
            one = [x["seconds"] for x in results["6′"]["samples"].get("kiln", [])]
            if one:
                rel = meds["kiln"] / median(one)
                holds = f"{'yes' if rel <= 1.25 else 'no'} ({rel:.2f}× one stage)"
        elif r["target"] is not None and ratio is not None:
            holds = "yes" if ratio <= r["target"] else "**no**"
        rss = [x["kiln_rss_mib"] for x in r["samples"].get("kiln", []) if x.get("kiln_rss_mib")]
        rss_cell = f"{max(rss):.0f} MiB" if rss else "—"
        lines.append(f"| {sid} | {r['title']} | {cells['kiln']} | {cells['buildkit']} | {cells['buildah']} | "
                     f"{f'{ratio:.2f}×' if ratio is not None else '—'} | {r['target_text']} | {holds} | "
                     f"{overhead_cell(r['samples'].get('kiln', []))} | {rss_cell} |")
    lines.append("")
    notes = failure_notes(main_rows(results))
    if notes:
        lines += notes + [""]
    f4 = results.get("floor4")
    if f4:
        total = f4["generate"] + f4["export"]
        lines.append("### Scenario 4's floor")
        lines.append("")
        lines.append(f"The same {f4['bytes'] / 2**30:.2f} GiB written on the host by gen.py: "
                     f"{f4['generate']:.1f} s; then `tar | tee >(sha256sum) | pigz -6 | sha256sum` to /dev/null: "
                     f"{f4['export']:.1f} s ({f4['bytes'] / 2**20 / f4['export']:.0f} MiB/s; gzip output "
                     f"{f4['gzip_bytes'] / f4['bytes']:.0%} of the input). Floor: {total:.1f} s.")
        k = [x["seconds"] for x in results.get("4", {}).get("samples", {}).get("kiln", [])]
        if k:
            km = median(k)
            lines.append(f"kiln's median: {km:.1f} s, {km / total:.2f}× the floor ({km - total:+.1f} s).")
        own = f4.get("levels", {}).get(str(KILN_GZIP_LEVEL))
        if own and KILN_GZIP_LEVEL != 6:
            own_total = f4["generate"] + own["export"]
            lines.append("")
            lines.append(f"At kiln's default gzip level ({KILN_GZIP_LEVEL}), `pigz -{KILN_GZIP_LEVEL}` in the same "
                         f"pipeline: {own['export']:.1f} s (output {own['gzip_bytes'] / f4['bytes']:.0%} of the "
                         f"input). Floor: {own_total:.1f} s"
                         + (f"; kiln's median is {km / own_total:.2f}× of it." if k else "."))
        lines.append("")
    return "\n".join(lines)


def seed_targets(results: dict) -> list[str]:
    """Scenario 11's targets beside the ratios (#16): kiln's overhead at
    most 10% of the cold build's wall time, its peak RSS under 200 MiB."""
    cold = results.get("11a")
    if not cold:
        return []
    lines = []
    o = overhead(cold["samples"].get("kiln", []))
    if o is not None:
        lines.append(f"- scenario 11, kiln's overhead in the cold build (11a): {fmt_s(o[0])} s, {o[1]:.1%} of its "
                     f"wall time; target ≤ 10%: {'yes' if o[1] <= 0.10 else '**no**'}")
    rss = [x["kiln_rss_mib"] for sid in ("11a", "11b", "11c") if sid in results
           for x in results[sid]["samples"].get("kiln", []) if x.get("kiln_rss_mib")]
    if rss:
        lines.append(f"- scenario 11, kiln's peak RSS (largest of 11a–c): {max(rss):.0f} MiB; target < 200 MiB: "
                     f"{'yes' if max(rss) < 200 else '**no**'}")
    return lines + [""] if lines else []


def main_rows(results: dict) -> dict:
    """The rows of the main table: all but scenario 8's and the floor."""
    return {sid: r for sid, r in results.items()
            if sid != "floor4" and not r.get("fresh") and not r.get("executor") and not r.get("seed")}


def failure_notes(rows: dict) -> list[str]:
    notes = []
    for sid, r in rows.items():
        for t, msg in r["failed"].items():
            notes.append(f"- scenario {sid}, {TOOL_NAMES[t]} failed: `{msg.splitlines()[0][:200]}`")
        for t, errors in r.get("retried", {}).items():
            for label, msg in errors:
                notes.append(f"- scenario {sid}, {TOOL_NAMES[t]} failed {label} and ran it again: "
                             f"`{msg.splitlines()[0][:200]}`")
    # Scenario 8's rows share one list of failures.
    return list(dict.fromkeys(notes))


def report_seed(results: dict, machine: dict, opts, started: str, duration: float) -> str | None:
    """Scenario 11's block: the seed-sized image, cold, no-change rebuild
    and one-line edit, with kiln's overhead and the machine's load."""
    rows = {sid: r for sid, r in results.items() if r.get("seed")}
    if not rows:
        return None
    lines = []
    lines.append(f"{measured_by(started, opts)} "
                 f"({opts.warmups} warm-up and {opts.runs} timed run{'s' if opts.runs != 1 else ''} of the three "
                 f"builds per tool, one after the other on the same store, tools alternating; before each round every "
                 f"tool wiped{'' if opts.quick else ' and, on an ext4 without a journal, its inodes let settle'}; "
                 f"the whole run took "
                 f"{duration / 60:.0f} min), on {machine['cores']} cores ({machine['cpu']}"
                 f"{', ' + machine['virt'] + ' guest' if machine['virt'] else ''}), {machine['memory_mib'] / 1024:.0f} GiB, "
                 f"{machine['disk']}, {machine['os']}, Linux {machine['kernel']}.")
    lines.append("")
    for k in TOOLS:
        if k in machine["versions"]:
            lines.append(f"- {TOOL_NAMES[k]}: {machine['versions'][k]}")
    lines.append(f"- `uptime` before the run: {machine.get('uptime', '?')}; after it: "
                 f"{machine.get('uptime_after') or output(['uptime'])}")
    lines.append("")
    lines.append("Median wall time in seconds (min–max of the timed runs), OCI tarball out. Ratio: kiln's median "
                 "over the faster peer's median in the same run. Load: the 1-minute load average when each "
                 "tool's build started, kiln / BuildKit / Buildah (other work shares this machine). "
                 + OVERHEAD_NOTE)
    lines.append("")
    lines.append("| # | scenario | kiln | BuildKit | Buildah | kiln / faster peer | target | holds | kiln overhead "
                 "| kiln peak RSS | load |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for sid, r in rows.items():
        cells, meds = time_cells(r, TOOLS)
        peers = [meds[p] for p in PEERS if p in meds]
        ratio = meds["kiln"] / min(peers) if "kiln" in meds and peers else None
        holds = "—" if r["target"] is None or ratio is None else ("yes" if ratio <= r["target"] else "**no**")
        kiln = r["samples"].get("kiln", [])
        rss = [x["kiln_rss_mib"] for x in kiln if x.get("kiln_rss_mib")]
        load = " / ".join(", ".join(f"{x['load']:.1f}" for x in r["samples"].get(t, [])) or "—" for t in TOOLS)
        lines.append(f"| {sid} | {r['title']} | {cells['kiln']} | {cells['buildkit']} | {cells['buildah']} | "
                     f"{f'{ratio:.2f}×' if ratio is not None else '—'} | {r['target_text']} | {holds} | "
                     f"{overhead_cell(kiln)} | {f'{max(rss):.0f} MiB' if rss else '—'} | {load} |")
    lines.append("")
    lines += seed_targets(results)
    notes = failure_notes(rows)
    if notes:
        lines += notes + [""]
    return "\n".join(lines)


def report_executor(results: dict, machine: dict, opts, started: str, duration: float) -> str | None:
    """Scenario 9's block: kiln executor unprivileged over kiln build."""
    rows = {sid: r for sid, r in results.items() if r.get("executor")}
    if not rows:
        return None
    versions = next(iter(rows.values()))["versions"]
    lines = []
    lines.append(f"{measured_by(started, opts)} "
                 f"({opts.runs} timed run{'s' if opts.runs != 1 else ''} of each build, the two alternating; "
                 f"before each phase both runners wiped{'' if opts.quick else ' and, on an ext4 without a journal, its inodes let settle'}; "
                 f"the whole run took {duration / 60:.0f} min), on {machine['cores']} cores ({machine['cpu']}"
                 f"{', ' + machine['virt'] + ' guest' if machine['virt'] else ''}), {machine['memory_mib'] / 1024:.0f} GiB, "
                 f"{machine['disk']}, {machine['os']}, Linux {machine['kernel']}.")
    lines.append("")
    lines.append(f"- kiln build: {versions.get('kiln-build', '?')}, on the host as root (runc, overlayfs)")
    lines.append(f"- kiln executor: {versions.get('kiln-executor', '?')}, in `docker run --network host` with "
                 "docker's default security (no privileges: chroot isolation, trees diffed by walking)")
    lines.append(f"- registry: {machine['versions'].get('registry', '?')}; docker: Engine "
                 f"{output(['docker', 'version', '--format', '{{.Server.Version}}'])}")
    lines.append("")
    lines.append("Median wall time in seconds (min–max of the timed runs) of the scenario-1 (ML) image's CI job: "
                 "registry cache read and written (`mode=max`), image pushed, on a runner that kept nothing. "
                 "Ratio: kiln executor's median over kiln build's. " + OVERHEAD_NOTE + " Here for kiln build "
                 "only: the executor's reports stay in its container's store.")
    lines.append("")
    lines.append("| # | CI job | kiln build (host) | kiln executor (unprivileged) | executor / build | target | holds "
                 "| kiln build overhead |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for sid, r in rows.items():
        cells, meds = time_cells(r, EXECUTOR_WAYS)
        ratio = meds["kiln-executor"] / meds["kiln-build"] if len(meds) == 2 else None
        holds = "—" if ratio is None else ("yes" if ratio <= r["target"] else "**no**")
        lines.append(f"| {sid} | {r['title']} | {cells['kiln-build']} | {cells['kiln-executor']} | "
                     f"{f'{ratio:.2f}×' if ratio is not None else '—'} | {r['target_text']} | {holds} | "
                     f"{overhead_cell(r['samples'].get('kiln-build', []))} |")
    lines.append("")
    for sid, r in rows.items():
        for way, msg in r["failed"].items():
            lines.append(f"- scenario {sid}, {way} failed: `{msg.splitlines()[0][:200]}`")
    return "\n".join(lines).rstrip() + "\n"


def fmt_mb(n: float | None) -> str:
    if n is None:
        return "—"
    if 0 < n < 0.01:
        return "< 0.01"
    return f"{n:.2f}" if n < 10 else f"{n:.0f}"


def pulled_kind(repo: str) -> str:
    if repo == BASE_REPO:
        return "base image"
    return "cache" if repo.endswith("-cache") else "image"


def report_fresh(results: dict, machine: dict, opts, started: str, duration: float) -> str | None:
    """Scenario 8's block: wall times, and the blob bytes each tool pulled."""
    rows = {sid: r for sid, r in results.items() if r.get("fresh")}
    if not rows:
        return None
    lines = []
    lines.append(f"{measured_by(started, opts)} "
                 f"(after one untimed build with each tool, {opts.runs} timed run{'s' if opts.runs != 1 else ''} "
                 f"of each build per tool, tools alternating; before each build every tool wiped and, on an ext4 "
                 f"without a journal, its inodes let settle; the whole run took {duration / 60:.0f} min), on "
                 f"{machine['cores']} cores ({machine['cpu']}), {machine['disk']}.")
    lines.append("")
    for k in TOOLS:
        if k in machine["versions"]:
            lines.append(f"- {TOOL_NAMES[k]}: {machine['versions'][k]}")
    lines.append(f"- registry: {machine['versions'].get('registry', '?')}")
    lines.append("")
    lines.append("Median wall time in seconds (min–max of the timed runs) of the build, with the cache read "
                 "and written and the image pushed, on a runner whose tool kept nothing. Ratio: kiln's median "
                 "over the faster peer's median in the same run. " + OVERHEAD_NOTE)
    lines.append("")
    lines.append("| # | fresh runner | kiln | BuildKit | Buildah | kiln / faster peer | target | holds | kiln overhead |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    pulled: dict[str, dict[str, list[dict]]] = {}
    for sid, r in rows.items():
        cells, meds = time_cells(r, TOOLS)
        pulled[sid] = {tool: [x["pulled"] for x in r["samples"][tool] if x.get("pulled") is not None]
                       for tool in meds}
        peers = [meds[p] for p in PEERS if p in meds]
        ratio = meds["kiln"] / min(peers) if "kiln" in meds and peers else None
        holds = "—" if ratio is None else ("yes" if ratio <= r["target"] else "**no**")
        lines.append(f"| {sid} | {r['title']} | {cells['kiln']} | {cells['buildkit']} | {cells['buildah']} | "
                     f"{f'{ratio:.2f}×' if ratio is not None else '—'} | {r['target_text']} | {holds} | "
                     f"{overhead_cell(r['samples'].get('kiln', []))} |")
    lines.append("")
    lines.append("Blob bytes each tool pulled from the registry during the build, in MB (10⁶ bytes; median of "
                 "the timed runs, min–max if they differ): every `GET /v2/…/blobs/…` the registry served, "
                 "base image included, manifests not.")
    lines.append("")
    lines.append("| # | fresh runner | kiln | BuildKit | Buildah | target | holds |")
    lines.append("|---|---|---|---|---|---|---|")
    for sid, r in rows.items():
        cells = {}
        kiln_mb = None
        for tool in TOOLS:
            runs = pulled[sid].get(tool)
            if tool in r["failed"] or not runs:
                cells[tool] = "failed" if tool in r["failed"] else "—"
                continue
            totals = [sum(p.values()) / 1e6 for p in runs]
            m = median(totals)
            kiln_mb = m if tool == "kiln" else kiln_mb
            rng = f" ({fmt_mb(min(totals))}–{fmt_mb(max(totals))})" if fmt_mb(min(totals)) != fmt_mb(max(totals)) else ""
            cells[tool] = fmt_mb(m) + rng
        target = r.get("pull_target_mb")
        target_text = f"kiln < {target:g} MB" if target is not None else "—"
        holds = "—" if target is None or kiln_mb is None else ("yes" if kiln_mb < target else "**no**")
        lines.append(f"| {sid} | {r['title']} | {cells['kiln']} | {cells['buildkit']} | {cells['buildah']} | "
                     f"{target_text} | {holds} |")
    lines.append("")
    lines.append("By the repository they were pulled from (the run with the median total, MB):")
    lines.append("")
    for sid in rows:
        for tool in TOOLS:
            runs = pulled[sid].get(tool)
            if not runs:
                continue
            mid = sorted(runs, key=lambda p: sum(p.values()))[(len(runs) - 1) // 2]
            kinds: dict[str, int] = {}
            for repo, n in mid.items():
                kinds[pulled_kind(repo)] = kinds.get(pulled_kind(repo), 0) + n
            parts = ", ".join(f"{k} {fmt_mb(v / 1e6)}" for k, v in sorted(kinds.items())) or "nothing"
            lines.append(f"- {sid}, {TOOL_NAMES[tool]}: {parts}")
    lines.append("")
    notes = failure_notes(rows)
    if notes:
        lines += notes + [""]
    return "\n".join(lines)


def write_report(path: Path, body: str, begin: str = BEGIN, end: str = END) -> None:
    block = f"{begin}\n{body}\n{end}"
    if path.exists():
        text = path.read_text()
        if begin in text and end in text:
            pre, rest = text.split(begin, 1)
            _, post = rest.split(end, 1)
            path.write_text(pre + block + post)
            return
        path.write_text(text.rstrip() + "\n\n" + block + "\n")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Benchmarks\n\nRerun with `bench/run`.\n\n" + block + "\n")


# ---------------------------------------------------------------- main


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, help="timed runs per tool and scenario (default 3; --quick: 1)")
    p.add_argument("--warmups", type=int, help="untimed runs first (default 1; --quick: 0)")
    p.add_argument("--quick", action="store_true", help="each scenario once, with smaller sizes: a smoke test")
    p.add_argument("--scenarios", default="1,2,3,4,5,6,6′,7,8,9",
                   help="comma-separated (6′ or 6p: one stage; 11, the seed-sized image, is not in the default)")
    p.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset of kiln,buildkit,buildah")
    p.add_argument("--work", type=Path, default=REPO / "target" / "bench", help="work dir (default target/bench)")
    p.add_argument("--output", type=Path, help="report file (default docs/BENCHMARKS.md; --quick: WORK/BENCHMARKS-quick.md)")
    p.add_argument("--no-floor", action="store_true", help="skip scenario 4's floor measurement")
    opts = p.parse_args()
    opts.argv = sys.argv[1:]
    opts.runs = opts.runs if opts.runs is not None else (1 if opts.quick else 3)
    opts.warmups = opts.warmups if opts.warmups is not None else (0 if opts.quick else 1)
    opts.tools = [t.strip() for t in opts.tools.split(",") if t.strip()]
    for t in opts.tools:
        if t not in TOOLS:
            p.error(f"unknown tool {t}")
    wanted = [s.strip().replace("6p", "6′") for s in opts.scenarios.split(",") if s.strip()]
    work = opts.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    output_path = opts.output or (work / "BENCHMARKS-quick.md" if opts.quick else REPO / "docs" / "BENCHMARKS.md")

    if os.geteuid() != 0:
        print("bench/run needs root (runc, overlay mounts, dockerd, buildah)", file=sys.stderr)
        return 1
    if any(s != "9" for s in wanted) and not KILN.exists():
        print(f"{KILN} is missing: bench/run builds it", file=sys.stderr)
        return 1
    if "9" in wanted and not STATIC_KILN.exists():
        print(f"{STATIC_KILN} is missing: bench/run builds it (ensure_static_kiln)", file=sys.stderr)
        return 1

    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    t_start = time.perf_counter()
    wheels = ensure_wheelhouse(work)
    layout = ensure_base_layout(work)
    base_registry = Registry(work / "registry" / "base", 5105)
    bench = Bench(opts, work)
    bench.push_registry = Registry(work / "registry" / "push", 5106)
    # Scenario 8's: started (empty) by the scenario, with its access log.
    bench.cache_registry = Registry(work / "registry" / "cache", 5107, access_log=True)
    bench.base_layout = layout
    try:
        base_registry.start()
        bench.push_registry.start(wipe=True)
        base_ref = push_base(base_registry, layout)
        ctx_ml = prepare_ml_context(work, wheels, opts.quick)
        # Scenario 11's wheelhouse (about 320 MB) is fetched only for it.
        ctx_seed = None
        if "11" in wanted:
            seed_wheels = ensure_wheelhouse(work, "wheels-seed", BENCH / "requirements-seed.txt")
            ctx_seed = prepare_seed_context(work, seed_wheels)
        fresh_base_ref = f"{bench.cache_registry.host}/{BASE_REPO}:{BASE_TAG}"
        all_scenarios = {s.id: s for s in scenarios(ctx_ml, base_ref, fresh_base_ref, opts.quick, ctx_seed)}
        for sid in wanted:
            if sid not in all_scenarios:
                p.error(f"unknown scenario {sid}")
        machine = machine_info(work, bench.tools)
        for sid in wanted:
            scn = all_scenarios[sid]
            if scn.state == "executor":
                bench.run_executor_scenario(scn)
            else:
                bench.run_scenario(scn, base_ref)
            if sid == "4" and not opts.no_floor:
                bench.floor(scn)
            (work / "results.json").write_text(json.dumps({"machine": machine, "results": bench.results}, indent=1))
        duration = time.perf_counter() - t_start
        machine["uptime_after"] = output(["uptime"])
        # Each block is written only by a run that measured it, so that
        # `--scenarios 8` leaves the others' results as they are.
        if main_rows(bench.results):
            body = report(bench.results, machine, opts, started, duration)
            write_report(output_path, body)
            print(body)
        fresh = report_fresh(bench.results, machine, opts, started, duration)
        if fresh:
            write_report(output_path, fresh, FRESH_BEGIN, FRESH_END)
            print(fresh)
        seed = report_seed(bench.results, machine, opts, started, duration)
        if seed:
            write_report(output_path, seed, SEED_BEGIN, SEED_END)
            print(seed)
        executor = report_executor(bench.results, machine, opts, started, duration)
        if executor:
            write_report(output_path, executor, EXECUTOR_BEGIN, EXECUTOR_END)
            print(executor)
        log(f"wrote {output_path}")
    finally:
        base_registry.stop()
        bench.push_registry.stop()
        bench.cache_registry.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
