// Package e2e is wharf's end-to-end suite: real container clients (dockerd,
// containerd's ctr, podman, skopeo, crane) pull through one real wharf
// process (bin/wharf) from local upstream registries that the tests seed,
// and a real headless Chromium drives the web UI.
//
// The tests are behind the build tag "e2e" and run with `make e2e`, which
// installs the clients (scripts/install-e2e-deps.sh), builds wharf and the
// OCI conformance suite, and then runs
//
//	go test -tags e2e -count=1 -timeout 14m ./test/e2e/...
//
// What the suite owns and keeps:
//   - TestMain starts three upstreams on loopback (internal/registrytest):
//     docker.io with Docker Hub's token service and blob redirects to a CDN
//     host, ghcr.io with a token service, and registry.k8s.io redirecting
//     every repository request to a storage host. It starts one wharf
//     process mapped onto them, one dockerd and one containerd, each in its
//     own temporary directories and sockets; nothing touches the machine's
//     own daemons or /var/lib. The one exception under /etc: the HTTPS_PROXY
//     test writes wharf's CA as its own uniquely named file under
//     /etc/docker/certs.d/<registry>/ (dockerd reads per-registry CAs only
//     there) and removes exactly what it created.
//   - Every scenario seeds its own freshly generated images (valid gzip'd
//     tar layers, so clients can unpack them) under its own repositories, so
//     the scenarios do not depend on each other's cache state or order.
//   - Every scenario asserts on what the clients got (digests and image IDs
//     equal to the upstream's) and on the upstream's own request log (how
//     many requests reached it, from whom, with which method).
//   - Everything started is stopped by process id, also when a test fails;
//     every wait is bounded in count and time.
//   - With CI=true nothing skips: a missing client is a test failure.
//
// This file carries no build tag so that the package exists (and `go vet
// ./...` sees it) without the tag.
package e2e
