package upstream

import "testing"

func TestRequestKind(t *testing.T) {
	tests := []struct{ path, want string }{
		{"/v2/", KindPing},
		{"/v2/library/nginx/manifests/latest", KindManifest},
		{"/v2/library/nginx/manifests/sha256:abc", KindManifest},
		{"/v2/library/nginx/blobs/sha256:abc", KindBlob},
		{"/v2/library/nginx/tags/list", KindTags},
		{"/v2/library/nginx/referrers/sha256:abc", KindReferrers},
		// The repository name may contain the words; the API object is
		// the next-to-last segment.
		{"/v2/blobs/manifests/tags/blobs/sha256:abc", KindBlob},
		{"/v2/manifests/blobs/manifests/v1", KindManifest},
		{"/v2/a/tags/referrers/sha256:abc", KindReferrers},
		{"/v2/a/other/thing", KindOther},
		{"", KindOther},
		{"/", KindOther},
	}
	for _, tt := range tests {
		if got := requestKind(tt.path); got != tt.want {
			t.Errorf("requestKind(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}
}
