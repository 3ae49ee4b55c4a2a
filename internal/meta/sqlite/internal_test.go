package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/wharf-mirror/wharf/internal/meta"
)

// The connections are configured as the package doc says.
func TestPragmas(t *testing.T) {
	x, err := Open(t.Context(), filepath.Join(t.TempDir(), "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	tests := []struct {
		db     *sql.DB
		pragma string
		want   string
	}{
		{x.w, "journal_mode", "wal"},
		{x.w, "synchronous", "1"}, // NORMAL
		{x.w, "foreign_keys", "1"},
		{x.w, "busy_timeout", "5000"},
		{x.w, "query_only", "0"},
		{x.w, "user_version", "2"},
		{x.r, "journal_mode", "wal"},
		{x.r, "foreign_keys", "1"},
		{x.r, "busy_timeout", "5000"},
		{x.r, "query_only", "1"},
	}
	for _, tt := range tests {
		var got string
		if err := tt.db.QueryRowContext(t.Context(), "PRAGMA "+tt.pragma).Scan(&got); err != nil {
			t.Fatalf("PRAGMA %s: %v", tt.pragma, err)
		}
		if got != tt.want {
			which := "writer"
			if tt.db == x.r {
				which = "reader"
			}
			t.Errorf("%s: PRAGMA %s = %s, want %s", which, tt.pragma, got, tt.want)
		}
	}
	if n := len(migrations()); n != 2 {
		t.Errorf("the user_version row above assumes 2 migrations, there are %d; update it", n)
	}
}

// A failing migration leaves the database at the last version that fully
// applied, with nothing of the failed one.
func TestMigrationAtomic(t *testing.T) {
	ctx := t.Context()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "m.db")+"?_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)

	ms := []string{
		`CREATE TABLE one (x INTEGER)`,
		`CREATE TABLE two (x INTEGER); INSERT INTO nonexistent VALUES (1)`,
	}
	if err := migrate(ctx, db, ms); err == nil {
		t.Fatal("migrate with a failing migration succeeded")
	}
	if v := userVersion(ctx, t, db); v != 1 {
		t.Errorf("user_version = %d, want 1", v)
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema WHERE name IN ('one', 'two')`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("%d of the tables one and two exist, want only one", n)
	}

	// Fixed, it applies from where it stopped.
	ms[1] = `CREATE TABLE two (x INTEGER); INSERT INTO two VALUES (1)`
	if err := migrate(ctx, db, ms); err != nil {
		t.Fatal(err)
	}
	if v := userVersion(ctx, t, db); v != 2 {
		t.Errorf("user_version = %d, want 2", v)
	}
	// And again is a no-op.
	if err := migrate(ctx, db, ms); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM two`).Scan(&n); err != nil || n != 1 {
		t.Errorf("table two has %d rows, %v; want 1 (migration ran twice?)", n, err)
	}
}

func userVersion(ctx context.Context, t *testing.T, db *sql.DB) int {
	t.Helper()
	var v int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// A database of schema version 1 (before the refs index) is upgraded in
// place and keeps its records.
func TestUpgradeFromVersion1(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "index.db")
	wdsn, err := dsn(path, false)
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", wdsn)
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	if err := migrate(ctx, db, migrations()[:1]); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`INSERT INTO manifests VALUES ('sha256:m', 'm', 10)`,
		`INSERT INTO manifest_refs VALUES ('sha256:m', 0, 'sha256:l')`,
		`INSERT INTO blobs VALUES ('sha256:l', 20)`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	x, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	if v := userVersion(ctx, t, x.w); v != len(migrations()) {
		t.Errorf("user_version after upgrade = %d, want %d", v, len(migrations()))
	}
	// The layer is referenced, so evicting it alone keeps it.
	if got, err := x.Evict(ctx, "sha256:l"); err != nil || len(got) != 0 {
		t.Errorf("Evict of a referenced layer = %v, %v; want nothing", got, err)
	}
	if u, err := x.Usage(ctx); err != nil || u.Bytes != 30 {
		t.Errorf("Usage after upgrade = %+v, %v; want 30 bytes", u, err)
	}
}

// The browsing statements seek the primary keys and indexes rather than
// scan tables or sort, so that a page costs what it returns. The page of
// Repositories may walk the keys of tags and links from their start, but as
// a merge of two ordered streams that stops at the limit, never through a
// temporary b-tree that would read every row first. Match is the exception
// (a substring test scans) and is not checked.
func TestQueryPlans(t *testing.T) {
	x, err := Open(t.Context(), filepath.Join(t.TempDir(), "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	type stmt struct {
		name  string
		query string
		args  []any
		scans []string // the SCAN steps allowed
	}
	var tests []stmt
	for _, q := range []meta.RepositoryQuery{
		{Limit: 100},
		{Upstream: "docker.io", Limit: 100},
		{AfterUpstream: "docker.io", AfterName: "library/nginx", Limit: 100},
		{Upstream: "docker.io", AfterUpstream: "docker.io", AfterName: "library/nginx"},
	} {
		query, args := repositoriesQuery(q)
		tests = append(tests, stmt{fmt.Sprintf("Repositories(%+v)", q), query, args, []string{"SCAN p", "SCAN tags", "SCAN links"}})
	}
	tests = append(tests,
		stmt{"TagsOf", `SELECT upstream, repo, name, checked_at FROM tags WHERE digest = ? ORDER BY upstream, repo, name`, []any{"sha256:x"}, nil},
		stmt{"BlobPage", `SELECT b.digest, b.size, a.at FROM blobs b LEFT JOIN access a ON a.digest = b.digest
WHERE b.digest > ? ORDER BY b.digest LIMIT ?`, []any{"sha256:x", 10}, nil},
	)
	for _, tt := range tests {
		rows, err := x.r.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+tt.query, tt.args...)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		var plan []string
		for rows.Next() {
			var (
				id, parent, unused int
				detail             string
			)
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		if err := rows.Close(); err != nil {
			t.Fatal(err)
		}
		for _, step := range plan {
			if (strings.HasPrefix(step, "SCAN ") && !slices.Contains(tt.scans, step)) || strings.Contains(step, "TEMP B-TREE") {
				t.Errorf("%s: plan step %q; plan:\n%s", tt.name, step, strings.Join(plan, "\n"))
			}
		}
	}
}

// A batch that fails in the middle of its transaction (here a trigger
// refuses one tag, after every blob, manifest and link was written) leaves
// nothing behind.
func TestRecordRollsBack(t *testing.T) {
	ctx := t.Context()
	x, err := Open(ctx, filepath.Join(t.TempDir(), "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	// A temporary trigger lives on the writer's one connection.
	if _, err := x.w.ExecContext(ctx, `
CREATE TEMP TRIGGER refuse BEFORE INSERT ON main.tags WHEN NEW.name = 'refused'
BEGIN SELECT RAISE(ABORT, 'refused by the test'); END`); err != nil {
		t.Fatal(err)
	}
	d := digest.FromString("m")
	b := meta.Batch{
		Blobs:     []meta.Blob{{Digest: digest.FromString("l"), Size: 1}},
		Manifests: []meta.Manifest{{Digest: d, MediaType: "m", Size: 2, Refs: []digest.Digest{digest.FromString("l")}}},
		Links:     []meta.Link{{Upstream: "u", Repo: "r", Digest: d}},
		Tags: []meta.Tag{
			{Upstream: "u", Repo: "r", Name: "accepted", Digest: d},
			{Upstream: "u", Repo: "r", Name: "refused", Digest: d},
		},
	}
	if err := x.Record(ctx, b); err == nil {
		t.Fatal("Record with a refused tag succeeded")
	} else if errors.Is(err, meta.ErrInvalid) {
		t.Errorf("Record = %v; a storage failure is not ErrInvalid", err)
	}
	for _, table := range []string{"tags", "links", "manifests", "manifest_refs", "blobs"} {
		var n int
		if err := x.w.QueryRowContext(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%d rows in %s after a failed Record, want 0", n, table)
		}
	}
	// The writer is usable again.
	b.Tags = b.Tags[:1]
	if err := x.Record(ctx, b); err != nil {
		t.Fatalf("Record after a failed one: %v", err)
	}
	if _, err := x.Tag(ctx, "u", "r", "accepted"); err != nil {
		t.Errorf("Tag after Record: %v", err)
	}
}
