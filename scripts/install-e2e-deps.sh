#!/usr/bin/env bash
# Installs the real container clients the end-to-end suite (test/e2e) drives:
# dockerd + docker, containerd + ctr, podman, skopeo, crane, jq, uidmap
# (newuidmap/newgidmap, which podman looks for even as root), and chromium,
# which the web UI test drives headless.
#
# Idempotent and quiet: a package is installed only when one of its binaries
# is missing, crane only when it is not on PATH (or in $(go env GOPATH)/bin).
# The Debian packages come from the distribution's archive; crane from the Go
# module proxy at a pinned version. Podman runs with the vfs storage driver in
# the suite, so fuse-overlayfs, slirp4netns and the other recommended
# packages are not needed (--no-install-recommends); chromium runs headless and
# needs none of its recommended packages either (the DejaVu fonts fontconfig
# brings are enough for the screenshots).
set -euo pipefail

CRANE_VERSION="${CRANE_VERSION:-v0.22.1}"

# binary -> Debian package that provides it
declare -A pkg_of=(
  [dockerd]=docker.io
  [containerd]=containerd
  [ctr]=containerd
  [podman]=podman
  [skopeo]=skopeo
  [jq]=jq
  [newuidmap]=uidmap
  [chromium]=chromium
)

missing=()
for bin in "${!pkg_of[@]}"; do
  if ! command -v "$bin" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$bin" ] && [ ! -x "/usr/bin/$bin" ]; then
    missing+=("${pkg_of[$bin]}")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
  if [ "$(id -u)" != 0 ]; then
    echo "install-e2e-deps: need root to install: ${pkgs[*]}" >&2
    exit 1
  fi
  echo "install-e2e-deps: installing ${pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  aptlog="$(mktemp)"
  trap 'rm -f "$aptlog"' EXIT
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${pkgs[@]}"; } >"$aptlog" 2>&1; then
    cat "$aptlog" >&2
    echo "install-e2e-deps: apt-get failed" >&2
    exit 1
  fi
fi

gobin="$(go env GOBIN)"
[ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"
if ! command -v crane >/dev/null 2>&1 && [ ! -x "$gobin/crane" ]; then
  echo "install-e2e-deps: installing crane $CRANE_VERSION into $gobin"
  go install "github.com/google/go-containerregistry/cmd/crane@$CRANE_VERSION"
fi
