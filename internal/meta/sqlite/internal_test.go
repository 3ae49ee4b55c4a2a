package sqlite

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
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
