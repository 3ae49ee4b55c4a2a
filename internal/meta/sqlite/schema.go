package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// migrations returns the schema changes in order: applying migrations()[i]
// takes the database from user_version i to i+1. Entries are never edited
// once released, only appended; the database records its version in
// PRAGMA user_version (https://sqlite.org/pragma.html#pragma_user_version).
//
// Digests are stored as text ("sha256:..."), times as INTEGER microseconds
// since the Unix epoch in UTC: integers compare and index cheaply, and
// microseconds reach from year -290308 to 294247, so the zero time.Time fits.
func migrations() []string {
	return []string{
		// 1: the initial schema.
		`
CREATE TABLE tags (
	upstream   TEXT    NOT NULL,
	repo       TEXT    NOT NULL,
	name       TEXT    NOT NULL,
	digest     TEXT    NOT NULL,
	checked_at INTEGER NOT NULL,
	PRIMARY KEY (upstream, repo, name)
) STRICT, WITHOUT ROWID;
-- Reconcile removes the tags of absent content.
CREATE INDEX tags_by_digest ON tags (digest);

CREATE TABLE manifests (
	digest     TEXT    NOT NULL PRIMARY KEY,
	media_type TEXT    NOT NULL,
	size       INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- The descriptors a manifest references, in document order; the same
-- digest may appear twice. They go with their manifest.
CREATE TABLE manifest_refs (
	manifest TEXT    NOT NULL REFERENCES manifests (digest) ON DELETE CASCADE,
	pos      INTEGER NOT NULL,
	ref      TEXT    NOT NULL,
	PRIMARY KEY (manifest, pos)
) STRICT, WITHOUT ROWID;

CREATE TABLE blobs (
	digest TEXT    NOT NULL PRIMARY KEY,
	size   INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE links (
	upstream TEXT NOT NULL,
	repo     TEXT NOT NULL,
	digest   TEXT NOT NULL,
	PRIMARY KEY (upstream, repo, digest)
) STRICT, WITHOUT ROWID;
-- Reconcile removes the links of absent content.
CREATE INDEX links_by_digest ON links (digest);

CREATE TABLE access (
	digest TEXT    NOT NULL PRIMARY KEY,
	at     INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
`,
		// 2: Evict asks which manifests reference a digest.
		`
CREATE INDEX manifest_refs_by_ref ON manifest_refs (ref);
`,
	}
}

// ErrSchemaTooNew reports a database written by a newer version of wharf,
// whose schema this version does not know. It is wrapped by a
// *SchemaVersionError.
var ErrSchemaTooNew = errors.New("index database schema is newer than this program supports")

// SchemaVersionError describes a database whose schema version is not one
// this program can use.
type SchemaVersionError struct {
	Database  int // the database's PRAGMA user_version
	Supported int // the newest version this program knows
}

func (e *SchemaVersionError) Error() string {
	return fmt.Sprintf("index database schema version %d is newer than version %d, the newest this program supports; upgrade wharf or use another data directory",
		e.Database, e.Supported)
}

func (e *SchemaVersionError) Unwrap() error { return ErrSchemaTooNew }

// migrate brings the database to the newest version in ms, one migration per
// transaction, so that a failure leaves the database at the last version that
// fully applied. Each step reads the version inside its own write
// transaction, so two processes opening the same database at once do not
// apply a migration twice.
func migrate(ctx context.Context, db *sql.DB, ms []string) error {
	for range len(ms) + 1 {
		done, err := migrateStep(ctx, db, ms)
		if err != nil || done {
			return err
		}
	}
	return fmt.Errorf("sqlite: migrations did not converge")
}

func migrateStep(ctx context.Context, db *sql.DB, ms []string) (done bool, err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("sqlite: migrate: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback() // the error that made us roll back is the one to report
		}
	}()
	var v int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return false, fmt.Errorf("sqlite: reading schema version: %w", err)
	}
	switch {
	case v > len(ms):
		return false, &SchemaVersionError{Database: v, Supported: len(ms)}
	case v == len(ms):
		return true, tx.Rollback()
	case v < 0:
		return false, fmt.Errorf("sqlite: invalid schema version %d", v)
	}
	if _, err := tx.ExecContext(ctx, ms[v]); err != nil {
		return false, fmt.Errorf("sqlite: migration to version %d: %w", v+1, err)
	}
	// PRAGMA takes no bound parameters; v+1 is an integer we computed.
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", v+1)); err != nil {
		return false, fmt.Errorf("sqlite: migration to version %d: %w", v+1, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("sqlite: migration to version %d: %w", v+1, err)
	}
	return false, nil
}
