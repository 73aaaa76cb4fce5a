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
