package metatest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/opencontainers/go-digest"

	"github.com/wharf-mirror/wharf/internal/meta"
)

// testRepositories checks what a repository's summary counts, and every
// selector of RepositoryQuery.
func testRepositories(t *testing.T, x meta.Index) {
	ctx := t.Context()
	if rs, err := x.Repositories(ctx, meta.RepositoryQuery{}); err != nil || len(rs) != 0 {
		t.Fatalf("Repositories of an empty index = %v, %v; want empty, nil", rs, err)
	}
	var (
		idx, img, cfg = dg("index"), dg("image"), dg("config")
		l1, l2        = dg("layer 1"), dg("layer 2")
		both          = dg("manifest also fetched as a blob")
		unrecorded    = dg("linked, never recorded")
		tagOnly       = dg("tagged, never linked")
		app           = dg("app")
	)
	mustDo(t, x.PutManifest(ctx, meta.Manifest{Digest: idx, MediaType: "i", Size: 10, Refs: []digest.Digest{img}}))
	mustDo(t, x.PutManifest(ctx, meta.Manifest{Digest: img, MediaType: "m", Size: 20, Refs: []digest.Digest{cfg, l1, l2}}))
	mustDo(t, x.PutManifest(ctx, meta.Manifest{Digest: both, MediaType: "m", Size: 30}))
	mustDo(t, x.PutManifest(ctx, meta.Manifest{Digest: app, MediaType: "m", Size: 50}))
	for _, b := range []meta.Blob{{Digest: cfg, Size: 5}, {Digest: l1, Size: 100}, {Digest: l2, Size: 200}, {Digest: both, Size: 30}} {
		mustDo(t, x.PutBlob(ctx, b))
	}

	// docker.io/library/nginx: two tags on the index, everything linked.
	mustPutTag(t, x, meta.Tag{Upstream: "docker.io", Repo: "library/nginx", Name: "latest", Digest: idx, CheckedAt: base})
	mustPutTag(t, x, meta.Tag{Upstream: "docker.io", Repo: "library/nginx", Name: "1.27", Digest: idx, CheckedAt: base})
	mustDo(t, x.Link(ctx, "docker.io", "library/nginx", idx, img, cfg, l1, l2, both, unrecorded))
	// A longer name is another repository; it has a tag and no link.
	mustPutTag(t, x, meta.Tag{Upstream: "docker.io", Repo: "library/nginx/sub", Name: "x", Digest: tagOnly, CheckedAt: base})
	// A repository seen only through a shared layer.
	mustDo(t, x.Link(ctx, "docker.io", "library/redis", l1))
	// Names that differ in case only by the ASCII letters Match folds.
	mustPutTag(t, x, meta.Tag{Upstream: "ghcr.io", Repo: "owner/app", Name: "v1", Digest: app, CheckedAt: base})
	mustDo(t, x.Link(ctx, "ghcr.io", "owner/app", app))
	mustDo(t, x.Link(ctx, "ghcr.io", "Owner/Mixed", unrecorded))
	mustDo(t, x.Link(ctx, "quay.io", "a", unrecorded))

	// The latest access among linked content counts, a layer's too; so
	// does the access of what a tag points to.
	mustDo(t, x.Touch(ctx, base, idx))
	mustDo(t, x.Touch(ctx, base.Add(time.Hour), l1))
	mustDo(t, x.Touch(ctx, base.Add(2*time.Hour), tagOnly))
	mustDo(t, x.Touch(ctx, base.Add(3*time.Hour), dg("unrelated")))

	var (
		nginx = meta.Repository{Upstream: "docker.io", Name: "library/nginx", Tags: 2,
			Manifests: 3, Bytes: 10 + 20 + 5 + 100 + 200 + 30, LastAccess: base.Add(time.Hour)}
		sub   = meta.Repository{Upstream: "docker.io", Name: "library/nginx/sub", Tags: 1, LastAccess: base.Add(2 * time.Hour)}
		redis = meta.Repository{Upstream: "docker.io", Name: "library/redis", Bytes: 100, LastAccess: base.Add(time.Hour)}
		mixed = meta.Repository{Upstream: "ghcr.io", Name: "Owner/Mixed"}
		ghApp = meta.Repository{Upstream: "ghcr.io", Name: "owner/app", Tags: 1, Manifests: 1, Bytes: 50}
		quay  = meta.Repository{Upstream: "quay.io", Name: "a"}
		all   = []meta.Repository{nginx, sub, redis, mixed, ghApp, quay} // "O" sorts before "o"
	)
	tests := []struct {
		name string
		q    meta.RepositoryQuery
		want []meta.Repository
	}{
		{"all", meta.RepositoryQuery{}, all},
		{"upstream", meta.RepositoryQuery{Upstream: "docker.io"}, all[:3]},
		{"unknown upstream", meta.RepositoryQuery{Upstream: "docker"}, nil},
		{"match ignores case", meta.RepositoryQuery{Match: "NGINX"}, []meta.Repository{nginx, sub}},
		{"match spans the slash", meta.RepositoryQuery{Match: "io/lib"}, all[:3]},
		{"match folds stored names", meta.RepositoryQuery{Match: "owner/"}, []meta.Repository{mixed, ghApp}},
		{"match is a substring", meta.RepositoryQuery{Match: "y.io/A"}, []meta.Repository{quay}},
		{"match is literal", meta.RepositoryQuery{Match: "%"}, nil},
		{"match is literal too", meta.RepositoryQuery{Match: "_"}, nil},
		{"no match", meta.RepositoryQuery{Match: "zzz"}, nil},
		{"upstream and match", meta.RepositoryQuery{Upstream: "ghcr.io", Match: "MIXED"}, []meta.Repository{mixed}},
		{"limit", meta.RepositoryQuery{Limit: 2}, all[:2]},
		{"limit beyond the end", meta.RepositoryQuery{Limit: 100}, all},
		{"negative limit", meta.RepositoryQuery{Limit: -1}, all},
		{"after", meta.RepositoryQuery{AfterUpstream: "docker.io", AfterName: "library/nginx"}, all[1:]},
		{"after, limit", meta.RepositoryQuery{AfterUpstream: "docker.io", AfterName: "library/redis", Limit: 1}, []meta.Repository{mixed}},
		{"after a name that is not there", meta.RepositoryQuery{AfterUpstream: "docker.io", AfterName: "library/nginx/a"}, all[1:]},
		{"after an upstream only", meta.RepositoryQuery{AfterUpstream: "e"}, all[3:]},
		{"after the last", meta.RepositoryQuery{AfterUpstream: "quay.io", AfterName: "a"}, nil},
		{"after, upstream, match", meta.RepositoryQuery{Upstream: "docker.io", Match: "nginx", AfterUpstream: "docker.io", AfterName: "library/nginx"}, []meta.Repository{sub}},
	}
	for _, tt := range tests {
		got, err := x.Repositories(ctx, tt.q)
		if err != nil {
			t.Errorf("%s: Repositories(%+v): %v", tt.name, tt.q, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got, approxTime, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s: Repositories(%+v) (-want +got):\n%s", tt.name, tt.q, diff)
		}
		for _, r := range got {
			if !r.LastAccess.IsZero() && r.LastAccess.Location() != time.UTC {
				t.Errorf("%s: LastAccess of %s/%s in %v, want UTC", tt.name, r.Upstream, r.Name, r.LastAccess.Location())
			}
		}
	}
}

// testRepositoriesPaging walks the listing page by page, as the admin API
// does, and checks that the pages add up to the whole listing.
func testRepositoriesPaging(t *testing.T, x meta.Index) {
	ctx := t.Context()
	for i := range 14 {
		upstream := []string{"docker.io", "ghcr.io", "registry.k8s.io"}[i%3]
		repo := fmt.Sprintf("group%d/repo%02d", i%4, i)
		d := dg(fmt.Sprint("content ", i))
		switch i % 3 {
		case 0: // tagged only
			mustPutTag(t, x, meta.Tag{Upstream: upstream, Repo: repo, Name: "latest", Digest: d, CheckedAt: base})
		case 1: // linked only
			mustDo(t, x.Link(ctx, upstream, repo, d))
		default: // both, with several links
			mustPutTag(t, x, meta.Tag{Upstream: upstream, Repo: repo, Name: "latest", Digest: d, CheckedAt: base})
			mustDo(t, x.Link(ctx, upstream, repo, d, dg("shared"), dg(fmt.Sprint("more ", i))))
		}
	}
	for _, q := range []meta.RepositoryQuery{
		{},
		{Match: "GROUP1/"},
		{Upstream: "ghcr.io"},
		{Upstream: "registry.k8s.io", Match: "repo1"},
	} {
		whole, err := x.Repositories(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if len(whole) == 0 {
			t.Fatalf("Repositories(%+v) is empty", q)
		}
		for _, size := range []int{1, 3, max(1, len(whole)-1), len(whole), len(whole) + 1} {
			var pages []meta.Repository
			pq := q
			pq.Limit = size
			for range len(whole) + 2 { // bounded: one page per repository at most, and an empty one
				page, err := x.Repositories(ctx, pq)
				if err != nil {
					t.Fatal(err)
				}
				if len(page) > size {
					t.Fatalf("Repositories(%+v) returned %d, more than the limit", pq, len(page))
				}
				if len(page) == 0 {
					break
				}
				pages = append(pages, page...)
				last := page[len(page)-1]
				pq.AfterUpstream, pq.AfterName = last.Upstream, last.Name
			}
			if diff := cmp.Diff(whole, pages, approxTime); diff != "" {
				t.Errorf("pages of %d of %+v (-whole +pages):\n%s", size, q, diff)
			}
		}
	}
}

func testTagsOf(t *testing.T, x meta.Index) {
	ctx := t.Context()
	d, other := dg("d"), dg("other")
	if ts, err := x.TagsOf(ctx, d); err != nil || len(ts) != 0 {
		t.Fatalf("TagsOf in an empty index = %v, %v; want empty, nil", ts, err)
	}
	want := []meta.Tag{
		{Upstream: "docker.io", Repo: "library/nginx", Name: "1.27", Digest: d, CheckedAt: base},
		{Upstream: "docker.io", Repo: "library/nginx", Name: "latest", Digest: d, CheckedAt: base.Add(time.Minute)},
		{Upstream: "docker.io", Repo: "mirror/nginx", Name: "latest", Digest: d, CheckedAt: base},
		{Upstream: "ghcr.io", Repo: "a", Name: "b", Digest: d, CheckedAt: base},
	}
	for _, i := range []int{3, 1, 0, 2} { // out of order
		mustPutTag(t, x, want[i])
	}
	mustPutTag(t, x, meta.Tag{Upstream: "docker.io", Repo: "library/nginx", Name: "moved", Digest: d, CheckedAt: base})
	mustPutTag(t, x, meta.Tag{Upstream: "docker.io", Repo: "library/nginx", Name: "moved", Digest: other, CheckedAt: base})
	mustPutTag(t, x, meta.Tag{Upstream: "docker.io", Repo: "library/nginx", Name: "elsewhere", Digest: other, CheckedAt: base})
	got, err := x.TagsOf(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, approxTime); diff != "" {
		t.Errorf("TagsOf (-want +got):\n%s", diff)
	}
	if got, err := x.TagsOf(ctx, other); err != nil || len(got) != 2 {
		t.Errorf("TagsOf(other) = %v, %v; want the two tags moved or put there", got, err)
	}
	if got, err := x.TagsOf(ctx, dg("untagged")); err != nil || len(got) != 0 {
		t.Errorf("TagsOf(untagged) = %v, %v; want empty", got, err)
	}
}

func testDeleteRepository(t *testing.T, x meta.Index) {
	ctx := t.Context()
	idx, img, layer, gone, elsewhere := dg("index"), dg("image"), dg("layer"), dg("tag of absent content"), dg("elsewhere")
	mustDo(t, x.PutManifest(ctx, meta.Manifest{Digest: idx, MediaType: "i", Size: 1, Refs: []digest.Digest{img}}))
	mustDo(t, x.PutManifest(ctx, meta.Manifest{Digest: img, MediaType: "m", Size: 2, Refs: []digest.Digest{layer}}))
	mustDo(t, x.PutBlob(ctx, meta.Blob{Digest: layer, Size: 3}))
	mustDo(t, x.Touch(ctx, base, idx, layer))
	for _, tag := range []meta.Tag{
		{Upstream: "docker.io", Repo: "library/nginx", Name: "latest", Digest: idx, CheckedAt: base},
		{Upstream: "docker.io", Repo: "library/nginx", Name: "1.27", Digest: idx, CheckedAt: base},
		{Upstream: "docker.io", Repo: "library/nginx", Name: "old", Digest: gone, CheckedAt: base},
		// The same name in other places, which stay.
		{Upstream: "docker.io", Repo: "library/nginx/sub", Name: "latest", Digest: idx, CheckedAt: base},
		{Upstream: "docker.io", Repo: "library", Name: "latest", Digest: idx, CheckedAt: base},
		{Upstream: "ghcr.io", Repo: "library/nginx", Name: "latest", Digest: idx, CheckedAt: base},
	} {
		mustPutTag(t, x, tag)
	}
	mustDo(t, x.Link(ctx, "docker.io", "library/nginx", idx, img, layer))
	mustDo(t, x.Link(ctx, "docker.io", "library/redis", layer, elsewhere))
	mustDo(t, x.Link(ctx, "ghcr.io", "library/nginx", idx))

	got, err := x.DeleteRepository(ctx, "docker.io", "library/nginx")
	if err != nil {
		t.Fatal(err)
	}
	want := []digest.Digest{idx, img, layer, gone}
	slices.Sort(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("DeleteRepository (-want +got):\n%s", diff)
	}

	// Gone: the repository's tags and links.
	if ts, err := x.Tags(ctx, "docker.io", "library/nginx"); err != nil || len(ts) != 0 {
		t.Errorf("Tags after DeleteRepository = %v, %v; want none", ts, err)
	}
	for _, d := range []digest.Digest{idx, img, layer} {
		if ok, err := x.Linked(ctx, "docker.io", "library/nginx", d); err != nil || ok {
			t.Errorf("Linked(%s) after DeleteRepository = %v, %v; want false", d, ok, err)
		}
	}
	// Kept: other repositories, content records and access.
	for _, k := range [][3]string{
		{"docker.io", "library/nginx/sub", "latest"},
		{"docker.io", "library", "latest"},
		{"ghcr.io", "library/nginx", "latest"},
	} {
		if _, err := x.Tag(ctx, k[0], k[1], k[2]); err != nil {
			t.Errorf("Tag %v after deleting another repository: %v", k, err)
		}
	}
	for _, l := range []struct {
		upstream, repo string
		d              digest.Digest
	}{{"docker.io", "library/redis", layer}, {"docker.io", "library/redis", elsewhere}, {"ghcr.io", "library/nginx", idx}} {
		if ok, err := x.Linked(ctx, l.upstream, l.repo, l.d); err != nil || !ok {
			t.Errorf("Linked(%s/%s, %s) after deleting another repository = %v, %v", l.upstream, l.repo, l.d, ok, err)
		}
	}
	if u, err := x.Usage(ctx); err != nil || u != (meta.Usage{Manifests: 2, Blobs: 1, Bytes: 6}) {
		t.Errorf("Usage after DeleteRepository = %+v, %v; want every record kept", u, err)
	}
	if _, err := x.LastAccess(ctx, layer); err != nil {
		t.Errorf("LastAccess after DeleteRepository: %v", err)
	}
	rs, err := x.Repositories(ctx, meta.RepositoryQuery{Upstream: "docker.io"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range rs {
		names = append(names, r.Name)
	}
	if diff := cmp.Diff([]string{"library", "library/nginx/sub", "library/redis"}, names); diff != "" {
		t.Errorf("Repositories after DeleteRepository (-want +got):\n%s", diff)
	}

	// Again, or an unknown repository: nothing, and no error.
	for _, repo := range []string{"library/nginx", "never/seen"} {
		if got, err := x.DeleteRepository(ctx, "docker.io", repo); err != nil || len(got) != 0 {
			t.Errorf("DeleteRepository(%s) = %v, %v; want nothing", repo, got, err)
		}
	}
}

func testBlobPage(t *testing.T, x meta.Index) {
	ctx := t.Context()
	if bs, err := x.BlobPage(ctx, "", 10); err != nil || len(bs) != 0 {
		t.Fatalf("BlobPage of an empty index = %v, %v; want empty, nil", bs, err)
	}
	var all []meta.BlobAccess
	for i := range 7 {
		b := meta.BlobAccess{Blob: meta.Blob{Digest: dg(fmt.Sprint("blob ", i)), Size: int64(i) << 30}}
		mustDo(t, x.PutBlob(ctx, b.Blob))
		if i%2 == 0 {
			b.LastAccess = base.Add(time.Duration(i) * time.Minute)
			mustDo(t, x.Touch(ctx, b.LastAccess, b.Digest))
		}
		all = append(all, b)
	}
	// Manifests are not blobs; a digest recorded as both is.
	mustDo(t, x.PutManifest(ctx, meta.Manifest{Digest: dg("manifest"), MediaType: "m", Size: 1}))
	slices.SortFunc(all, func(a, b meta.BlobAccess) int { return strings.Compare(string(a.Digest), string(b.Digest)) })

	// A digest between two recorded ones starts after the lower one.
	between := all[3].Digest[:len(all[3].Digest)-1]
	tests := []struct {
		name  string
		after digest.Digest
		limit int
		want  []meta.BlobAccess
	}{
		{"first page", "", 3, all[:3]},
		{"second page", all[2].Digest, 3, all[3:6]},
		{"last page", all[5].Digest, 3, all[6:]},
		{"after the last", all[6].Digest, 3, nil},
		{"no limit", "", 0, all},
		{"negative limit", all[0].Digest, -1, all[1:]},
		{"after an unrecorded digest", between, 2, all[3:5]},
		{"limit beyond the end", "", 100, all},
	}
	for _, tt := range tests {
		got, err := x.BlobPage(ctx, tt.after, tt.limit)
		if err != nil {
			t.Errorf("%s: BlobPage: %v", tt.name, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got, approxTime, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s: BlobPage(%q, %d) (-want +got):\n%s", tt.name, tt.after, tt.limit, diff)
		}
	}
}

func testRecord(t *testing.T, x meta.Index) {
	ctx := t.Context()
	if err := x.Record(ctx, meta.Batch{}); err != nil {
		t.Fatalf("Record of an empty batch: %v", err)
	}
	idx, img, cfg, layer := dg("index"), dg("image"), dg("config"), dg("layer")
	refs := []digest.Digest{cfg, layer, layer}
	b := meta.Batch{
		Blobs: []meta.Blob{{Digest: cfg, Size: 5}, {Digest: layer, Size: 1 << 40}},
		Manifests: []meta.Manifest{
			{Digest: img, MediaType: "application/vnd.oci.image.manifest.v1+json", Size: 20, Refs: refs},
			{Digest: idx, MediaType: "application/vnd.oci.image.index.v1+json", Size: 10, Refs: []digest.Digest{img}},
		},
		Links: []meta.Link{
			{Upstream: "docker.io", Repo: "library/nginx", Digest: idx},
			{Upstream: "docker.io", Repo: "library/nginx", Digest: img},
			{Upstream: "docker.io", Repo: "library/nginx", Digest: img}, // twice: no error
			{Upstream: "docker.io", Repo: "library/nginx", Digest: layer},
		},
		Tags: []meta.Tag{
			{Upstream: "docker.io", Repo: "library/nginx", Name: "latest", Digest: idx, CheckedAt: base},
			{Upstream: "docker.io", Repo: "library/nginx", Name: "1.27", Digest: idx, CheckedAt: base},
		},
	}
	if err := x.Record(ctx, b); err != nil {
		t.Fatalf("Record: %v", err)
	}
	refs[0] = dg("caller reuses its slice") // must not reach the index

	for _, m := range b.Manifests {
		got, err := x.Manifest(ctx, m.Digest)
		if err != nil {
			t.Fatal(err)
		}
		want := m
		if m.Digest == img {
			want.Refs = []digest.Digest{cfg, layer, layer}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Manifest after Record (-want +got):\n%s", diff)
		}
	}
	for _, bl := range b.Blobs {
		if got, err := x.Blob(ctx, bl.Digest); err != nil || got != bl {
			t.Errorf("Blob after Record = %+v, %v; want %+v", got, err, bl)
		}
	}
	for _, d := range []digest.Digest{idx, img, layer} {
		if ok, err := x.Linked(ctx, "docker.io", "library/nginx", d); err != nil || !ok {
			t.Errorf("Linked(%s) after Record = %v, %v", d, ok, err)
		}
	}
	got, err := x.Tags(ctx, "docker.io", "library/nginx")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]meta.Tag{b.Tags[1], b.Tags[0]}, got, approxTime); diff != "" {
		t.Errorf("Tags after Record (-want +got):\n%s", diff)
	}

	// Recording again replaces, like the single-record methods.
	again := meta.Batch{
		Blobs:     []meta.Blob{{Digest: layer, Size: 7}},
		Manifests: []meta.Manifest{{Digest: img, MediaType: "m", Size: 21, Refs: []digest.Digest{layer}}},
		Links:     []meta.Link{{Upstream: "docker.io", Repo: "library/nginx", Digest: idx}},
		Tags:      []meta.Tag{{Upstream: "docker.io", Repo: "library/nginx", Name: "latest", Digest: img, CheckedAt: base.Add(time.Hour)}},
	}
	if err := x.Record(ctx, again); err != nil {
		t.Fatalf("second Record: %v", err)
	}
	if m, err := x.Manifest(ctx, img); err != nil || !cmp.Equal(m, again.Manifests[0]) {
		t.Errorf("Manifest after a second Record = %+v, %v; want %+v", m, err, again.Manifests[0])
	}
	if bl, err := x.Blob(ctx, layer); err != nil || bl.Size != 7 {
		t.Errorf("Blob after a second Record = %+v, %v; want size 7", bl, err)
	}
	if tag, err := x.Tag(ctx, "docker.io", "library/nginx", "latest"); err != nil || !cmp.Equal(tag, again.Tags[0], approxTime) {
		t.Errorf("Tag after a second Record = %+v, %v; want %+v", tag, err, again.Tags[0])
	}
	if u, err := x.Usage(ctx); err != nil || u != (meta.Usage{Manifests: 2, Blobs: 2, Bytes: 5 + 7 + 21 + 10}) {
		t.Errorf("Usage after Record = %+v, %v", u, err)
	}
}

// testRecordInvalid checks that a batch with one invalid record writes
// nothing, not even the valid records before it.
func testRecordInvalid(t *testing.T, x meta.Index) {
	ctx := t.Context()
	d := dg("valid")
	valid := meta.Batch{
		Blobs:     []meta.Blob{{Digest: d, Size: 1}},
		Manifests: []meta.Manifest{{Digest: dg("m"), MediaType: "m", Size: 1, Refs: []digest.Digest{d}}},
		Links:     []meta.Link{{Upstream: "u", Repo: "r", Digest: d}},
		Tags:      []meta.Tag{{Upstream: "u", Repo: "r", Name: "t", Digest: dg("m"), CheckedAt: base}},
	}
	tests := []struct {
		name string
		edit func(b *meta.Batch)
	}{
		{"blob without digest", func(b *meta.Batch) { b.Blobs = append(b.Blobs, meta.Blob{Size: 1}) }},
		{"blob of negative size", func(b *meta.Batch) { b.Blobs = append(b.Blobs, meta.Blob{Digest: dg("x"), Size: -1}) }},
		{"manifest without digest", func(b *meta.Batch) { b.Manifests = append(b.Manifests, meta.Manifest{MediaType: "m"}) }},
		{"manifest of negative size", func(b *meta.Batch) {
			b.Manifests = append(b.Manifests, meta.Manifest{Digest: dg("x"), MediaType: "m", Size: -5})
		}},
		{"manifest with an empty ref", func(b *meta.Batch) {
			b.Manifests = append(b.Manifests, meta.Manifest{Digest: dg("x"), MediaType: "m", Refs: []digest.Digest{d, ""}})
		}},
		{"link without upstream", func(b *meta.Batch) { b.Links = append(b.Links, meta.Link{Repo: "r", Digest: d}) }},
		{"link without repository", func(b *meta.Batch) { b.Links = append(b.Links, meta.Link{Upstream: "u", Digest: d}) }},
		{"link without digest", func(b *meta.Batch) { b.Links = append(b.Links, meta.Link{Upstream: "u", Repo: "r"}) }},
		{"tag without upstream", func(b *meta.Batch) {
			b.Tags = append(b.Tags, meta.Tag{Repo: "r", Name: "t2", Digest: d})
		}},
		{"tag without repository", func(b *meta.Batch) {
			b.Tags = append(b.Tags, meta.Tag{Upstream: "u", Name: "t2", Digest: d})
		}},
		{"tag without name", func(b *meta.Batch) { b.Tags = append(b.Tags, meta.Tag{Upstream: "u", Repo: "r", Digest: d}) }},
		{"tag without digest", func(b *meta.Batch) { b.Tags = append(b.Tags, meta.Tag{Upstream: "u", Repo: "r", Name: "t2"}) }},
	}
	for _, tt := range tests {
		b := meta.Batch{
			Blobs:     slices.Clone(valid.Blobs),
			Manifests: slices.Clone(valid.Manifests),
			Links:     slices.Clone(valid.Links),
			Tags:      slices.Clone(valid.Tags),
		}
		tt.edit(&b)
		if err := b.Validate(); !errors.Is(err, meta.ErrInvalid) {
			t.Errorf("%s: Validate = %v, want ErrInvalid", tt.name, err)
		}
		if err := x.Record(ctx, b); !errors.Is(err, meta.ErrInvalid) {
			t.Errorf("%s: Record = %v, want ErrInvalid", tt.name, err)
		}
		if u, err := x.Usage(ctx); err != nil || u != (meta.Usage{}) {
			t.Errorf("%s: Usage after a failed Record = %+v, %v; want nothing recorded", tt.name, u, err)
		}
		if rs, err := x.Repositories(ctx, meta.RepositoryQuery{}); err != nil || len(rs) != 0 {
			t.Errorf("%s: Repositories after a failed Record = %+v, %v; want none", tt.name, rs, err)
		}
	}
	if err := valid.Validate(); err != nil {
		t.Fatalf("Validate of the valid batch: %v", err)
	}
	if err := x.Record(ctx, valid); err != nil {
		t.Fatalf("Record of the valid batch: %v", err)
	}
	if u, err := x.Usage(ctx); err != nil || u.Manifests != 1 || u.Blobs != 1 {
		t.Errorf("Usage after the valid batch = %+v, %v", u, err)
	}
}
