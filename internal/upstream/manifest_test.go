package upstream_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"

	"github.com/wharf-mirror/wharf/internal/upstream"
)

func TestManifestAcceptList(t *testing.T) {
	want := []string{
		"application/vnd.oci.image.index.v1+json",
		"application/vnd.oci.image.manifest.v1+json",
		"application/vnd.docker.distribution.manifest.list.v2+json",
		"application/vnd.docker.distribution.manifest.v2+json",
		"application/vnd.docker.distribution.manifest.v1+prettyjws",
		"application/vnd.docker.distribution.manifest.v1+json",
		"application/vnd.oci.artifact.manifest.v1+json",
		"*/*",
	}
	if diff := cmp.Diff(want, upstream.ManifestAccept); diff != "" {
		t.Fatalf("ManifestAccept (-want +got):\n%s", diff)
	}
}

// TestRequestHeaders checks what reaches the upstream on the default
// transport and on a given transport that would ask for gzip.
func TestRequestHeaders(t *testing.T) {
	for _, custom := range []bool{false, true} {
		t.Run(fmt.Sprintf("custom transport %v", custom), func(t *testing.T) {
			reg := newFakeRegistry()
			reg.putManifest("library/nginx", "latest", fakeManifest{contentType: ociManifestType, body: []byte(testManifest)})
			d := reg.putBlob([]byte("blob"))
			srv := serve(t, reg)
			cfg := upstream.Config{URL: srv.URL, UserAgent: "wharf/1.2.3"}
			if custom {
				tr := &http.Transport{} // compression enabled: must be cloned with it off
				t.Cleanup(tr.CloseIdleConnections)
				cfg.Transport = tr
			}
			c := newClient(t, cfg)
			ctx := t.Context()
			if _, err := c.HeadManifest(ctx, "library/nginx", "latest"); err != nil {
				t.Fatal(err)
			}
			if _, _, err := c.GetManifest(ctx, "library/nginx", "latest"); err != nil {
				t.Fatal(err)
			}
			rc, _, err := c.GetBlob(ctx, "library/nginx", d)
			if err != nil {
				t.Fatal(err)
			}
			rc.Close()
			if _, err := c.Do(ctx, http.MethodGet, "library/nginx", "tags/list", "", nil); err != nil {
				t.Fatal(err)
			}

			reqs := reg.requests()
			if len(reqs) != 4 {
				t.Fatalf("%d requests, want 4", len(reqs))
			}
			for i, r := range reqs {
				if v, ok := r.Header["Accept-Encoding"]; ok {
					t.Errorf("%s %s carried Accept-Encoding %q", r.Method, r.Path, v)
				}
				if ua := r.Header.Get("User-Agent"); ua != "wharf/1.2.3" {
					t.Errorf("%s %s User-Agent %q", r.Method, r.Path, ua)
				}
				if i < 2 {
					want := []string{strings.Join(upstream.ManifestAccept, ", ")}
					if diff := cmp.Diff(want, r.Header.Values("Accept")); diff != "" {
						t.Errorf("%s manifest Accept (-want +got):\n%s", r.Method, diff)
					}
				}
			}
			if reqs[0].Method != http.MethodHead || reqs[1].Method != http.MethodGet {
				t.Errorf("methods %s, %s", reqs[0].Method, reqs[1].Method)
			}
		})
	}
}

func TestHeadManifest(t *testing.T) {
	body := []byte(testManifest)
	d := digest.FromBytes(body)
	other := digest.FromString("other")
	tests := []struct {
		name    string
		ref     string
		m       fakeManifest
		hook    func(w http.ResponseWriter, r *http.Request, n int) bool
		want    upstream.Descriptor
		wantErr error
	}{
		{
			name: "tag with digest",
			ref:  "latest",
			m:    fakeManifest{contentType: ociManifestType + "; charset=utf-8", body: body},
			want: upstream.Descriptor{MediaType: ociManifestType, Digest: d, Size: int64(len(body))},
		},
		{
			name: "tag without digest header",
			ref:  "latest",
			m:    fakeManifest{contentType: ociManifestType, body: body, digestHeader: "-"},
			want: upstream.Descriptor{MediaType: ociManifestType, Size: int64(len(body))},
		},
		{
			name: "tag with malformed digest header",
			ref:  "latest",
			m:    fakeManifest{contentType: ociManifestType, body: body, digestHeader: "sha256:xyz"},
			want: upstream.Descriptor{MediaType: ociManifestType, Size: int64(len(body))},
		},
		{
			name: "digest without digest header",
			ref:  d.String(),
			m:    fakeManifest{contentType: ociManifestType, body: body, digestHeader: "-"},
			want: upstream.Descriptor{MediaType: ociManifestType, Digest: d, Size: int64(len(body))},
		},
		{
			name:    "digest with another digest header",
			ref:     d.String(),
			m:       fakeManifest{contentType: ociManifestType, body: body, digestHeader: other.String()},
			wantErr: upstream.ErrDigestMismatch,
		},
		{
			name: "no content length",
			ref:  "latest",
			hook: func(w http.ResponseWriter, r *http.Request, _ int) bool {
				w.Header().Set("Content-Type", ociManifestType)
				w.Header().Set("Docker-Content-Digest", d.String())
				w.Header().Set("Transfer-Encoding", "chunked")
				return true
			},
			want: upstream.Descriptor{MediaType: ociManifestType, Digest: d, Size: -1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := newFakeRegistry()
			reg.putManifest("library/nginx", tt.ref, tt.m)
			reg.hook = tt.hook
			c := newClient(t, upstream.Config{URL: serve(t, reg).URL})
			got, err := c.HeadManifest(t.Context(), "library/nginx", tt.ref)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("descriptor (-want +got):\n%s", diff)
			}
		})
	}
}

// signedSchema1 builds a signed schema1 manifest the way libtrust lays it
// out: the signatures are spliced in before the closing brace, and the
// protected header records where.
func signedSchema1(t *testing.T) (body []byte, payloadDigest digest.Digest) {
	t.Helper()
	payload := "{\n   \"schemaVersion\": 1,\n   \"name\": \"library/old\",\n   \"tag\": \"v1\",\n   \"architecture\": \"amd64\",\n   \"fsLayers\": [],\n   \"history\": []\n}"
	formatLength := strings.LastIndex(payload, "\n}")
	tail := payload[formatLength:]
	protected := fmt.Sprintf(`{"formatLength":%d,"formatTail":%q,"time":"2016-01-01T00:00:00Z"}`,
		formatLength, base64.RawURLEncoding.EncodeToString([]byte(tail)))
	sig := fmt.Sprintf(",\n   \"signatures\": [\n      {\n         \"header\": {\"alg\": \"ES256\"},\n         \"signature\": \"c2ln\",\n         \"protected\": %q\n      }\n   ]",
		base64.RawURLEncoding.EncodeToString([]byte(protected)))
	body = []byte(payload[:formatLength] + sig + tail)
	return body, digest.FromString(payload)
}

func TestGetManifest(t *testing.T) {
	body := []byte(testManifest)
	d := digest.FromBytes(body)
	schema1, schema1Digest := signedSchema1(t)
	index := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`)
	bareIndex := []byte(`{"schemaVersion":2,"manifests":[]}`)
	exact := append([]byte(`{"schemaVersion":2,"annotations":{"x":"`), bytes.Repeat([]byte("a"), upstream.MaxManifestSize)...)
	exact = append(exact[:upstream.MaxManifestSize-3], `"}}`...)
	tooLarge := bytes.Repeat([]byte(" "), upstream.MaxManifestSize+1)
	sha512Header := digest.SHA512.FromBytes(body).String()

	type want struct {
		desc upstream.Descriptor
		err  error
	}
	tests := []struct {
		name string
		ref  string
		m    fakeManifest
		want want
	}{
		{"tag", "latest", fakeManifest{contentType: ociManifestType, body: body},
			want{desc: upstream.Descriptor{MediaType: ociManifestType, Digest: d, Size: int64(len(body))}}},
		{"tag without digest header", "latest", fakeManifest{contentType: ociManifestType, body: body, digestHeader: "-"},
			want{desc: upstream.Descriptor{MediaType: ociManifestType, Digest: d, Size: int64(len(body))}}},
		{"tag with sha512 digest header", "latest", fakeManifest{contentType: ociManifestType, body: body, digestHeader: sha512Header},
			want{desc: upstream.Descriptor{MediaType: ociManifestType, Digest: d, Size: int64(len(body))}}},
		{"tag with wrong digest header", "latest", fakeManifest{contentType: ociManifestType, body: body, digestHeader: digest.FromString("x").String()},
			want{err: upstream.ErrDigestMismatch}},
		{"digest", d.String(), fakeManifest{contentType: ociManifestType, body: body, digestHeader: "-"},
			want{desc: upstream.Descriptor{MediaType: ociManifestType, Digest: d, Size: int64(len(body))}}},
		{"digest with other body", digest.FromString("x").String(), fakeManifest{contentType: ociManifestType, body: body, digestHeader: "-"},
			want{err: upstream.ErrDigestMismatch}},
		{"content type parameters", "latest", fakeManifest{contentType: "Application/VND.oci.image.manifest.v1+json; charset=utf-8", body: body},
			want{desc: upstream.Descriptor{MediaType: ociManifestType, Digest: d, Size: int64(len(body))}}},
		{"generic content type, mediaType in body", "latest", fakeManifest{contentType: "application/json", body: index},
			want{desc: upstream.Descriptor{MediaType: "application/vnd.oci.image.index.v1+json", Digest: digest.FromBytes(index), Size: int64(len(index))}}},
		{"no content type, index by shape", "latest", fakeManifest{body: bareIndex},
			want{desc: upstream.Descriptor{MediaType: "application/vnd.oci.image.index.v1+json", Digest: digest.FromBytes(bareIndex), Size: int64(len(bareIndex))}}},
		{"artifact manifest type passes", "latest", fakeManifest{contentType: upstream.MediaTypeOCIArtifact, body: body},
			want{desc: upstream.Descriptor{MediaType: upstream.MediaTypeOCIArtifact, Digest: d, Size: int64(len(body))}}},
		{"schema1 signed by digest", schema1Digest.String(), fakeManifest{contentType: upstream.MediaTypeSchema1Signed, body: schema1, digestHeader: "-"},
			want{desc: upstream.Descriptor{MediaType: upstream.MediaTypeSchema1Signed, Digest: schema1Digest, Size: int64(len(schema1))}}},
		{"schema1 signed by tag with header", "v1", fakeManifest{contentType: upstream.MediaTypeSchema1Signed, body: schema1, digestHeader: schema1Digest.String()},
			want{desc: upstream.Descriptor{MediaType: upstream.MediaTypeSchema1Signed, Digest: schema1Digest, Size: int64(len(schema1))}}},
		{"schema1 signed by tag without header", "v1", fakeManifest{contentType: upstream.MediaTypeSchema1Signed, body: schema1, digestHeader: "-"},
			want{desc: upstream.Descriptor{MediaType: upstream.MediaTypeSchema1Signed, Digest: schema1Digest, Size: int64(len(schema1))}}},
		{"schema1 signed recognised by shape", "v1", fakeManifest{contentType: "application/json", body: schema1, digestHeader: "-"},
			want{desc: upstream.Descriptor{MediaType: upstream.MediaTypeSchema1Signed, Digest: schema1Digest, Size: int64(len(schema1))}}},
		{"exactly the limit", "big", fakeManifest{contentType: ociManifestType, body: exact},
			want{desc: upstream.Descriptor{MediaType: ociManifestType, Digest: digest.FromBytes(exact), Size: upstream.MaxManifestSize}}},
		{"too large", "big", fakeManifest{contentType: ociManifestType, body: tooLarge, digestHeader: "-"},
			want{err: upstream.ErrManifestTooLarge}},
		{"too large without Content-Length", "big", fakeManifest{}, want{err: upstream.ErrManifestTooLarge}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := newFakeRegistry()
			reg.putManifest("library/app", tt.ref, tt.m)
			if tt.name == "too large without Content-Length" {
				reg.hook = func(w http.ResponseWriter, r *http.Request, _ int) bool {
					w.Header().Set("Content-Type", ociManifestType)
					chunk := bytes.Repeat([]byte(" "), 64<<10)
					for range upstream.MaxManifestSize/len(chunk) + 2 {
						if _, err := w.Write(chunk); err != nil {
							break
						}
						w.(http.Flusher).Flush()
					}
					return true
				}
			}
			c := newClient(t, upstream.Config{URL: serve(t, reg).URL})
			desc, got, err := c.GetManifest(t.Context(), "library/app", tt.ref)
			if tt.want.err != nil {
				if !errors.Is(err, tt.want.err) {
					t.Fatalf("err = %v, want %v", err, tt.want.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want.desc, desc); diff != "" {
				t.Errorf("descriptor (-want +got):\n%s", diff)
			}
			if !bytes.Equal(got, tt.m.body) {
				t.Errorf("body differs from what the upstream sent")
			}
		})
	}
}

func TestManifestNotFound(t *testing.T) {
	reg := newFakeRegistry()
	c := newClient(t, upstream.Config{Name: "docker.io", URL: serve(t, reg).URL})
	_, _, err := c.GetManifest(t.Context(), "library/missing", "latest")
	if !upstream.IsNotFound(err) || upstream.IsTransient(err) {
		t.Fatalf("err = %v, want a non-transient not-found", err)
	}
	var re *upstream.ResponseError
	if !errors.As(err, &re) {
		t.Fatalf("err = %T", err)
	}
	if diff := cmp.Diff([]upstream.ErrorInfo{{Code: "MANIFEST_UNKNOWN", Message: "manifest unknown"}}, re.Errors); diff != "" {
		t.Errorf("Errors (-want +got):\n%s", diff)
	}
	msg := err.Error()
	for _, part := range []string{"docker.io", "GET", "/v2/library/missing/manifests/latest", "404", "MANIFEST_UNKNOWN", "manifest unknown"} {
		if !strings.Contains(msg, part) {
			t.Errorf("error %q lacks %q", msg, part)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("error spans lines: %q", msg)
	}
	if _, err := c.HeadManifest(t.Context(), "library/missing", "latest"); !upstream.IsNotFound(err) {
		t.Errorf("HEAD: %v, want not found", err)
	}
}

func TestInvalidNames(t *testing.T) {
	reg := newFakeRegistry()
	c := newClient(t, upstream.Config{URL: serve(t, reg).URL})
	ctx := t.Context()
	for _, tc := range []struct{ repo, ref string }{
		{"", "latest"},
		{"Library/nginx", "latest"},
		{"library/../secret", "latest"},
		{"library/nginx", ""},
		{"library/nginx", "-latest"},
		{"library/nginx", "sha256:baddigeststring"},
		{"library/nginx", "latest?x=1"},
		{"library/nginx", strings.Repeat("a", 129)},
	} {
		if _, _, err := c.GetManifest(ctx, tc.repo, tc.ref); !errors.Is(err, upstream.ErrInvalidName) {
			t.Errorf("GetManifest(%q, %q) = %v, want ErrInvalidName", tc.repo, tc.ref, err)
		}
	}
	if _, err := c.HeadBlob(ctx, "library/nginx", "sha256:short"); !errors.Is(err, upstream.ErrInvalidName) {
		t.Errorf("HeadBlob with bad digest: %v", err)
	}
	for _, suffix := range []string{"", "../../other/tags/list", "tags/../list", "tags//list", "tags/list?n=1", "tags/%2e%2e"} {
		if _, err := c.Do(ctx, http.MethodGet, "library/nginx", suffix, "", nil); !errors.Is(err, upstream.ErrInvalidName) {
			t.Errorf("Do(suffix %q) = %v, want ErrInvalidName", suffix, err)
		}
	}
	if _, err := c.Do(ctx, http.MethodGet, "library/nginx", "tags/list", "n=1#frag", nil); !errors.Is(err, upstream.ErrInvalidName) {
		t.Errorf("Do with fragment in query: %v", err)
	}
	if n := reg.count(); n != 0 {
		t.Errorf("%d requests were sent for invalid input", n)
	}
}
