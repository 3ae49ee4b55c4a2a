package registrytest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"
)

// get fetches u and returns status, headers, body and the body read error,
// which is what a fault shows up as.
func get(t *testing.T, c *http.Client, u string) (*http.Response, []byte, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

func ociErrorCode(t *testing.T, body []byte) string {
	t.Helper()
	var e struct {
		Errors []struct{ Code string }
	}
	if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) != 1 {
		t.Fatalf("not an OCI error body: %s", body)
	}
	return e.Errors[0].Code
}

func TestStatusFaults(t *testing.T) {
	tests := []struct {
		name           string
		fault          Fault
		wantStatus     int
		wantCode       string
		wantRetryAfter string
	}{
		{"429 with Retry-After", Fault{Match: IsManifest("v1"), Status: http.StatusTooManyRequests, RetryAfter: "7", Times: 1},
			http.StatusTooManyRequests, "TOOMANYREQUESTS", "7"},
		{"503", Fault{Status: http.StatusServiceUnavailable, Times: 1}, http.StatusServiceUnavailable, "UNAVAILABLE", ""},
		{"500", Fault{Match: IsManifestGET(""), Status: http.StatusInternalServerError, Times: 1}, http.StatusInternalServerError, "UNKNOWN", ""},
		{"404 of a manifest", Fault{Match: IsManifest(""), Status: http.StatusNotFound, Times: 1}, http.StatusNotFound, "MANIFEST_UNKNOWN", ""},
		{"explicit code", Fault{Status: http.StatusForbidden, Code: "DENIED_BY_POLICY", Times: 1}, http.StatusForbidden, "DENIED_BY_POLICY", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := New(t, Options{})
			reg.PushImage(t, "a", "v1", RandomImage(t, 1, 10))
			reg.AddFault(tc.fault)
			c := plainClient(t)
			u := reg.URL() + "/v2/a/manifests/v1"
			resp, body, err := get(t, c, u)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %s, want %d", resp.Status, tc.wantStatus)
			}
			if got := ociErrorCode(t, body); got != tc.wantCode {
				t.Errorf("code %s, want %s", got, tc.wantCode)
			}
			if got := resp.Header.Get("Retry-After"); got != tc.wantRetryAfter {
				t.Errorf("Retry-After %q, want %q", got, tc.wantRetryAfter)
			}
			if resp, _, _ := get(t, c, u); resp.StatusCode != http.StatusOK {
				t.Errorf("after Times ran out: %s", resp.Status)
			}
		})
	}
}

func TestBodyFaults(t *testing.T) {
	data := readAll(t, randomBlob{seed: 1, size: 100 << 10}.Open())
	tests := []struct {
		name      string
		fault     func(d digest.Digest) Fault
		wantErr   error // from reading the body
		wantBytes int   // bytes read
		wantSame  bool  // body equals the blob
	}{
		{"reset mid-body", func(d digest.Digest) Fault { return Fault{Match: IsBlobGET(d), ResetAfter: 1000} }, io.ErrUnexpectedEOF, 1000, false},
		{"reset after headers", func(d digest.Digest) Fault { return Fault{Match: IsBlobGET(d)} }, io.ErrUnexpectedEOF, 0, false},
		{"corrupt", func(d digest.Digest) Fault { return Fault{Match: IsBlobGET(d), Corrupt: true, ResetAfter: -1} }, nil, len(data), false},
		{"corrupt, zero ResetAfter", func(d digest.Digest) Fault { return Fault{Match: IsBlobGET(d), Corrupt: true} }, nil, len(data), false},
		{"corrupt then reset", func(d digest.Digest) Fault { return Fault{Match: IsBlobGET(d), Corrupt: true, ResetAfter: 60000} }, io.ErrUnexpectedEOF, 60000, false},
		{"slow", func(d digest.Digest) Fault { return Fault{Match: IsBlobGET(d), BytesPerSec: 1 << 20} }, nil, len(data), true},
		{"slow then reset", func(d digest.Digest) Fault { return Fault{Match: IsBlobGET(d), BytesPerSec: 1 << 20, ResetAfter: 5000} }, io.ErrUnexpectedEOF, 5000, false},
		{"other blob", func(digest.Digest) Fault { return Fault{Match: IsBlobGET(digest.FromString("x")), ResetAfter: 0} }, nil, len(data), true},
		{"HEAD only", func(d digest.Digest) Fault {
			return Fault{Match: func(r *http.Request) bool { return r.Method == http.MethodHead }, ResetAfter: 0}
		}, nil, len(data), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := New(t, Options{})
			d := reg.PushBlob(t, "a", data)
			reg.AddFault(tc.fault(d))
			resp, body, err := get(t, plainClient(t), reg.URL()+"/v2/a/blobs/"+d.String())
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("read error %v, want %v", err, tc.wantErr)
			}
			if resp.StatusCode != http.StatusOK || resp.ContentLength != int64(len(data)) {
				t.Errorf("%s, Content-Length %d: the real headers should go out", resp.Status, resp.ContentLength)
			}
			if len(body) != tc.wantBytes {
				t.Errorf("read %d bytes, want %d", len(body), tc.wantBytes)
			}
			if same := bytes.Equal(body, data); same != tc.wantSame {
				t.Errorf("body equals blob: %v, want %v", same, tc.wantSame)
			}
			if !tc.wantSame && len(body) == len(data) {
				if digest.FromBytes(body) == d {
					t.Error("corrupt body has the blob's digest")
				}
				if !bytes.Equal(body[:len(data)/2], data[:len(data)/2]) {
					t.Error("corruption is not confined to the middle")
				}
			}
		})
	}
}

// TestSlowBodyProgress: a throttled body arrives piece by piece. At one byte
// per second the first read cannot hold the whole kilobyte; the client then
// leaves, and the handler must end (goleak and Cleanup check that).
func TestSlowBodyProgress(t *testing.T) {
	reg := New(t, Options{})
	d := reg.PushBlob(t, "a", make([]byte, 1<<10))
	reg.AddFault(Fault{Match: IsBlobGET(d), BytesPerSec: 1})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, reg.URL()+"/v2/a/blobs/"+d.String(), nil)
	resp, err := plainClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n, err := resp.Body.Read(make([]byte, 1<<10))
	if err != nil || n == 0 || n == 1<<10 {
		t.Fatalf("first read: %d bytes, %v; want part of the body", n, err)
	}
	if resp.ContentLength != 1<<10 {
		t.Errorf("Content-Length %d", resp.ContentLength)
	}
}

func TestFaultOrderAndTimes(t *testing.T) {
	reg := New(t, Options{})
	reg.PushImage(t, "a", "v1", RandomImage(t, 1, 10))
	c := plainClient(t)
	u := reg.URL() + "/v2/a/manifests/v1"
	reg.AddFault(Fault{Match: IsManifestGET("v1"), Status: http.StatusBadGateway, Times: 2})
	reg.AddFault(Fault{Status: http.StatusServiceUnavailable, Times: 1})

	var got []int
	for range 4 {
		resp, _, _ := get(t, c, u)
		got = append(got, resp.StatusCode)
	}
	want := []int{502, 502, 503, 200}
	if !slices.Equal(got, want) {
		t.Errorf("statuses %v, want %v", got, want)
	}

	reg.AddFault(Fault{Status: http.StatusInternalServerError})
	if resp, _, _ := get(t, c, reg.URL()+"/v2/"); resp.StatusCode != http.StatusOK {
		t.Errorf("/v2/ under a nil-Match fault: %s", resp.Status)
	}
	for range 3 {
		if resp, _, _ := get(t, c, u); resp.StatusCode != http.StatusInternalServerError {
			t.Errorf("Times 0 should apply forever: %s", resp.Status)
		}
	}
	reg.ClearFaults()
	if resp, _, _ := get(t, c, u); resp.StatusCode != http.StatusOK {
		t.Errorf("after ClearFaults: %s", resp.Status)
	}
}

// TestFaultsAcrossRedirects: status faults hit the registry's redirect;
// body faults hit the storage host, where the bytes are.
func TestFaultsAcrossRedirects(t *testing.T) {
	data := []byte("0123456789abcdefghij")
	tests := []struct {
		name           string
		fault          func(d digest.Digest) Fault
		wantStatus     int
		wantBody       func(b []byte) bool
		wantStorageGET int
	}{
		{"status at the registry", func(d digest.Digest) Fault {
			return Fault{Match: IsBlobGET(d), Status: http.StatusServiceUnavailable, Times: 1}
		}, http.StatusServiceUnavailable, nil, 0},
		{"status only at storage", func(d digest.Digest) Fault {
			return Fault{Match: OnServer(ServerStorage, IsBlobGET(d)), Status: http.StatusForbidden, Times: 1}
		}, http.StatusForbidden, nil, 1},
		{"corrupt at storage", func(d digest.Digest) Fault {
			return Fault{Match: IsBlobGET(d), Corrupt: true}
		}, http.StatusOK, func(b []byte) bool { return len(b) == len(data) && !bytes.Equal(b, data) }, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := New(t, Options{Redirect: RedirectBlobs})
			d := reg.PushBlob(t, "a", data)
			reg.AddFault(tc.fault(d))
			c := &http.Client{Transport: newTransport(t)} // follows the redirect
			resp, body, err := get(t, c, reg.URL()+"/v2/a/blobs/"+d.String())
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %s, want %d", resp.Status, tc.wantStatus)
			}
			if tc.wantBody != nil && !tc.wantBody(body) {
				t.Errorf("body %q", body)
			}
			if n := reg.Count(On(ServerStorage, BlobGETs(d))); n != tc.wantStorageGET {
				t.Errorf("storage GETs %d, want %d", n, tc.wantStorageGET)
			}
		})
	}
}

func TestTokenServerFault(t *testing.T) {
	reg := New(t, Options{Auth: true})
	reg.AddFault(Fault{Match: OnServer(ServerToken, func(*http.Request) bool { return true }), Status: http.StatusServiceUnavailable, Times: 1})
	c := plainClient(t)
	resp, _, _ := get(t, c, reg.TokenURL()+"?service="+RegistryService)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("token server under fault: %s", resp.Status)
	}
	fetchToken(t, c, reg, RegistryService, "", "", "")
}
