package registrytest

import (
	"strings"
	"testing"
)

func TestParsePath(t *testing.T) {
	const dgst = "sha256:0123456789012345678901234567890123456789012345678901234567890123"
	tests := []struct {
		path string
		want route
		ok   bool
	}{
		{"/v2/library/alpine/manifests/latest", route{"library/alpine", kindManifest, "latest"}, true},
		{"/v2/a/manifests/" + dgst, route{"a", kindManifest, dgst}, true},
		{"/v2/a/b/c/blobs/" + dgst, route{"a/b/c", kindBlob, dgst}, true},
		{"/v2/a/blobs/uploads/", route{"a", kindUpload, ""}, true},
		{"/v2/a/blobs/uploads", route{"a", kindUpload, ""}, true},
		{"/v2/a/blobs/uploads/123-abc", route{"a", kindUpload, "123-abc"}, true},
		{"/v2/a/tags/list", route{"a", kindTags, ""}, true},
		{"/v2/a/referrers/" + dgst, route{"a", kindReferrers, dgst}, true},
		{"/v2/a/blobs/blobs/" + dgst, route{"a/blobs", kindBlob, dgst}, true},
		{"/v2/x/manifests/manifests/v1", route{"x/manifests", kindManifest, "v1"}, true},
		{"/v2/my-org/my_app.v2/manifests/1.0", route{"my-org/my_app.v2", kindManifest, "1.0"}, true},
		{"/v2/", route{}, false},
		{"/v2", route{}, false},
		{"/v2/_catalog", route{}, false},
		{"/v2/a/manifests/", route{}, false},
		{"/v2/a/blobs/", route{}, false},
		{"/v2//manifests/latest", route{}, false},
		{"/v2/a//b/manifests/latest", route{}, false},
		{"/v2/A/manifests/latest", route{}, false},
		{"/v2/-a/manifests/latest", route{}, false},
		{"/v2/a/other/latest", route{}, false},
		{"/v1/a/manifests/latest", route{}, false},
		{"/token", route{}, false},
	}
	for _, tc := range tests {
		got, ok := parsePath(tc.path)
		if ok != tc.ok || got != tc.want {
			t.Errorf("parsePath(%q) = %+v, %v; want %+v, %v", tc.path, got, ok, tc.want, tc.ok)
		}
	}
}

func FuzzParsePath(f *testing.F) {
	for _, s := range []string{
		"/v2/library/alpine/manifests/latest",
		"/v2/a/blobs/uploads/",
		"/v2/a/b/tags/list",
		"/v2/a/referrers/sha256:00",
		"/v2/a/blobs/blobs/x",
		"/v2/",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		rt, ok := parsePath(p)
		if !ok {
			if rt != (route{}) {
				t.Fatalf("rejected %q but returned %+v", p, rt)
			}
			return
		}
		if rt.name == "" || !strings.HasPrefix(p, "/v2/"+rt.name+"/") {
			t.Fatalf("%q: name %q is not the path's prefix", p, rt.name)
		}
		for _, c := range strings.Split(rt.name, "/") {
			if !validComponent(c) {
				t.Fatalf("%q: invalid component %q in name", p, c)
			}
		}
		if strings.Contains(rt.ref, "/") || !strings.HasSuffix(p, rt.ref) {
			t.Fatalf("%q: reference %q is not the last segment", p, rt.ref)
		}
		if rt.kind < kindManifest || rt.kind > kindReferrers {
			t.Fatalf("%q: kind %d", p, rt.kind)
		}
	})
}
