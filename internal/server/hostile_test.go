package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wharf-mirror/wharf/internal/adminapi"
	"github.com/wharf-mirror/wharf/internal/config"
	"github.com/wharf-mirror/wharf/internal/registrytest"
	"github.com/wharf-mirror/wharf/internal/server"
)

// TestHostileInput sends what a hostile client would try, and has upstreams
// answer what a hostile or broken registry would answer, one request per
// row. After every row it checks that
//
//  1. the answer is the expected status with OCI error JSON whose message
//     names the problem (or, below the API, the documented plain 4xx);
//  2. no test registry was asked unless the row allows it, nothing outside
//     the test's own listeners was dialled (the metadata address, realms
//     and redirect targets named by an upstream), and the sink listener,
//     which stands for an internal service on loopback, saw no request;
//  3. nothing was written to the cache: the files under <data_dir>/blobs
//     (tmp excluded) and the admin API's cache statistics are unchanged,
//     except that a blob miss may commit that one blob, whole and verified;
//  4. wharf is healthy: GET /v2/ answers 200 and /readyz is ready.
//
// At the end a known-good image pulls from the cache and from upstream,
// and the table of answers is logged.
//
// Requests reach wharf's production listeners (ServeListeners), so the
// http.Server limits apply, and are written byte for byte over a fresh
// connection, so that "..", "%2e%2e" and "%2f" arrive as sent.
//
// Every upstream-side row has an upstream of its own, u<row>.hostile.example,
// so that what one row leaves in wharf's upstream client (a remembered
// challenge, a negative cache entry) cannot change another row's answer. The
// names are public-looking because the SSRF rules for a public registry are
// the strict ones (upstream and upstream/auth package docs; client-compat
// §6.1); a registry on 127.0.0.1 may legitimately name a realm or redirect
// target on the local network. wharf's upstream transport resolves these
// names to one scripted loopback server, dials 127.0.0.1 and localhost (the
// test registries and the sink) as asked, and refuses and records every
// other address.
func TestHostileInput(t *testing.T) {
	sink := newHostileLog(t, nil)
	rows := hostileRows(sink.addr)
	e := newHostileEnv(t, rows, sink)

	width := 0
	for _, row := range rows {
		width = max(width, len(row.name))
	}
	table := make([]string, 0, len(rows))
	for i, row := range rows {
		var got hostileAnswer
		t.Run(row.name, func(t *testing.T) { got = e.run(t, i, row) })
		table = append(table, fmt.Sprintf("%-*s  %s", width, row.name, got))
	}

	// A known-good image still pulls, from the cache and from upstream.
	pullAll(t, e.h, "/v2/ghcr.io/hostile/good", "v1")
	e.h.ghcr.PushImage(t, "hostile/fresh", "v1", registrytest.RandomImage(t, 1202, 3000, 5000))
	pullAll(t, e.h, "/v2/ghcr.io/hostile/fresh", "v1")
	if rec := e.h.admin("GET", "/readyz", nil); rec.Code != http.StatusOK {
		t.Errorf("/readyz after the table: %d %s", rec.Code, rec.Body)
	}

	t.Logf("hostile input: row → what wharf answered\n%s", strings.Join(table, "\n"))
}

// hostileRow is one hostile request and what wharf must answer.
type hostileRow struct {
	name string
	// proxy sends the request to the HTTPS_PROXY listener instead of the
	// registry listener.
	proxy  bool
	method string // default GET
	// target is the request-target exactly as sent; "{up}" stands for the
	// row's own upstream (see upstream).
	target string
	// header is name, value pairs; a "Host" pair replaces the default Host
	// (the listener's address).
	header []string
	// upstream, when set, is how the row's own upstream
	// u<row>.hostile.example answers every request, token requests
	// included.
	upstream http.HandlerFunc
	// asks names the test registries ("docker.io", "ghcr.io") the row may
	// ask; every other one must see no request.
	asks []string
	// seed is a blob pushed to ghcr.io/hostile/blobs and not cached: the
	// row's miss, which the row may commit, whole.
	seed []byte

	status int
	// code is the expected OCI error code; "" when the answer is not API
	// error JSON (a 2xx, or a 4xx from below the API, whose body must then
	// contain says).
	code string
	// says must appear in the error message (case-insensitive): the answer
	// names the problem.
	says string
	// cut: a blob transfer that fails. When it fails before the first
	// byte went out, the answer is the error status, code and says above;
	// after that, the only honest end is a cut connection: no response at
	// all or a 2xx whose body ends before its Content-Length. Which one
	// depends on how far the transfer got; both are accepted.
	cut bool
	// check, when set, inspects an answer with the expected status further.
	check func(t *testing.T, a *hostileAnswer)
	// note, when set, adds what the row observed to the logged table.
	note func(e *hostileEnv) string
}

// hostileAnswer is what wharf answered to a row.
type hostileAnswer struct {
	status  int // 0: the connection closed without a response
	header  http.Header
	body    []byte
	code    string // OCI error code; "" when the body is not OCI error JSON
	message string
	cut     bool // no response, or the body ended early
	note    string
}

func (a hostileAnswer) String() string {
	var s string
	switch {
	case a.status == 0:
		s = "connection cut, no response"
	case a.code != "":
		s = fmt.Sprintf("%d %s", a.status, a.code)
	case a.status >= 400:
		s = fmt.Sprintf("%d (%s)", a.status, hostileFirstLine(a.body))
	default:
		s = strconv.Itoa(a.status)
	}
	if a.cut && a.status != 0 {
		s += ", body cut"
	}
	if a.note != "" {
		s += "; " + a.note
	}
	return s
}

func hostileFirstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	if len(s) > 60 {
		s = s[:60] + "…"
	}
	return s
}

// hostileCached is the cached blob of the range rows. Fixture content is
// deterministic, so that rows can name digests before the harness exists.
var hostileCached = []byte(strings.Repeat("cached blob for the range rows\n", 100))

// hostileMiss is the content of the uncached blob of the row named name.
func hostileMiss(name string) []byte {
	return []byte(strings.Repeat("miss blob for "+name+"\n", 64))
}

// hostileManifest is a valid OCI image manifest padded with an annotation
// to size bytes; size 0 means no padding.
func hostileManifest(size int) []byte {
	const head = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",` +
		`"config":{"mediaType":"application/vnd.oci.empty.v1+json",` +
		`"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]`
	if size == 0 {
		return []byte(head + "}")
	}
	const pad, tail = `,"annotations":{"pad":"`, `"}}`
	return []byte(head + pad + strings.Repeat("x", size-len(head)-len(pad)-len(tail)) + tail)
}

// Upstream behaviours.

func hostileOCIError(status int, code string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"errors":[{"code":%q,"message":"hostile upstream"}]}`, code)
	}
}

// hostileChallenge answers every request with 401 and the WWW-Authenticate
// value.
func hostileChallenge(value string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", value)
		hostileOCIError(http.StatusUnauthorized, "UNAUTHORIZED")(w, r)
	}
}

// hostileTokenService challenges with a realm on the upstream's own host,
// which answers token requests with body.
func hostileTokenService(body []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			w.Header().Set("Content-Type", "application/json")
			w.Write(body)
			return
		}
		hostileChallenge(`Bearer realm="http://`+r.Host+`/token",service="x"`)(w, r)
	}
}

// hostileTokenStatus challenges with a realm on the upstream's own host,
// whose token service answers status.
func hostileTokenStatus(status int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			hostileOCIError(status, "DENIED")(w, r)
			return
		}
		hostileChallenge(`Bearer realm="http://`+r.Host+`/token",service="x"`)(w, r)
	}
}

// hostileRedirect answers every request with a 307 to location.
func hostileRedirect(location string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", location)
		w.WriteHeader(http.StatusTemporaryRedirect)
	}
}

// hostileServeManifest answers with body as an OCI manifest; chunked omits
// the Content-Length; digestHeader, when set, is the Docker-Content-Digest.
func hostileServeManifest(body []byte, chunked bool, digestHeader string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		if digestHeader != "" {
			w.Header().Set("Docker-Content-Digest", digestHeader)
		}
		if !chunked {
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		}
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodHead {
			return
		}
		for b := body; len(b) > 0; { // in pieces: a chunked answer really is chunked
			n := min(len(b), 64<<10)
			if _, err := w.Write(b[:n]); err != nil {
				return
			}
			b = b[n:]
		}
	}
}

// hostileTags answers tags/list as distribution does: n must be a
// non-negative integer, else 400 PAGINATION_NUMBER_INVALID.
func hostileTags(w http.ResponseWriter, r *http.Request) {
	if s := r.URL.Query().Get("n"); s != "" {
		if n, err := strconv.Atoi(s); err != nil || n < 0 {
			hostileOCIError(http.StatusBadRequest, "PAGINATION_NUMBER_INVALID")(w, r)
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprint(w, `{"name":"app","tags":["a","b","c"]}`)
}

func hostileRows(sink string) []hostileRow {
	zeros := "sha256:" + strings.Repeat("0", 64)
	hugeManifest, smallManifest := hostileManifest(5<<20), hostileManifest(0)
	huge := sha(hugeManifest).String()
	const (
		badName       = "invalid repository name"
		notConfigured = "registry is not configured"
		notFound      = "not found upstream"
		tokenRealm    = "token realm"
		refusedTarget = "target it refuses"
	)

	rows := []hostileRow{
		// Path traversal and malformed names: refused by the path parser
		// before routing.
		{name: "name ../../etc/passwd", target: "/v2/../../etc/passwd/manifests/x", status: 400, code: "NAME_INVALID", says: badName},
		{name: "name library/%2e%2e/%2e%2e", target: "/v2/library/%2e%2e/%2e%2e/manifests/x", status: 400, code: "NAME_INVALID", says: badName},
		{name: "name library/..%2f..%2fetc", target: "/v2/library/..%2f..%2fetc/manifests/x", status: 400, code: "NAME_INVALID", says: badName},
		{name: "name library%2fnginx (encoded slash)", target: "/v2/library%2fnginx/manifests/latest", status: 400, code: "NAME_INVALID", says: badName},
		{name: `name library\..\etc (raw backslash)`, target: `/v2/library\..\etc/manifests/latest`, status: 400, code: "NAME_INVALID", says: badName},
		{name: "name library%5c..%5cetc", target: "/v2/library%5c..%5cetc/manifests/latest", status: 400, code: "NAME_INVALID", says: badName},
		{name: "name with %00", target: "/v2/library/ng%00inx/manifests/latest", status: 400, code: "NAME_INVALID", says: badName},
		{name: "name with a raw NUL byte", target: "/v2/library/ng\x00inx/manifests/latest", status: 400, says: "Bad Request"},
		{name: "name upper-case", target: "/v2/Library/Nginx/manifests/latest", status: 400, code: "NAME_INVALID", says: badName},
		{name: "name of 256 characters", target: "/v2/" + strings.Repeat("a", 256) + "/manifests/latest", status: 400, code: "NAME_INVALID", says: badName},
		{name: "name of 200 components (399 characters)", target: "/v2/" + strings.Repeat("a/", 199) + "a/manifests/latest", status: 400, code: "NAME_INVALID", says: badName},
		// 199 characters is a valid name: it goes to the default upstream.
		{name: "name of 100 components (199 characters)", target: "/v2/" + strings.Repeat("a/", 99) + "a/manifests/latest", asks: []string{"docker.io"}, status: 404, code: "NAME_UNKNOWN", says: notFound},
		{name: "name with an empty component", target: "/v2/library//nginx/manifests/latest", status: 400, code: "NAME_INVALID", says: badName},
		{name: "tag ..", target: "/v2/library/nginx/manifests/..", status: 400, code: "MANIFEST_INVALID", says: "invalid tag"},
		{name: "tag of 129 characters", target: "/v2/library/nginx/manifests/" + strings.Repeat("t", 129), status: 400, code: "MANIFEST_INVALID", says: "invalid tag"},

		// Registry selection: ns, a path prefix, a host-like first name
		// component and the Host header only ever select a configured
		// upstream; they are never dialled.
		{name: "ns=../../x", target: "/v2/foo/manifests/1?ns=../../x", status: 404, code: "NAME_UNKNOWN", says: notConfigured},
		{name: "ns=127.0.0.1:22", target: "/v2/foo/manifests/1?ns=127.0.0.1:22", status: 404, code: "NAME_UNKNOWN", says: notConfigured},
		{name: "ns=169.254.169.254", target: "/v2/foo/manifests/1?ns=169.254.169.254", status: 404, code: "NAME_UNKNOWN", says: notConfigured},
		{name: "ns=localhost", target: "/v2/foo/manifests/1?ns=localhost", status: 404, code: "NAME_UNKNOWN", says: notConfigured},
		{name: "ns=http://169.254.169.254/", target: "/v2/foo/manifests/1?ns=http%3A%2F%2F169.254.169.254%2F", status: 404, code: "NAME_UNKNOWN", says: notConfigured},
		{name: "ns=ghcr.io%0d%0aX-Injected:1", target: "/v2/foo/manifests/1?ns=ghcr.io%0d%0aX-Injected:1", status: 404, code: "NAME_UNKNOWN", says: notConfigured},
		{name: "ns of 10 KB", target: "/v2/foo/manifests/1?ns=" + strings.Repeat("n", 10<<10), status: 404, code: "NAME_UNKNOWN", says: notConfigured},
		{name: "path prefix /169.254.169.254/v2/", target: "/169.254.169.254/v2/foo/manifests/1", status: 404, code: "NAME_UNKNOWN", says: notConfigured},
		{name: "name 169.254.169.254/foo", target: "/v2/169.254.169.254/foo/manifests/1", status: 404, code: "NAME_UNKNOWN", says: notConfigured},
		{name: "name localhost:22/foo", target: "/v2/localhost:22/foo/manifests/1", status: 404, code: "NAME_UNKNOWN", says: notConfigured},
		{name: "Host: 169.254.169.254", target: "/v2/hostile/nothing1/manifests/latest", header: []string{"Host", "169.254.169.254"}, asks: []string{"docker.io"}, status: 404, code: "NAME_UNKNOWN", says: notFound},
		{name: "Host: localhost:22", target: "/v2/hostile/nothing2/manifests/latest", header: []string{"Host", "localhost:22"}, asks: []string{"docker.io"}, status: 404, code: "NAME_UNKNOWN", says: notFound},
		{name: "Host: evil.test", target: "/v2/hostile/nothing3/manifests/latest", header: []string{"Host", "evil.test"}, asks: []string{"docker.io"}, status: 404, code: "NAME_UNKNOWN", says: notFound},
		{name: "absolute-form GET http://169.254.169.254/v2/…", target: "http://169.254.169.254/v2/hostile/nothing4/manifests/latest", asks: []string{"docker.io"}, status: 404, code: "NAME_UNKNOWN", says: notFound},

		// Invalid digests: refused before any upstream request.
		{name: "digest sha256:abc", target: "/v2/library/nginx/blobs/sha256:abc", status: 400, code: "DIGEST_INVALID", says: "invalid digest"},
		{name: "digest sha256:<64 upper-case hex>", target: "/v2/library/nginx/blobs/sha256:" + strings.Repeat("A", 64), status: 400, code: "DIGEST_INVALID", says: "invalid digest"},
		{name: "digest sha512:short", target: "/v2/library/nginx/blobs/sha512:short", status: 400, code: "DIGEST_INVALID", says: "invalid digest"},
		{name: "digest md5:<32 hex>", target: "/v2/library/nginx/blobs/md5:" + strings.Repeat("0", 32), status: 400, code: "DIGEST_INVALID", says: "invalid digest"},
		// The last path segment is "x": not an API path at all.
		{name: "digest sha256:../../x", target: "/v2/library/nginx/blobs/sha256:../../x", status: 404, code: "UNSUPPORTED", says: "no such registry API endpoint"},
		{name: "digest sha256:..%2f..%2fx", target: "/v2/library/nginx/blobs/sha256:..%2f..%2fx", status: 400, code: "DIGEST_INVALID", says: "invalid digest"},
		{name: "digest foo:bar", target: "/v2/library/nginx/blobs/foo:bar", status: 400, code: "DIGEST_INVALID", says: "invalid digest"},
		{name: "digest of 10 KB", target: "/v2/library/nginx/blobs/sha256:" + strings.Repeat("a", 10<<10), status: 400, code: "DIGEST_INVALID", says: "invalid digest"},
		{name: "manifest digest sha256:abc", target: "/v2/library/nginx/manifests/sha256:abc", status: 400, code: "DIGEST_INVALID", says: "invalid digest"},
		{name: "referrers digest foo:bar", target: "/v2/library/nginx/referrers/foo:bar", status: 400, code: "DIGEST_INVALID", says: "invalid digest"},

		// Manifests over the 4 MiB limit, and manifests that do not match
		// their digest.
		{name: "upstream manifest 5 MiB by tag", target: "/v2/{up}/app/manifests/huge", upstream: hostileServeManifest(hugeManifest, false, ""), status: 502, code: "MANIFEST_INVALID", says: "4 MiB limit"},
		{name: "upstream manifest 5 MiB by tag, chunked", target: "/v2/{up}/app/manifests/huge", upstream: hostileServeManifest(hugeManifest, true, ""), status: 502, code: "MANIFEST_INVALID", says: "4 MiB limit"},
		{name: "upstream manifest 5 MiB by digest", target: "/v2/{up}/app/manifests/" + huge, upstream: hostileServeManifest(hugeManifest, false, ""), status: 502, code: "MANIFEST_INVALID", says: "4 MiB limit"},
		{name: "upstream manifest 5 MiB by digest, chunked", target: "/v2/{up}/app/manifests/" + huge, upstream: hostileServeManifest(hugeManifest, true, ""), status: 502, code: "MANIFEST_INVALID", says: "4 MiB limit"},
		{name: "upstream Docker-Content-Digest mismatch", target: "/v2/{up}/app/manifests/v1", upstream: hostileServeManifest(smallManifest, false, zeros), status: 502, code: "UNAVAILABLE", says: "does not match its digest"},
		{name: "upstream manifest not matching its digest", target: "/v2/{up}/app/manifests/" + zeros, upstream: hostileServeManifest(smallManifest, false, ""), status: 502, code: "UNAVAILABLE", says: "does not match its digest"},

		// Challenges that name no usable scheme: the 401 is the answer
		// (Docker Hub answers 401 for repositories that do not exist).
		{name: "WWW-Authenticate garbage", target: "/v2/{up}/app/manifests/v1", upstream: hostileChallenge(`%%% garbage ===,,, "`), status: 404, code: "NAME_UNKNOWN", says: "upstream refused access"},
		{name: "WWW-Authenticate 100 KB of garbage", target: "/v2/{up}/app/manifests/v1", upstream: hostileChallenge(strings.Repeat(`x="`, 100<<10/3)), status: 404, code: "NAME_UNKNOWN", says: "upstream refused access"},

		// Token realms that are not the registry's own site, internal, or
		// not http(s): refused without a request to them (CheckRealm).
		{name: "realm http://169.254.169.254/…", target: "/v2/{up}/app/manifests/v1", upstream: hostileChallenge(`Bearer realm="http://169.254.169.254/latest/meta-data/",service="x"`), status: 502, code: "UNAVAILABLE", says: tokenRealm},
		{name: "realm on a loopback port", target: "/v2/{up}/app/manifests/v1", upstream: hostileChallenge(`Bearer realm="http://` + sink + `/token",service="x"`), status: 502, code: "UNAVAILABLE", says: tokenRealm},
		{name: "realm unterminated quote, on a loopback port", target: "/v2/{up}/app/manifests/v1", upstream: hostileChallenge(`Bearer realm="http://` + sink + `/token,service="x`), status: 502, code: "UNAVAILABLE", says: tokenRealm},
		{name: "realm http://[::ffff:169.254.169.254]/", target: "/v2/{up}/app/manifests/v1", upstream: hostileChallenge(`Bearer realm="http://[::ffff:169.254.169.254]/token",service="x"`), status: 502, code: "UNAVAILABLE", says: tokenRealm},
		{name: "realm http://2852039166/ (decimal IPv4)", target: "/v2/{up}/app/manifests/v1", upstream: hostileChallenge(`Bearer realm="http://2852039166/token",service="x"`), status: 502, code: "UNAVAILABLE", says: tokenRealm},
		{name: "realm http://<upstream>@169.254.169.254/", target: "/v2/{up}/app/manifests/v1", upstream: hostileChallenge(`Bearer realm="http://u0.hostile.example@169.254.169.254/token",service="x"`), status: 502, code: "UNAVAILABLE", says: tokenRealm},
		{name: "realm on another public site", target: "/v2/{up}/app/manifests/v1", upstream: hostileChallenge(`Bearer realm="https://auth.evil.test/token",service="x"`), status: 502, code: "UNAVAILABLE", says: tokenRealm},
		{name: "realm file:///etc/passwd", target: "/v2/{up}/app/manifests/v1", upstream: hostileChallenge(`Bearer realm="file:///etc/passwd",service="x"`), status: 502, code: "UNAVAILABLE", says: tokenRealm},
		{name: "realm gopher://169.254.169.254:70/", target: "/v2/{up}/app/manifests/v1", upstream: hostileChallenge(`Bearer realm="gopher://169.254.169.254:70/_x",service="x"`), status: 502, code: "UNAVAILABLE", says: tokenRealm},
		{name: "realm of 100 KB on 169.254.169.254", target: "/v2/{up}/app/manifests/v1", upstream: hostileChallenge(`Bearer realm="http://169.254.169.254/` + strings.Repeat("a", 100<<10) + `",service="x"`), status: 502, code: "UNAVAILABLE", says: tokenRealm},

		{name: "token service answers HTML", target: "/v2/{up}/app/manifests/v1", upstream: hostileTokenService([]byte("<html>sign in</html>")), status: 502, code: "UNAVAILABLE", says: "without a usable token"},
		{name: "token response of 9 MiB", target: "/v2/{up}/app/manifests/v1", upstream: hostileTokenService([]byte(`{"token":"` + strings.Repeat("t", 9<<20) + `"}`)), status: 502, code: "UNAVAILABLE", says: "without a usable token"},

		// Redirects anywhere but http(s) on a public host: refused without
		// a request to the target.
		{name: "redirect to file:///etc/passwd", target: "/v2/{up}/app/manifests/v1", upstream: hostileRedirect("file:///etc/passwd"), status: 502, code: "UNAVAILABLE", says: refusedTarget},
		{name: "redirect to http://169.254.169.254/", target: "/v2/{up}/app/manifests/v1", upstream: hostileRedirect("http://169.254.169.254/latest/meta-data/"), status: 502, code: "UNAVAILABLE", says: refusedTarget},
		{name: "redirect to //169.254.169.254/ (scheme-relative)", target: "/v2/{up}/app/manifests/v1", upstream: hostileRedirect("//169.254.169.254/latest/meta-data/"), status: 502, code: "UNAVAILABLE", says: refusedTarget},
		{name: "redirect to a loopback port", target: "/v2/{up}/app/manifests/v1", upstream: hostileRedirect("http://" + sink + "/"), status: 502, code: "UNAVAILABLE", says: refusedTarget},
		{name: "redirect to http://[::1]:22/", target: "/v2/{up}/app/manifests/v1", upstream: hostileRedirect("http://[::1]:22/"), status: 502, code: "UNAVAILABLE", says: refusedTarget},
		{name: "redirect to gopher://x/", target: "/v2/{up}/app/manifests/v1", upstream: hostileRedirect("gopher://x/_GET"), status: 502, code: "UNAVAILABLE", says: refusedTarget},
		{name: "blob redirect to http://169.254.169.254/", target: "/v2/{up}/app/blobs/" + zeros, upstream: hostileRedirect("http://169.254.169.254/latest/meta-data/"), status: 502, code: "UNAVAILABLE", says: refusedTarget},
		{name: "tags/list redirect to http://169.254.169.254/", target: "/v2/{up}/app/tags/list", upstream: hostileRedirect("http://169.254.169.254/latest/meta-data/"), status: 502, code: "UNAVAILABLE", says: refusedTarget},

		// tags/list: n must be a non-negative integer and is capped at
		// 10000; last must be a tag; only a rel="next" Link on the
		// client's own path goes back to the client.
		{name: "tags/list n=999999999999", target: "/v2/{up}/app/tags/list?n=999999999999", upstream: hostileTags, status: 200, note: hostileForwarded, check: func(t *testing.T, a *hostileAnswer) {
			if !strings.Contains(a.note, "n=10000") {
				t.Errorf("upstream got %s, want n capped at 10000", a.note)
			}
		}},
		{name: "tags/list n=-1", target: "/v2/{up}/app/tags/list?n=-1", upstream: hostileTags, status: 400, code: "PAGINATION_NUMBER_INVALID", says: "non-negative integer"},
		{name: "tags/list n=abc", target: "/v2/{up}/app/tags/list?n=abc", upstream: hostileTags, status: 400, code: "PAGINATION_NUMBER_INVALID", says: "non-negative integer"},
		{name: "tags/list n given twice", target: "/v2/{up}/app/tags/list?n=1&n=2", upstream: hostileTags, status: 400, code: "PAGINATION_NUMBER_INVALID", says: "once"},
		{name: "tags/list last=<10 KB>", target: "/v2/{up}/app/tags/list?last=" + strings.Repeat("z", 10<<10), upstream: hostileTags, status: 400, code: "PAGINATION_NUMBER_INVALID", says: "last must be one tag"},
		{name: "tags/list last=../x", target: "/v2/{up}/app/tags/list?last=../x", upstream: hostileTags, status: 400, code: "PAGINATION_NUMBER_INVALID", says: "last must be one tag"},
		{name: "tags/list Link to 169.254.169.254 rewritten", target: "/v2/{up}/app/tags/list?n=1", upstream: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Link", `<http://169.254.169.254/v2/app/tags/list?n=1&last=a>; rel="next"`)
			hostileTags(w, r)
		}, status: 200, check: func(t *testing.T, a *hostileAnswer) {
			if l := a.header.Get("Link"); strings.Contains(l, "169.254") || !strings.Contains(l, "/tags/list?") {
				t.Errorf("Link %q: want the mirror's own path", l)
			}
		}},
		{name: "tags/list two Links, next second", target: "/v2/{up}/app/tags/list?n=1", upstream: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Add("Link", `<http://169.254.169.254/first>; rel="first"`)
			w.Header().Add("Link", `<http://169.254.169.254/v2/app/tags/list?n=1&last=a>; rel="next"`)
			hostileTags(w, r)
		}, status: 200, check: func(t *testing.T, a *hostileAnswer) {
			if ls := a.header.Values("Link"); len(ls) != 1 || strings.Contains(ls[0], "169.254") || !strings.Contains(ls[0], "last=a") {
				t.Errorf("Link %q: want only the next link, on the mirror's own path", ls)
			}
		}},
		{name: "tags/list unparsable or bare Link dropped", target: "/v2/{up}/app/tags/list?n=1", upstream: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Add("Link", `<http://169.254.169.254/%zz>; rel="next"`)
			w.Header().Add("Link", `http://169.254.169.254/v2/x/tags/list?n=1`)
			hostileTags(w, r)
		}, status: 200, check: func(t *testing.T, a *hostileAnswer) {
			if ls := a.header.Values("Link"); len(ls) != 0 {
				t.Errorf("Link %q: want none", ls)
			}
		}},
		{name: "tags/list answer of 9 MiB", target: "/v2/{up}/app/tags/list", upstream: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"name":"app","tags":["%s"]}`, strings.Repeat("a", 9<<20))
		}, status: 502, code: "UNAVAILABLE", says: "8 MiB"},
		{name: "upstream 400 on a manifest", target: "/v2/{up}/app/manifests/v1", upstream: hostileOCIError(http.StatusBadRequest, "MANIFEST_INVALID"), status: 400, code: "UNSUPPORTED", says: "rejected the request as invalid: MANIFEST_INVALID"},
		{name: "token service answers 401", target: "/v2/{up}/app/manifests/v1", upstream: hostileTokenStatus(http.StatusUnauthorized), status: 502, code: "UNAVAILABLE", says: "token service refused"},
		{name: "token service answers 503", target: "/v2/{up}/app/manifests/v1", upstream: hostileTokenStatus(http.StatusServiceUnavailable), status: 503, code: "UNAVAILABLE", says: "token service failed"},
		{name: "redirect loop", target: "/v2/{up}/app/manifests/v1", upstream: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Location", "http://"+r.Host+r.URL.Path)
			w.WriteHeader(http.StatusFound)
		}, status: 502, code: "UNAVAILABLE", says: "more than 10 times"},

		// Blobs that upstream announces or serves wrongly.
		{name: "upstream blob announces 1 TiB, then resets", target: "/v2/{up}/app/blobs/" + zeros, upstream: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.FormatInt(1<<40, 10))
			w.WriteHeader(http.StatusOK)
			w.Write([]byte("0123456789"))
			http.NewResponseController(w).Flush()
			panic(http.ErrAbortHandler)
		}, cut: true, status: 502, code: "UNAVAILABLE", says: "nothing was cached"},
		{name: "upstream blob with wrong bytes", target: "/v2/{up}/app/blobs/" + zeros, upstream: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "4096")
			w.WriteHeader(http.StatusOK)
			w.Write(make([]byte, 4096))
		}, cut: true, status: 502, code: "UNAVAILABLE", says: "nothing was cached"},
	}

	// Range on a cached blob and on misses, as parseRange promises (RFC 9110
	// §14.2): 416 for an unsatisfiable single range, the whole blob for a
	// header it ignores (several ranges, bad syntax, another unit,
	// overflow).
	ranges := []struct {
		name, value string
		status      int
	}{
		{"bytes=999999999999-", "bytes=999999999999-", 416},
		{"bytes=-0", "bytes=-0", 416},
		{"bytes=5-1", "bytes=5-1", 416},
		{"1000 ranges", "bytes=" + hostileRanges(1000), 200},
		{"bytes=abc", "bytes=abc", 200},
		{"items=0-1", "items=0-1", 200},
		{"of 10 KB", "bytes=0-" + strings.Repeat("9", 10<<10), 200},
		{"bytes=-99999999999999999999", "bytes=-99999999999999999999", 200},
	}
	for _, rg := range ranges {
		for _, miss := range []bool{false, true} {
			row := hostileRow{
				name:   "Range " + rg.name + " on a cached blob",
				target: "/v2/ghcr.io/hostile/blobs/blobs/" + sha(hostileCached).String(),
				header: []string{"Range", rg.value},
				status: rg.status,
				check:  hostileRangeCheck(rg.status, hostileCached),
			}
			if miss {
				row.name = "Range " + rg.name + " on a miss"
				row.seed = hostileMiss(rg.name)
				row.target = "/v2/ghcr.io/hostile/blobs/blobs/" + sha(row.seed).String()
				row.asks = []string{"ghcr.io"}
				row.check = hostileRangeCheck(rg.status, row.seed)
			}
			if rg.status == http.StatusRequestedRangeNotSatisfiable {
				row.code, row.says = "BLOB_UNKNOWN", "range is not satisfiable"
			}
			rows = append(rows, row)
		}
	}

	// The mirror is read-only: every write method on every kind of path.
	paths := []struct{ kind, path string }{
		{"/v2/", "/v2/"},
		{"manifest by tag", "/v2/library/nginx/manifests/latest"},
		{"manifest by digest", "/v2/library/nginx/manifests/" + zeros},
		{"blob", "/v2/library/nginx/blobs/" + zeros},
		{"tags/list", "/v2/library/nginx/tags/list"},
		{"referrers", "/v2/library/nginx/referrers/" + zeros},
		{"upload", "/v2/library/nginx/blobs/uploads/"},
		{"upload session", "/v2/library/nginx/blobs/uploads/0a1b2c"},
		{"_catalog", "/v2/_catalog"},
	}
	for _, m := range []string{"PUT", "POST", "DELETE", "PATCH"} {
		for _, p := range paths {
			rows = append(rows, hostileRow{name: m + " " + p.kind, method: m, target: p.path, status: 405, code: "UNSUPPORTED", says: "not supported"})
		}
	}

	rows = append(rows, []hostileRow{
		{name: "TRACE /v2/", method: "TRACE", target: "/v2/", status: 405, code: "UNSUPPORTED", says: "not supported"},
		{name: "method get (lower case)", method: "get", target: "/v2/library/nginx/manifests/latest", status: 405, code: "UNSUPPORTED", says: "not supported"},

		// The listener's header limit (64 KiB) and request framing.
		{name: "header value of 100 KB", target: "/v2/", header: []string{"X-Big", strings.Repeat("a", 100<<10)}, status: 431, says: "Request Header Fields Too Large"},
		{name: "request-target of 100 KB", target: "/v2/library/nginx/manifests/latest?x=" + strings.Repeat("a", 100<<10), status: 431, says: "Request Header Fields Too Large"},
		{name: "10000 header fields", target: "/v2/", header: hostileHeaders(10000), status: 431, says: "Request Header Fields Too Large"},
		{name: "two different Content-Length", target: "/v2/", header: []string{"Content-Length", "0", "Content-Length", "5"}, status: 400, says: "Bad Request"},

		// The HTTPS_PROXY listener intercepts registry names on port 443
		// and refuses everything else; nothing is dialled.
		{name: "CONNECT 127.0.0.1:443", proxy: true, method: "CONNECT", target: "127.0.0.1:443", status: 403, says: "refused"},
		{name: "CONNECT [::1]:443", proxy: true, method: "CONNECT", target: "[::1]:443", status: 403, says: "refused"},
		{name: "CONNECT localhost:443", proxy: true, method: "CONNECT", target: "localhost:443", status: 403, says: "refused"},
		{name: "CONNECT 169.254.169.254:443", proxy: true, method: "CONNECT", target: "169.254.169.254:443", status: 403, says: "refused"},
		{name: "CONNECT ghcr.io:22", proxy: true, method: "CONNECT", target: "ghcr.io:22", status: 403, says: "refused"},
		{name: "CONNECT ghcr.io (no port)", proxy: true, method: "CONNECT", target: "ghcr.io", status: 400, says: "malformed CONNECT target"},
		{name: "CONNECT ghcr.io:443@evil", proxy: true, method: "CONNECT", target: "ghcr.io:443@evil", status: 400, says: "malformed CONNECT target"},
		{name: "proxy GET http://169.254.169.254/", proxy: true, target: "http://169.254.169.254/latest/meta-data/", status: 403, says: "refused"},
	}...)
	return rows
}

// hostileRanges is a Range value with n two-byte ranges.
func hostileRanges(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf("%d-%d", 2*i, 2*i+1)
	}
	return strings.Join(parts, ",")
}

// hostileHeaders is n small header fields as name, value pairs.
func hostileHeaders(n int) []string {
	h := make([]string, 0, 2*n)
	for i := range n {
		h = append(h, fmt.Sprintf("X-H%d", i), "v")
	}
	return h
}

// hostileRangeCheck checks a range row's answer: the whole blob for 200,
// the blob's size in the Content-Range of a 416.
func hostileRangeCheck(status int, blob []byte) func(*testing.T, *hostileAnswer) {
	return func(t *testing.T, a *hostileAnswer) {
		if status == http.StatusRequestedRangeNotSatisfiable {
			if cr := a.header.Get("Content-Range"); cr != "bytes */"+strconv.Itoa(len(blob)) {
				t.Errorf("416 with Content-Range %q", cr)
			}
			return
		}
		if string(a.body) != string(blob) {
			t.Errorf("200 with %d bytes, want the whole blob of %d", len(a.body), len(blob))
		}
	}
}

// hostileForwarded notes the query the row's upstream received last.
func hostileForwarded(e *hostileEnv) string {
	reqs := e.hostile.requests()
	if len(reqs) == 0 {
		return "nothing forwarded"
	}
	q := reqs[len(reqs)-1].RawQuery
	if len(q) > 40 {
		q = fmt.Sprintf("%s…(%d bytes)", q[:20], len(q))
	}
	return "upstream got ?" + q
}

// hostileEnv is a harness whose upstream transport only reaches the test's
// own listeners, with wharf also served on its production listeners.
type hostileEnv struct {
	h       *harness
	api     string // registry listener address
	proxy   string // HTTPS_PROXY listener address
	hostile *hostileLog
	sink    *hostileLog
	dials   *hostileDialer
	// upstreamOf maps a row's index to its upstream's name.
	upstreamOf map[int]string
}

func newHostileEnv(t *testing.T, rows []hostileRow, sink *hostileLog) *hostileEnv {
	t.Helper()
	e := &hostileEnv{sink: sink, upstreamOf: map[int]string{}}
	handlers := map[string]http.HandlerFunc{}
	for i, row := range rows {
		if row.upstream != nil {
			name := fmt.Sprintf("u%d.hostile.example", i)
			e.upstreamOf[i] = name
			handlers[name] = row.upstream
		}
	}
	e.hostile = newHostileLog(t, func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.Host)
		if err != nil {
			host = r.Host
		}
		if h, ok := handlers[host]; ok {
			h(w, r)
			return
		}
		http.NotFound(w, r)
	})
	e.dials = &hostileDialer{hostile: e.hostile.addr}

	o := defaultOptions()
	o.configure = func(c *config.Config) {
		c.Proxy.Listen = "127.0.0.1:0"
		c.Proxy.Tunnel = nil
		for _, name := range e.upstreamOf {
			c.SetUpstreamURL(name, "http://"+name)
		}
	}
	h := newHarness(t, o)
	// The harness has no transport hook: replace its instance by one on the
	// same data directory whose transport is the test's dialler.
	h.stop()
	transport := &http.Transport{DialContext: e.dials.dial, DisableCompression: true}
	t.Cleanup(transport.CloseIdleConnections)
	inst, err := server.New(context.Background(), h.cfg, server.Options{Logger: testLogger(t), Transport: transport})
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	h.inst = inst
	h.srv = httptest.NewServer(inst.Handler())
	e.h = h

	apiLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	proxyLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		apiLn.Close()
		t.Fatal(err)
	}
	e.api, e.proxy = apiLn.Addr().String(), proxyLn.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- inst.ServeListeners(ctx, server.Listeners{API: apiLn, Proxy: proxyLn}) }()
	// Registered after the harness's cleanup, so it runs first: the
	// listeners stop before the instance closes.
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("ServeListeners: %v", err)
		}
	})

	// Fixtures: the cached blob of the range rows, the uncached blobs of
	// the miss rows, and a known-good image, pulled once.
	h.ghcr.PushBlob(t, "hostile/blobs", hostileCached)
	for _, row := range rows {
		if row.seed != nil {
			h.ghcr.PushBlob(t, "hostile/blobs", row.seed)
		}
	}
	expectStatus(t, h.do("GET", "/v2/ghcr.io/hostile/blobs/blobs/"+sha(hostileCached).String()), http.StatusOK)
	h.ghcr.PushImage(t, "hostile/good", "v1", registrytest.RandomImage(t, 1201, 2000, 4000))
	pullAll(t, h, "/v2/ghcr.io/hostile/good", "v1")
	return e
}

// run sends row i and checks the answer and what it left behind.
func (e *hostileEnv) run(t *testing.T, i int, row hostileRow) hostileAnswer {
	before := e.snapshot(t)
	target := row.target
	if name, ok := e.upstreamOf[i]; ok {
		target = strings.ReplaceAll(target, "{up}", name)
	}
	method := row.method
	if method == "" {
		method = http.MethodGet
	}
	addr := e.api
	if row.proxy {
		addr = e.proxy
	}
	a, err := hostileRoundTrip(addr, method, target, row.header)
	if err != nil {
		t.Fatalf("%s %.80s: %v", method, target, err)
	}
	if row.note != nil {
		a.note = row.note(e)
	}

	// (1) The answer.
	switch {
	case row.cut && (a.status == 0 || a.cut && a.status/100 == 2):
		// The transfer failed after the headers went out (or while they
		// were still buffered): the client cannot mistake it for a blob.
	case a.status != row.status:
		t.Errorf("status %d, want %d; body %.300s", a.status, row.status, a.body)
	case a.cut:
		t.Errorf("body cut: %d bytes, Content-Length %s", len(a.body), a.header.Get("Content-Length"))
	case row.code != "":
		if a.code != row.code {
			t.Errorf("code %q, want %q; body %.300s", a.code, row.code, a.body)
		}
		if ct := a.header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("error Content-Type %q", ct)
		}
		if !strings.Contains(strings.ToLower(a.message), strings.ToLower(row.says)) {
			t.Errorf("message %q does not say %q", a.message, row.says)
		}
	case row.says != "":
		if !strings.Contains(strings.ToLower(string(a.body)), strings.ToLower(row.says)) {
			t.Errorf("body %.300q does not say %q", a.body, row.says)
		}
	}
	if row.check != nil && a.status == row.status {
		row.check(t, a)
	}

	// (2) Who was asked, (3) what was written. A miss may still be filling
	// after the answer: wait until its temporary file is gone.
	after := e.settle(t)
	for name, n := range after.asked {
		if n != before.asked[name] && !slices.Contains(row.asks, name) {
			t.Errorf("%d requests reached %s", n-before.asked[name], name)
		}
	}
	if n := after.hostile - before.hostile; n != 0 && row.upstream == nil {
		t.Errorf("%d requests reached a hostile upstream", n)
	}
	if n := after.sink - before.sink; n != 0 {
		t.Errorf("%d requests reached the sink (an internal service): %+v", n, e.sink.requests()[before.sink:])
	}
	if d := e.dials.refused()[before.dials:]; len(d) != 0 {
		t.Errorf("wharf tried to dial %v", d)
	}
	e.checkWrites(t, before, after, row.seed)

	// (4) Health.
	if b, err := hostileRoundTrip(e.api, "GET", "/v2/", nil); err != nil || b.status != http.StatusOK || string(b.body) != "{}" {
		t.Errorf("GET /v2/ after the row: %v %+v", err, b)
	}
	if rec := e.h.admin("GET", "/readyz", nil); rec.Code != http.StatusOK {
		t.Errorf("/readyz after the row: %d %s", rec.Code, rec.Body)
	}
	return *a
}

// hostileSnapshot is what run compares before and after a row.
type hostileSnapshot struct {
	files   map[string]bool // under <data_dir>/blobs, tmp excluded
	cache   adminapi.Cache
	asked   map[string]int // requests logged per test registry
	hostile int            // requests logged by the hostile upstreams
	sink    int
	dials   int // refused dials
}

func (e *hostileEnv) snapshot(t *testing.T) hostileSnapshot {
	t.Helper()
	s := hostileSnapshot{files: map[string]bool{}, asked: map[string]int{}}
	root := filepath.Join(e.h.dataDir, "blobs")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case d.IsDir() && p == filepath.Join(root, "tmp"):
			return filepath.SkipDir
		case !d.IsDir():
			rel, err := filepath.Rel(root, p)
			s.files[rel] = true
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var stats adminapi.Stats
	adminJSON(t, e.h, "GET", "/api/v1/stats", nil, http.StatusOK, &stats)
	s.cache = stats.Cache
	s.cache.LastGC = nil
	for name, reg := range map[string]*registrytest.Registry{
		"docker.io": e.h.hub, "ghcr.io": e.h.ghcr, "registry.k8s.io": e.h.k8s, "myreg.io:5000": e.h.myreg,
	} {
		s.asked[name] = len(reg.Requests())
	}
	s.hostile = len(e.hostile.requests())
	s.sink = len(e.sink.requests())
	s.dials = len(e.dials.refused())
	return s
}

// settle waits, for at most 5 s, until no blob write is in progress and
// the index agrees with the files (a fill renames its file before it
// records it), and returns the snapshot then.
func (e *hostileEnv) settle(t *testing.T) hostileSnapshot {
	t.Helper()
	tmp := filepath.Join(e.h.dataDir, "blobs", "tmp")
	var s hostileSnapshot
	for range 200 {
		entries, err := os.ReadDir(tmp)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		s = e.snapshot(t)
		if len(entries) == 0 && len(s.files) == s.cache.Manifests+s.cache.Blobs {
			return s
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Errorf("cache not settled 5 s after the answer: %d files, %+v", len(s.files), s.cache)
	return s
}

// checkWrites compares the cache before and after a row: only the row's
// own miss (seed) may have been committed, and only whole.
func (e *hostileEnv) checkWrites(t *testing.T, before, after hostileSnapshot, seed []byte) {
	t.Helper()
	var added []string
	for f := range after.files {
		if !before.files[f] {
			added = append(added, f)
		}
	}
	for f := range before.files {
		if !after.files[f] {
			t.Errorf("cache file removed: %s", f)
		}
	}
	want := before.cache
	if seed != nil && len(added) == 1 {
		d := sha(seed)
		wantFile := filepath.Join("blobs", string(d.Algorithm()), d.Encoded()[:2], d.Encoded())
		got, err := os.ReadFile(filepath.Join(e.h.dataDir, "blobs", added[0]))
		switch {
		case added[0] != wantFile:
			t.Errorf("cache file added: %s, want only %s", added[0], wantFile)
		case err != nil || string(got) != string(seed):
			t.Errorf("committed %s is not the whole blob: %v, %d bytes of %d", d, err, len(got), len(seed))
		}
		want.Blobs++
		want.Bytes += int64(len(seed))
		added = nil
	}
	if len(added) != 0 {
		t.Errorf("cache files added: %v", added)
	}
	if after.cache != want {
		t.Errorf("cache statistics %+v, want %+v", after.cache, want)
	}
}

// hostileRoundTrip sends one request over a fresh connection with the
// request-target byte for byte and reads the answer, the body up to 64 MiB.
// A connection closed before a response, or a body that ends early, is an
// answer with cut set, not an error.
func hostileRoundTrip(addr, method, target string, hdr []string) (*hostileAnswer, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	// A bound so that no row can hang the test; not an expectation.
	if err := conn.SetDeadline(time.Now().Add(time.Minute)); err != nil {
		return nil, err
	}
	host := addr
	for i := 0; i+1 < len(hdr); i += 2 {
		if strings.EqualFold(hdr[i], "Host") {
			host = hdr[i+1]
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, target, host)
	for i := 0; i+1 < len(hdr); i += 2 {
		if !strings.EqualFold(hdr[i], "Host") {
			fmt.Fprintf(&b, "%s: %s\r\n", hdr[i], hdr[i+1])
		}
	}
	b.WriteString("Connection: close\r\n\r\n")
	// A server refusing an oversized request may close before reading all
	// of it; its answer is what counts, so a write error alone is not one.
	_, werr := io.WriteString(conn, b.String())
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return &hostileAnswer{cut: true}, nil
		}
		return nil, errors.Join(werr, err)
	}
	defer resp.Body.Close()
	a := &hostileAnswer{status: resp.StatusCode, header: resp.Header}
	a.body, err = io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	a.cut = err != nil
	if resp.StatusCode >= 400 && resp.Header.Get("Content-Type") == "application/json" {
		var doc struct {
			Errors []struct{ Code, Message string } `json:"errors"`
		}
		if json.Unmarshal(a.body, &doc) == nil && len(doc.Errors) > 0 {
			a.code, a.message = doc.Errors[0].Code, doc.Errors[0].Message
		}
	}
	return a, nil
}

// hostileLog is a loopback HTTP server that records every request and
// answers with serve (404 when nil).
type hostileLog struct {
	addr string

	mu   sync.Mutex
	reqs []hostileRequest
}

type hostileRequest struct {
	Host, Method, Path, RawQuery string
}

func newHostileLog(t *testing.T, serve http.HandlerFunc) *hostileLog {
	l := &hostileLog{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		l.reqs = append(l.reqs, hostileRequest{r.Host, r.Method, r.URL.Path, r.URL.RawQuery})
		l.mu.Unlock()
		if serve == nil {
			http.NotFound(w, r)
			return
		}
		serve(w, r)
	}))
	t.Cleanup(srv.Close)
	l.addr = srv.Listener.Addr().String()
	return l
}

func (l *hostileLog) requests() []hostileRequest {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.reqs)
}

// hostileDialer is the upstream transport's dialler: *.hostile.example
// reaches the scripted upstream, 127.0.0.1 and localhost (the test
// registries, the sink) are dialled on loopback, and every other address is
// refused and recorded.
type hostileDialer struct {
	hostile string // the scripted upstream's address

	mu      sync.Mutex
	refusal []string
}

var errHostileNotDialled = errors.New("test transport: address outside the test, not dialled")

func (d *hostileDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var dialer net.Dialer
	switch {
	case strings.HasSuffix(host, ".hostile.example"):
		return dialer.DialContext(ctx, network, d.hostile)
	case host == "127.0.0.1" || host == "localhost":
		return dialer.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
	}
	d.mu.Lock()
	d.refusal = append(d.refusal, addr)
	d.mu.Unlock()
	return nil, fmt.Errorf("%w: %s", errHostileNotDialled, addr)
}

func (d *hostileDialer) refused() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.refusal)
}
