#!/usr/bin/env python3
"""Scenario 10 of docs/BENCHMARKS.md: two platforms.

One small Dockerfile with RUN steps (bench/scenarios/10-platforms), built
for linux/amd64 and linux/arm64 (QEMU runs arm64's steps here), cold,
exported as one multi-platform OCI tarball:

- on one machine, both platforms in one build: `kiln build --platform
  linux/amd64,linux/arm64`, `docker buildx build --platform ...` (BuildKit,
  docker driver, containerd image store), `buildah bud --platform ...
  --manifest` then `buildah manifest push --all`;
- split as CI splits it (docs/CI.md): one store per platform, each pushing
  its image by digest, then `kiln imagetools create` merging the two into
  one tag; each part timed. On two runners the platforms build at once, so
  the split's wall time is the slower part plus the merge.

Run it through `bench/run-platforms`, which installs the peers and QEMU and
builds kiln first. It reuses bench/harness.py's registry, tools and timing,
and writes its block of docs/BENCHMARKS.md (between the bench:platforms
markers), leaving the rest of the file as it is.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from harness import (  # noqa: E402
    KILN, REPO, SCENARIOS, TOOL_NAMES, Registry, fmt_s, log, machine_info, median, put_json, run, timed,
    write_report,
)

BEGIN = "<!-- bench:platforms begin -->"
END = "<!-- bench:platforms end -->"
PLATFORMS = ("linux/amd64", "linux/arm64")
BASE_REPO = "bench/busybox"
BASE_TAG = "multi"
SPLIT_REPO = "bench/split"
CONTEXT = SCENARIOS / "10-platforms"


def busybox_layer(busybox: Path) -> bytes:
    """A gzipped layer: busybox at /bin/busybox, its applets as symlinks,
    /etc/passwd, /tmp; fixed times, so the base is the same every run."""
    applets = subprocess.run([str(busybox), "--list"], check=True, capture_output=True, text=True).stdout.split()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name: str, kind: bytes, mode: int, data: bytes = b"", link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime, info.linkname, info.size = kind, mode, 0, link, len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
        for d in ("bin", "etc", "tmp"):
            add(d, tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755)
        add("bin/busybox", tarfile.REGTYPE, 0o755, busybox.read_bytes())
        for a in applets:
            if a != "busybox":
                add(f"bin/{a}", tarfile.SYMTYPE, 0o777, link="busybox")
        add("etc/passwd", tarfile.REGTYPE, 0o644, b"root:x:0:0:root:/root:/bin/sh\n")
    return raw.getvalue()


def base_layout(work: Path, busyboxes: dict[str, Path]) -> Path:
    """An OCI layout holding one index: busybox for each platform."""
    layout = work / "platforms-base"
    if layout.exists():
        shutil.rmtree(layout)
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    children = []
    for platform, busybox in busyboxes.items():
        os_, arch = platform.split("/")
        tar = busybox_layer(busybox)
        diff_id = hashlib.sha256(tar).hexdigest()
        gz = gzip.compress(tar, mtime=0)
        layer_digest = hashlib.sha256(gz).hexdigest()
        (blobs / layer_digest).write_bytes(gz)
        config = put_json(blobs, {
            "architecture": arch, "os": os_,
            "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                       "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
            # Buildah checks each layer against a history entry.
            "created": "1970-01-01T00:00:00Z",
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "busybox-static"}],
        }, "application/vnd.oci.image.config.v1+json")
        manifest = put_json(blobs, {
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config,
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": f"sha256:{layer_digest}", "size": len(gz)}],
        }, "application/vnd.oci.image.manifest.v1+json")
        children.append(manifest | {"platform": {"architecture": arch, "os": os_}})
    index = put_json(blobs, {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                             "manifests": children}, "application/vnd.oci.image.index.v1+json")
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_text(json.dumps({
        "schemaVersion": 2,
        "manifests": [index | {"annotations": {"org.opencontainers.image.ref.name": BASE_TAG}}],
    }))
    return layout


def both_cmds(tool: harness.Tool, base: str, out: Path) -> list[list]:
    """Both platforms in one build, exported as one OCI tarball."""
    platforms = ",".join(PLATFORMS)
    args = ["--build-arg", f"BASE={base}"]
    if tool.name == "kiln":
        return [tool.base_cmd() + ["build", "--platform", platforms, *args,
                                   "--output", f"type=oci,dest={out}", CONTEXT]]
    if tool.name == "buildkit":
        return [["docker", "buildx", "build", "--builder", "default", "--progress", "plain",
                 "--provenance=false", "--sbom=false", "--platform", platforms, *args,
                 "--output", f"type=oci,dest={out}", CONTEXT]]
    return [["buildah", "bud", "--quiet", "--layers", "--network", "host", "--jobs", "2",
             "--tls-verify=false", "--platform", platforms, *args, "--manifest", "bench/s10", CONTEXT],
            ["buildah", "manifest", "push", "--quiet", "--all", "bench/s10", f"oci-archive:{out}"]]


def reset(tool: harness.Tool) -> None:
    tool.reset()
    if tool.name == "buildah":
        run(["buildah", "manifest", "rm", "bench/s10"], quiet=True, check=False)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="timed runs per tool (default 3)")
    p.add_argument("--warmups", type=int, default=1, help="untimed runs first (default 1)")
    p.add_argument("--tools", default=",".join(harness.TOOLS), help="comma-separated subset of kiln,buildkit,buildah")
    p.add_argument("--work", type=Path, default=REPO / "target" / "bench", help="work dir (default target/bench)")
    p.add_argument("--output", type=Path, default=REPO / "docs" / "BENCHMARKS.md", help="report file")
    opts = p.parse_args()
    argv = sys.argv[1:]
    busybox_arm64 = os.environ.get("KILN_BUSYBOX_ARM64")
    if os.geteuid() != 0 or not KILN.exists() or not busybox_arm64:
        print("run it through bench/run-platforms (root, a release kiln, KILN_BUSYBOX_ARM64)", file=sys.stderr)
        return 1
    work = opts.work.resolve()
    (work / "logs").mkdir(parents=True, exist_ok=True)
    all_tools = {"kiln": harness.Kiln, "buildkit": harness.BuildKit, "buildah": harness.Buildah}
    tools = [all_tools[t.strip()](work) for t in opts.tools.split(",") if t.strip()]
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    t_start = time.perf_counter()

    registry = Registry(work / "registry" / "platforms", 5108)
    registry.start(wipe=True)
    try:
        layout = base_layout(work, {"linux/amd64": Path(shutil.which("busybox")),
                                    "linux/arm64": Path(busybox_arm64)})
        base = f"{registry.host}/{BASE_REPO}:{BASE_TAG}"
        run(["skopeo", "copy", "--quiet", "--all", "--dest-tls-verify=false",
             f"oci:{layout}:{BASE_TAG}", f"docker://{base}"])
        samples: dict[str, list[float]] = {t.name: [] for t in tools}
        split: dict[str, list[float]] = {"linux/amd64": [], "linux/arm64": [], "merge": []}
        failed: dict[str, str] = {}
        for r in range(opts.warmups + opts.runs):
            label = f"warmup{r}" if r < opts.warmups else f"run{r - opts.warmups}"
            order = tools[r % len(tools):] + tools[: r % len(tools)]
            for tool in order:
                if tool.name in failed:
                    continue
                reset(tool)
                out = tool.out / f"{tool.name}-s10.tar"
                if out.exists():
                    out.unlink()
                subprocess.run(["sync"])
                try:
                    with open(work / "logs" / f"10-{tool.name}-{label}.log", "wb") as f:
                        s = timed(both_cmds(tool, base, out), tool.env(), f, watch_rss=tool.name == "kiln")
                except RuntimeError as e:
                    failed[tool.name] = str(e)
                    log(f"  {tool.name}: failed: {e}")
                    continue
                log(f"  {tool.name:8} {label:8} {s.seconds:7.2f} s")
                if r >= opts.warmups:
                    samples[tool.name].append(s.seconds)
            if "kiln" not in [t.name for t in tools]:
                continue
            # The split: two fresh stores (two runners), then the merge.
            digests = []
            for platform in PLATFORMS:
                runner = harness.Kiln(work / f"split-{platform.replace('/', '-')}")
                runner.reset()
                meta = runner.out / "metadata.json"
                cmd = runner.base_cmd() + [
                    "build", "--platform", platform, "--build-arg", f"BASE={base}",
                    "--output", f"type=registry,name={registry.host}/{SPLIT_REPO},push-by-digest=true",
                    "--metadata-file", meta, CONTEXT]
                with open(work / "logs" / f"10-split-{platform.replace('/', '-')}-{label}.log", "wb") as f:
                    s = timed([cmd], runner.env(), f)
                digests.append(f"{registry.host}/{SPLIT_REPO}@{json.loads(meta.read_text())['containerimage.digest']}")
                log(f"  split {platform:12} {label:8} {s.seconds:7.2f} s")
                if r >= opts.warmups:
                    split[platform].append(s.seconds)
            merger = harness.Kiln(work / "split-merge")
            merger.reset()
            with open(work / "logs" / f"10-split-merge-{label}.log", "wb") as f:
                s = timed([merger.base_cmd() + ["imagetools", "create", "-t",
                                                f"{registry.host}/{SPLIT_REPO}:latest", *digests]], merger.env(), f)
            log(f"  split merge        {label:8} {s.seconds:7.2f} s")
            if r >= opts.warmups:
                split["merge"].append(s.seconds)
        machine = machine_info(work, tools)
    finally:
        registry.stop()

    duration = time.perf_counter() - t_start
    lines = [f"Measured {started} by `bench/run-platforms{' ' + ' '.join(argv) if argv else ''}` "
             f"({opts.warmups} warm-up and {opts.runs} timed runs per tool, tools alternating, every cache "
             f"emptied before each build; {duration / 60:.0f} min). Machine: {machine['cpu']}, "
             f"{machine['cores']} cores, {machine['os']}, kernel {machine['kernel']}; "
             f"QEMU {harness.output(['qemu-aarch64-static', '--version']).splitlines()[0].split()[2]} "
             "(qemu-user-static, binfmt).", ""]
    meds = {t: median(v) for t, v in samples.items()}
    peers = [meds[t] for t in ("buildkit", "buildah") if meds.get(t)]
    best = min(peers) if peers else None
    lines.append("| scenario 10: amd64 + arm64 (QEMU), cold, one OCI tarball | "
                 + " | ".join(TOOL_NAMES[t.name] for t in tools) + " | kiln ÷ faster peer |")
    lines.append("|---|" + "---|" * (len(tools) + 1))
    cells = []
    for t in tools:
        v = samples[t.name]
        cells.append("failed" if t.name in failed and not v else
                     f"{fmt_s(meds[t.name])} s ({fmt_s(min(v))}–{fmt_s(max(v))})" if v else "—")
    ratio = f"{meds['kiln'] / best:.2f}×" if meds.get("kiln") and best else "—"
    lines.append("| one machine, both platforms in one build | " + " | ".join(cells) + f" | {ratio} |")
    lines.append("")
    if split["merge"]:
        m = {k: median(v) for k, v in split.items()}
        two_runners = max(m["linux/amd64"], m["linux/arm64"]) + m["merge"]
        lines.append("| kiln split as CI splits it (docs/CI.md) | median |")
        lines.append("|---|---|")
        lines.append(f"| runner 1: linux/amd64, pushed by digest | {fmt_s(m['linux/amd64'])} s |")
        lines.append(f"| runner 2: linux/arm64 under QEMU, pushed by digest | {fmt_s(m['linux/arm64'])} s |")
        lines.append(f"| merge: `kiln imagetools create` | {fmt_s(m['merge'])} s |")
        lines.append(f"| wall time on two runners (slower runner + merge) | {fmt_s(two_runners)} s |")
        if meds.get("kiln"):
            lines.append(f"| the same on one machine, one build (above) | {fmt_s(meds['kiln'])} s |")
        lines.append("")
    for name, err in failed.items():
        lines.append(f"- {TOOL_NAMES[name]} failed: {err}")
    body = "\n".join(lines).rstrip() + "\n"
    write_report(opts.output, body, BEGIN, END)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
