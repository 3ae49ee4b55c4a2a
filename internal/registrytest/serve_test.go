package registrytest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
)

// TestSignedStorage: with RedirectBlobs the registry answers a blob GET with
// a 307 to a signed URL on another host name, and the storage host serves
// only that URL, only without credentials.
func TestSignedStorage(t *testing.T) {
	reg := New(t, Options{Redirect: RedirectBlobs})
	data := []byte("layer bytes")
	d := reg.PushBlob(t, "library/busybox", data)
	c := plainClient(t)
	blobPath := "/v2/library/busybox/blobs/" + d.String()

	resp, _ := do(t, c, http.MethodGet, reg.URL()+blobPath)
	if resp.StatusCode != http.StatusTemporaryRedirect {
		t.Fatalf("blob GET: %s, want 307", resp.Status)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	if loc.Scheme+"://"+loc.Host != reg.StorageURL() || loc.Path != blobPath || loc.Query().Get(signatureParam) == "" {
		t.Fatalf("Location %s", loc)
	}
	if resp, _ := do(t, c, http.MethodHead, reg.URL()+blobPath); resp.StatusCode != http.StatusOK || resp.ContentLength != int64(len(data)) {
		t.Errorf("blob HEAD at the registry: %s, length %d", resp.Status, resp.ContentLength)
	}
	if resp, _ := do(t, c, http.MethodGet, reg.URL()+"/v2/library/busybox/manifests/latest"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("manifest GET: %s, want 404 from the registry itself", resp.Status)
	}

	tests := []struct {
		name string
		url  string
		hdr  []string
		want int
	}{
		{"signed", loc.String(), nil, http.StatusOK},
		{"unsigned", reg.StorageURL() + blobPath, nil, http.StatusForbidden},
		{"signature of another path", reg.StorageURL() + "/v2/library/other/blobs/" + d.String() + "?" + loc.RawQuery, nil, http.StatusForbidden},
		{"signed with credentials", loc.String(), []string{"Authorization", "Bearer x"}, http.StatusBadRequest},
		{"storage is read-only", "", nil, http.StatusMethodNotAllowed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			method := http.MethodGet
			if tc.url == "" {
				method, tc.url = http.MethodDelete, loc.String()
			}
			resp, body := do(t, c, method, tc.url, tc.hdr...)
			if resp.StatusCode != tc.want {
				t.Fatalf("status %s, want %d", resp.Status, tc.want)
			}
			if tc.want == http.StatusOK && !bytes.Equal(body, data) {
				t.Errorf("body %q", body)
			}
		})
	}
}

func TestRedirectAll(t *testing.T) {
	reg := New(t, Options{Redirect: RedirectAll})
	img := RandomImage(t, 3, 100)
	d := reg.PushImage(t, "pause", "3.9", img)
	c := plainClient(t)

	if resp, _ := do(t, c, http.MethodGet, reg.URL()+"/v2/"); resp.StatusCode != http.StatusOK {
		t.Errorf("/v2/: %s", resp.Status)
	}
	for _, tc := range []struct{ method, path string }{
		{http.MethodGet, "/v2/pause/manifests/3.9"},
		{http.MethodHead, "/v2/pause/manifests/3.9"},
		{http.MethodHead, "/v2/pause/blobs/" + img.(*syntheticImage).layers[0].digest.String()},
		{http.MethodGet, "/v2/pause/tags/list?n=1&last=3.8"},
		{http.MethodGet, "/v2/pause/referrers/" + d.String()},
	} {
		resp, _ := do(t, c, tc.method, reg.URL()+tc.path)
		if resp.StatusCode != http.StatusTemporaryRedirect {
			t.Errorf("%s %s: %s, want 307", tc.method, tc.path, resp.Status)
			continue
		}
		loc := resp.Header.Get("Location")
		if !strings.HasPrefix(loc, reg.StorageURL()+tc.path) {
			t.Errorf("%s %s: Location %s", tc.method, tc.path, loc)
		}
		resp, _ = do(t, c, tc.method, loc)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s %s at storage: %s", tc.method, tc.path, resp.Status)
		}
	}
	resp, body := do(t, c, http.MethodGet, reg.StorageURL()+"/v2/pause/tags/list?n=1&last=3.8&"+signatureParam+"="+
		fmt.Sprintf("%x", reg.signature("/v2/pause/tags/list")))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"3.9"`) {
		t.Errorf("tags at storage: %s %s", resp.Status, body)
	}
}

func TestRateLimit(t *testing.T) {
	reg := New(t, Options{RateLimit: true})
	reg.PushImage(t, "library/alpine", "latest", RandomImage(t, 1))
	c := plainClient(t)
	u := reg.URL() + "/v2/library/alpine/manifests/latest"
	check := func(method string, wantStatus int, wantRemaining string) {
		t.Helper()
		resp, _ := do(t, c, method, u)
		if resp.StatusCode != wantStatus {
			t.Fatalf("%s: %s, want %d", method, resp.Status, wantStatus)
		}
		h := resp.Header
		if h.Get("ratelimit-limit") != "100;w=21600" || h.Get("ratelimit-remaining") != wantRemaining || h.Get("docker-ratelimit-source") != "127.0.0.1" {
			t.Fatalf("%s: headers %v, want remaining %s", method, h, wantRemaining)
		}
	}
	check(http.MethodGet, http.StatusOK, "99;w=21600")
	check(http.MethodHead, http.StatusOK, "99;w=21600")
	check(http.MethodGet, http.StatusOK, "98;w=21600")
	for range 98 {
		if resp, _ := do(t, c, http.MethodGet, u); resp.StatusCode != http.StatusOK {
			t.Fatalf("GET within the limit: %s", resp.Status)
		}
	}
	check(http.MethodHead, http.StatusOK, "0;w=21600")
	check(http.MethodGet, http.StatusTooManyRequests, "0;w=21600")

	if resp, _ := do(t, c, http.MethodGet, reg.URL()+"/v2/library/alpine/tags/list"); resp.Header.Get("ratelimit-limit") != "" {
		t.Error("rate-limit headers on a tag list")
	}
}

func TestRequestLog(t *testing.T) {
	reg := New(t, Options{Auth: true})
	img := RandomImage(t, 9, 64)
	reg.PushImage(t, "a", "v1", img)
	reg.PushIndex(t, "a", "multi", RandomIndex(t, 1, "linux/amd64"))
	reg.PushBlob(t, "a", []byte("blob"))
	reg.PushManifest(t, "a", "", string(types.OCIManifestSchema1), []byte(`{}`))
	if got := reg.Requests(); len(got) != 0 {
		t.Fatalf("seeding was logged: %v", got)
	}

	c := plainClient(t)
	tok := fetchToken(t, c, reg, RegistryService, "repository:a:pull", "", "")
	layer := toDigest(img.(*syntheticImage).layers[0].digest)
	do(t, c, http.MethodGet, reg.URL()+"/v2/a/manifests/v1") // 401: still logged
	do(t, c, http.MethodGet, reg.URL()+"/v2/a/manifests/v1", "Authorization", "Bearer "+tok, "X-Probe", "1")
	do(t, c, http.MethodHead, reg.URL()+"/v2/a/manifests/v1", "Authorization", "Bearer "+tok)
	do(t, c, http.MethodGet, reg.URL()+"/v2/a/blobs/"+layer.String(), "Authorization", "Bearer "+tok)
	do(t, c, http.MethodHead, reg.URL()+"/v2/a/blobs/"+layer.String(), "Authorization", "Bearer "+tok)

	counts := map[string]int{
		"token":          reg.Count(TokenRequests()),
		"manifest GET":   reg.Count(ManifestGETs()),
		"manifest HEAD":  reg.Count(ManifestHEADs()),
		"layer GET":      reg.Count(BlobGETs(layer)),
		"other blob GET": reg.Count(BlobGETs(digest.FromString("other"))),
		"registry":       reg.Count(On(ServerRegistry, func(Request) bool { return true })),
	}
	want := map[string]int{"token": 1, "manifest GET": 2, "manifest HEAD": 1, "layer GET": 1, "other blob GET": 0, "registry": 5}
	for k, w := range want {
		if counts[k] != w {
			t.Errorf("%s: %d, want %d", k, counts[k], w)
		}
	}
	var probe *Request
	for _, r := range reg.Requests() {
		if r.Header.Get("X-Probe") != "" {
			probe = &r
		}
	}
	if probe == nil || probe.Server != ServerRegistry || probe.Method != http.MethodGet || probe.Path != "/v2/a/manifests/v1" ||
		probe.Header.Get("Authorization") != "Bearer "+tok {
		t.Errorf("logged request %+v", probe)
	}
	reqs := reg.Requests()
	reqs[0].Header.Set("Mutated", "yes")
	if reg.Requests()[0].Header.Get("Mutated") != "" {
		t.Error("Requests exposes the log's headers")
	}
	if reqs[0].Server != ServerToken || !strings.Contains(reqs[0].RawQuery, "scope=repository%3Aa%3Apull") {
		t.Errorf("first request %+v", reqs[0])
	}

	reg.ResetRequests()
	if n := len(reg.Requests()); n != 0 {
		t.Errorf("%d requests after ResetRequests", n)
	}
}

// TestBlobServing covers the blob responses client-compat §6.2 asks of a
// registry, ranges included, and that blobs belong to repositories.
func TestBlobServing(t *testing.T) {
	reg := New(t, Options{})
	img := RandomImage(t, 11, 200<<10)
	reg.PushImage(t, "a", "", img)
	l := img.(*syntheticImage).layers[0]
	full := readAll(t, l.blob.Open())
	small := reg.PushBlob(t, "b", []byte("0123456789"))
	c := plainClient(t)
	blobURL := reg.URL() + "/v2/a/blobs/" + l.digest.String()

	tests := []struct {
		name         string
		method, url  string
		rangeHdr     string
		wantStatus   int
		wantBody     []byte
		wantCRange   string
		wantLength   int64
		wantEtagDgst bool
	}{
		{"full", http.MethodGet, blobURL, "", http.StatusOK, full, "", int64(len(full)), true},
		{"head", http.MethodHead, blobURL, "", http.StatusOK, nil, "", int64(len(full)), true},
		{"closed range across chunks", http.MethodGet, blobURL, "bytes=65530-65545", http.StatusPartialContent, full[65530:65546], fmt.Sprintf("bytes 65530-65545/%d", len(full)), 16, true},
		{"open range", http.MethodGet, blobURL, "bytes=204700-", http.StatusPartialContent, full[204700:], fmt.Sprintf("bytes 204700-%d/%d", len(full)-1, len(full)), int64(len(full) - 204700), true},
		{"suffix", http.MethodGet, blobURL, "bytes=-5", http.StatusPartialContent, full[len(full)-5:], fmt.Sprintf("bytes %d-%d/%d", len(full)-5, len(full)-1, len(full)), 5, true},
		{"unsatisfiable", http.MethodGet, blobURL, "bytes=999999-", http.StatusRequestedRangeNotSatisfiable, nil, fmt.Sprintf("bytes */%d", len(full)), -1, false},
		{"other repository", http.MethodGet, reg.URL() + "/v2/b/blobs/" + l.digest.String(), "", http.StatusNotFound, nil, "", -1, false},
		{"pushed blob", http.MethodGet, reg.URL() + "/v2/b/blobs/" + small.String(), "bytes=2-4", http.StatusPartialContent, []byte("234"), "bytes 2-4/10", 3, false},
		{"bad digest", http.MethodGet, reg.URL() + "/v2/b/blobs/sha256:zz", "", http.StatusBadRequest, nil, "", -1, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.rangeHdr != "" {
				hdr = []string{"Range", tc.rangeHdr}
			}
			resp, body := do(t, c, tc.method, tc.url, hdr...)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %s, want %d", resp.Status, tc.wantStatus)
			}
			if tc.wantBody != nil && !bytes.Equal(body, tc.wantBody) {
				t.Errorf("body differs (%d bytes, want %d)", len(body), len(tc.wantBody))
			}
			if got := resp.Header.Get("Content-Range"); got != tc.wantCRange {
				t.Errorf("Content-Range %q, want %q", got, tc.wantCRange)
			}
			if tc.wantLength >= 0 && resp.ContentLength != tc.wantLength {
				t.Errorf("Content-Length %d, want %d", resp.ContentLength, tc.wantLength)
			}
			if tc.wantEtagDgst {
				h := resp.Header
				if h.Get("Docker-Content-Digest") != l.digest.String() || h.Get("Etag") != `"`+l.digest.String()+`"` ||
					h.Get("Accept-Ranges") != "bytes" || h.Get("Content-Encoding") != "" {
					t.Errorf("headers %v", h)
				}
			}
		})
	}
}

func TestManifestsAndTags(t *testing.T) {
	reg := New(t, Options{})
	c := plainClient(t)
	img1, img2 := RandomImage(t, 1, 10), RandomImage(t, 2, 10)
	d1 := reg.PushImage(t, "app", "v1", img1)
	d2 := reg.PushImage(t, "app", "v2", img2)

	headDigest := func(ref string) (int, string) {
		resp, _ := do(t, c, http.MethodHead, reg.URL()+"/v2/app/manifests/"+ref)
		return resp.StatusCode, resp.Header.Get("Docker-Content-Digest")
	}
	if code, d := headDigest("v1"); code != http.StatusOK || d != d1.String() {
		t.Errorf("v1: %d %s, want %s", code, d, d1)
	}
	reg.PushImage(t, "app", "v1", img2) // moving a tag
	if _, d := headDigest("v1"); d != d2.String() {
		t.Errorf("moved v1: %s, want %s", d, d2)
	}
	reg.DeleteTag(t, "app", "v2")
	if code, _ := headDigest("v2"); code != http.StatusNotFound {
		t.Errorf("deleted tag: %d", code)
	}
	if code, _ := headDigest(d1.String()); code != http.StatusOK {
		t.Errorf("by digest after tag moved away: %d", code)
	}
	resp, body := do(t, c, http.MethodGet, reg.URL()+"/v2/app/manifests/v1")
	if resp.Header.Get("Content-Type") != string(types.DockerManifestSchema2) || digest.FromBytes(body) != d2 {
		t.Errorf("GET v1: %s %s", resp.Header.Get("Content-Type"), digest.FromBytes(body))
	}
	resp, body = do(t, c, http.MethodGet, reg.URL()+"/v2/app/tags/list")
	var tags struct{ Tags []string }
	if err := json.Unmarshal(body, &tags); err != nil || strings.Join(tags.Tags, ",") != "v1" {
		t.Errorf("tags: %s %s", resp.Status, body)
	}
}

func TestReferrers(t *testing.T) {
	for _, noReferrers := range []bool{false, true} {
		t.Run(fmt.Sprint("NoReferrers=", noReferrers), func(t *testing.T) {
			reg := New(t, Options{NoReferrers: noReferrers})
			img := RandomImage(t, 1, 10)
			subject := reg.PushImage(t, "app", "v1", img)
			size, _ := img.Size()
			cfg := reg.PushBlob(t, "app", []byte("{}"))
			artifact, err := json.Marshal(v1.Manifest{
				SchemaVersion: 2,
				MediaType:     types.OCIManifestSchema1,
				Config:        v1.Descriptor{MediaType: "application/vnd.example.sbom", Size: 2, Digest: v1.Hash{Algorithm: "sha256", Hex: cfg.Encoded()}},
				Layers:        []v1.Descriptor{},
				Subject:       &v1.Descriptor{MediaType: types.DockerManifestSchema2, Size: size, Digest: v1.Hash{Algorithm: "sha256", Hex: subject.Encoded()}},
			})
			if err != nil {
				t.Fatal(err)
			}
			ad := reg.PushManifest(t, "app", "", string(types.OCIManifestSchema1), artifact)
			resp, body := do(t, plainClient(t), http.MethodGet, reg.URL()+"/v2/app/referrers/"+subject.String())
			if noReferrers {
				if resp.StatusCode != http.StatusNotFound {
					t.Errorf("referrers without the API: %s", resp.Status)
				}
				return
			}
			var idx v1.IndexManifest
			if err := json.Unmarshal(body, &idx); err != nil || len(idx.Manifests) != 1 || idx.Manifests[0].Digest.String() != ad.String() ||
				idx.Manifests[0].ArtifactType != "application/vnd.example.sbom" {
				t.Errorf("referrers: %s %s", resp.Status, body)
			}
		})
	}
}

func TestDownUp(t *testing.T) {
	reg := New(t, Options{Auth: true, Redirect: RedirectBlobs})
	d := reg.PushBlob(t, "a", []byte("still here"))
	c := plainClient(t)
	urls := []string{reg.URL() + "/v2/", reg.StorageURL() + "/v2/", reg.TokenURL()}

	for _, u := range urls {
		do(t, c, http.MethodGet, u)
	}
	reg.Down()
	reg.Down() // idempotent
	for _, u := range urls {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("GET %s while down: %s", u, resp.Status)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("GET %s while down: %v, want connection refused", u, err)
		}
	}
	reg.Up()
	reg.Up() // idempotent
	tok := fetchToken(t, c, reg, RegistryService, "repository:a:pull", "", "")
	resp, _ := do(t, c, http.MethodGet, reg.URL()+"/v2/a/blobs/"+d.String(), "Authorization", "Bearer "+tok)
	if resp.StatusCode != http.StatusTemporaryRedirect {
		t.Fatalf("after Up: %s", resp.Status)
	}
	resp, body := do(t, c, http.MethodGet, resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusOK || string(body) != "still here" {
		t.Errorf("after Up at storage: %s %q", resp.Status, body)
	}
}

// TestDownInterruptsResponses: a response in flight when the registry goes
// down fails on the client's side.
func TestDownInterruptsResponses(t *testing.T) {
	reg := New(t, Options{})
	d := reg.PushBlob(t, "a", make([]byte, 1<<10))
	reg.AddFault(Fault{Match: IsBlobGET(d), BytesPerSec: 1})
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, reg.URL()+"/v2/a/blobs/"+d.String(), nil)
	resp, err := plainClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := resp.Body.Read(make([]byte, 1)); err != nil {
		t.Fatalf("first byte: %v", err)
	}
	reg.Down()
	if _, err := io.ReadAll(resp.Body); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("reading after Down: %v, want unexpected EOF", err)
	}
}

func readAll(t *testing.T, r io.Reader) []byte {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
