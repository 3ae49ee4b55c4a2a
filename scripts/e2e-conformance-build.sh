#!/usr/bin/env bash
# Builds the OCI distribution-spec conformance suite, pinned, for the
# end-to-end tests (test/e2e). Nothing is vendored or committed: the module
# is fetched from the Go module proxy into a throw-away module and the binary
# is written to $OUT_DIR (default <repo>/.bin, git-ignored).
#
# Idempotent: if $OUT_DIR/oci-conformance was built from $CONFORMANCE_VERSION
# already (recorded in oci-conformance.version next to it), nothing is done.
#
# Env: CONFORMANCE_VERSION  module version (default: the pseudo-version verified
#                           with wharf; the proxy reachable here serves only the
#                           newest pseudo-version of this module, so a bump is
#                           a deliberate change of this line)
#      OUT_DIR              where to put the binary
set -euo pipefail
CONFORMANCE_VERSION="${CONFORMANCE_VERSION:-v0.0.0-20260831232431-97274622c111}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT_DIR="${OUT_DIR:-$ROOT/.bin}"
MOD=github.com/opencontainers/distribution-spec/conformance
BIN="$OUT_DIR/oci-conformance"
STAMP="$BIN.version"

if [ -x "$BIN" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$CONFORMANCE_VERSION" ]; then
  exit 0
fi
mkdir -p "$OUT_DIR"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
go mod init conformance-build >/dev/null 2>&1
if ! go get "$MOD@$CONFORMANCE_VERSION" >"$WORK/get.log" 2>&1; then
  cat "$WORK/get.log" >&2
  echo "e2e-conformance-build: $MOD@$CONFORMANCE_VERSION is not available from the module proxy" >&2
  exit 1
fi
go build -o "$BIN.tmp" "$MOD"
mv "$BIN.tmp" "$BIN"
echo "$CONFORMANCE_VERSION" >"$STAMP"
echo "e2e-conformance-build: built $MOD@$CONFORMANCE_VERSION -> $BIN"
