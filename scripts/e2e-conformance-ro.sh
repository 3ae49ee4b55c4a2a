#!/usr/bin/env bash
# Runs the OCI distribution-spec conformance suite in read-only (pull) mode
# against wharf (or any registry that serves, or can fetch, known content).
# test/e2e drives it once per routing shape; it can be run by hand as well.
#
# Required env:
#   OCI_REGISTRY       host:port of the registry under test, e.g. 127.0.0.1:5000
#   OCI_REPO1          repository as seen on that registry: library/hello (default
#                      route), ghcr.io/org/hello (path prefix), org/hello (virtual host)
#   RO_TAGS            space-separated tags that exist in OCI_REPO1
# Optional env:
#   OCI_TLS            enabled | insecure | disabled (default disabled: plain http)
#   DISCOVER_REF_BASE  where manifests are read to derive the digests to test
#                      (default $OCI_REGISTRY/$OCI_REPO1). Point it at the upstream
#                      so the mirror's cache is still cold when the suite runs.
#   CRANE_FLAGS        flags for crane during discovery (default --insecure)
#   OCI_RO_DATA_MANIFESTS / OCI_RO_DATA_BLOBS   skip discovery (space separated digests)
#   OCI_RO_DATA_REFERRERS  subject digests for the referrers API (then set OCI_API_REFERRER=true)
#   CONFORMANCE_BIN    the binary from e2e-conformance-build.sh (default <repo>/.bin/oci-conformance)
#   OCI_RESULTS_DIR    default ./results-ro
# Exit status: 0 pass, 1 fail, 2 setup error. The last line printed is
# "verdict: <Pass|FAIL|UNKNOWN>".
#
# With OCI_API_PUSH=false the pinned suite prints its report to stdout and then
# panics while writing results.yaml (a DataStatus key without a Data entry), so
# the verdict is read from its "OCI Conformance Test: <status>" line, not from
# its exit code.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CONFORMANCE_BIN="${CONFORMANCE_BIN:-$ROOT/.bin/oci-conformance}"
: "${OCI_REGISTRY:?set OCI_REGISTRY}"; : "${OCI_REPO1:?set OCI_REPO1}"; : "${RO_TAGS:?set RO_TAGS}"
export OCI_TLS="${OCI_TLS:-disabled}"
export OCI_RESULTS_DIR="${OCI_RESULTS_DIR:-./results-ro}"
DISCOVER_REF_BASE="${DISCOVER_REF_BASE:-$OCI_REGISTRY/$OCI_REPO1}"
CRANE_FLAGS="${CRANE_FLAGS:---insecure}"
[ -x "$CONFORMANCE_BIN" ] || { echo "missing $CONFORMANCE_BIN; run scripts/e2e-conformance-build.sh" >&2; echo "verdict: UNKNOWN"; exit 2; }

# discover prints "M <digest>" for every manifest and "B <digest>" for every
# blob reachable from a reference, descending into indexes.
discover() {
  local ref="$1" raw mt d
  raw="$(crane manifest $CRANE_FLAGS "$ref")" || return 1
  d="$(crane digest $CRANE_FLAGS "$ref")" || return 1
  echo "M $d"
  mt="$(jq -r '.mediaType // empty' <<<"$raw")"
  case "$mt" in
    application/vnd.oci.image.index.v1+json|application/vnd.docker.distribution.manifest.list.v2+json)
      for d in $(jq -r '.manifests[].digest' <<<"$raw"); do discover "${DISCOVER_REF_BASE}@$d" || return 1; done ;;
    *)
      jq -r '(.config.digest // empty), (.layers[]?.digest), (.blobs[]?.digest)' <<<"$raw" | sed 's/^/B /' ;;
  esac
}
if [ -z "${OCI_RO_DATA_MANIFESTS:-}" ] || [ -z "${OCI_RO_DATA_BLOBS:-}" ]; then
  found=""
  for t in $RO_TAGS; do
    out="$(discover "$DISCOVER_REF_BASE:$t")" || { echo "discovery of $DISCOVER_REF_BASE:$t failed" >&2; echo "verdict: UNKNOWN"; exit 2; }
    found+="$out"$'\n'
  done
  found="$(sort -u <<<"$found")"
  export OCI_RO_DATA_MANIFESTS="${OCI_RO_DATA_MANIFESTS:-$(awk '$1=="M"{print $2}' <<<"$found" | xargs)}"
  export OCI_RO_DATA_BLOBS="${OCI_RO_DATA_BLOBS:-$(awk '$1=="B"{print $2}' <<<"$found" | xargs)}"
fi
export OCI_RO_DATA_TAGS="$RO_TAGS"
export OCI_API_PUSH=false
export OCI_API_BLOBS_DELETE=false OCI_API_MANIFESTS_DELETE=false OCI_API_TAGS_DELETE=false
export OCI_API_BLOBS_MOUNT_ANONYMOUS=false
export OCI_API_REFERRER="${OCI_API_REFERRER:-false}"   # a mirror passes an upstream 404 through (client-compat §5.5)
export OCI_API_TAGS_LIST="${OCI_API_TAGS_LIST:-true}"
echo "registry=$OCI_REGISTRY tls=$OCI_TLS repo=$OCI_REPO1 tags=[$OCI_RO_DATA_TAGS] referrers=$OCI_API_REFERRER"
echo "manifests=[$OCI_RO_DATA_MANIFESTS]"
echo "blobs=[$OCI_RO_DATA_BLOBS]"
mkdir -p "$OCI_RESULTS_DIR"
"$CONFORMANCE_BIN" >"$OCI_RESULTS_DIR/stdout.txt" 2>"$OCI_RESULTS_DIR/stderr.txt"
rc=$?
sed -n '/^Test results/,/^Configuration:/p' "$OCI_RESULTS_DIR/stdout.txt" | grep -v '^Configuration:'
grep -E 'level=(WARN|ERROR)' "$OCI_RESULTS_DIR/stderr.txt" | head -20
status="$(sed -n 's/^OCI Conformance Test: //p' "$OCI_RESULTS_DIR/stdout.txt" | head -1)"
echo "binary exit code: $rc (2 = the report writer's known panic in read-only mode)"
echo "verdict: ${status:-UNKNOWN}"
case "$status" in Pass) exit 0 ;; FAIL|Fail) exit 1 ;; *) exit 2 ;; esac
