// Package sqlite implements meta.Index on an embedded SQLite database
// (modernc.org/sqlite, pure Go).
//
// It owns the database file and its schema. Invariants:
//   - The schema version is PRAGMA user_version; Open applies the pending
//     migrations in order, each in its own transaction, and refuses a
//     database from a newer wharf (ErrSchemaTooNew).
//   - All writes go through a single connection, so they are serialised in
//     the process and never fail with SQLITE_BUSY against each other; every
//     method that writes more than one row does so in one transaction.
//   - Reads use a separate pool of read-only connections. In WAL mode
//     readers see the last committed state and neither block nor are
//     blocked by the writer (https://sqlite.org/wal.html).
//   - The journal is WAL with synchronous=NORMAL: a committed transaction
//     survives a process crash; after a power loss the last transactions may
//     be rolled back, never corrupted (https://sqlite.org/pragma.html#pragma_synchronous).
//     That fits the index, which may lag the blob store but must not
//     describe absent content (see package meta).
//   - Manifest refs are deleted with their manifest by a foreign key with
//     ON DELETE CASCADE, so foreign_keys is on for every connection.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"
	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/wharf-mirror/wharf/internal/meta"
)

const (
	// busyTimeout bounds how long a connection waits for a lock held by
	// another process (a CLI command opening the data directory) or by a
	// checkpoint, before failing with SQLITE_BUSY.
	busyTimeout = 5 * time.Second
	// minReadConns is the smallest read pool; it grows with GOMAXPROCS,
	// since reads are on the per-request path and run in parallel.
	minReadConns = 4
)

// Index is a meta.Index stored in a SQLite database. It is safe for
// concurrent use.
type Index struct {
	w *sql.DB // exactly one connection: every write
	r *sql.DB // read-only connections

	// Statements on the per-request path, prepared once.
	tagStmt    *sql.Stmt
	linkedStmt *sql.Stmt
}

var _ meta.Index = (*Index)(nil)

// Open opens (creating if needed) the index database at path and brings its
// schema up to date.
func Open(ctx context.Context, path string) (_ *Index, err error) {
	x := &Index{}
	defer func() {
		if err != nil {
			_ = x.Close() // the open error is the one to report
		}
	}()

	wdsn, err := dsn(path, false)
	if err != nil {
		return nil, err
	}
	if x.w, err = sql.Open("sqlite", wdsn); err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	x.w.SetMaxOpenConns(1)
	x.w.SetMaxIdleConns(1)
	x.w.SetConnMaxLifetime(0)
	x.w.SetConnMaxIdleTime(0)
	// The writer connects first: it creates the file and switches it to
	// WAL, which readers then inherit.
	if err := migrate(ctx, x.w, migrations()); err != nil {
		return nil, err
	}

	rdsn, err := dsn(path, true)
	if err != nil {
		return nil, err
	}
	if x.r, err = sql.Open("sqlite", rdsn); err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	n := max(minReadConns, runtime.GOMAXPROCS(0))
	x.r.SetMaxOpenConns(n)
	x.r.SetMaxIdleConns(n)
	x.r.SetConnMaxLifetime(0)
	x.r.SetConnMaxIdleTime(0)

	if x.tagStmt, err = x.r.PrepareContext(ctx,
		`SELECT digest, checked_at FROM tags WHERE upstream = ? AND repo = ? AND name = ?`); err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	if x.linkedStmt, err = x.r.PrepareContext(ctx,
		`SELECT EXISTS (SELECT 1 FROM links WHERE upstream = ? AND repo = ? AND digest = ?)`); err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	return x, nil
}

// dsn builds the connection string: a file: URI (so that any character in
// path is escaped) with the driver's connection parameters.
func dsn(path string, readOnly bool) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("sqlite: %w", err)
	}
	q := url.Values{}
	q.Set("_busy_timeout", strconv.FormatInt(busyTimeout.Milliseconds(), 10))
	q.Set("_foreign_keys", "1")
	if readOnly {
		q.Set("_query_only", "1")
	} else {
		q.Set("_journal_mode", "WAL")
		q.Set("_synchronous", "NORMAL")
		// Take the write lock at BEGIN: a deferred transaction that
		// reads first and writes later can fail with SQLITE_BUSY
		// when another process wrote in between, and busy_timeout
		// does not help there (https://sqlite.org/lang_transaction.html).
		q.Set("_txlock", "immediate")
	}
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(abs), RawQuery: q.Encode()}
	return u.String(), nil
}

// Close implements meta.Index.
func (x *Index) Close() error {
	var errs []error
	for _, s := range []*sql.Stmt{x.tagStmt, x.linkedStmt} {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	for _, db := range []*sql.DB{x.r, x.w} {
		if db != nil {
			errs = append(errs, db.Close())
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sqlite: close: %w", err)
	}
	return nil
}

// Times are stored as microseconds since the Unix epoch, UTC.
func fromTime(t time.Time) int64 { return t.UnixMicro() }
func toTime(us int64) time.Time  { return time.UnixMicro(us).UTC() }

// Tag implements meta.Index.
func (x *Index) Tag(ctx context.Context, upstream, repo, name string) (meta.Tag, error) {
	var (
		d  string
		at int64
	)
	err := x.tagStmt.QueryRowContext(ctx, upstream, repo, name).Scan(&d, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return meta.Tag{}, fmt.Errorf("%w: tag %s/%s:%s", meta.ErrNotFound, upstream, repo, name)
	}
	if err != nil {
		return meta.Tag{}, fmt.Errorf("sqlite: tag %s/%s:%s: %w", upstream, repo, name, err)
	}
	return meta.Tag{Upstream: upstream, Repo: repo, Name: name, Digest: digest.Digest(d), CheckedAt: toTime(at)}, nil
}

// PutTag implements meta.Index.
func (x *Index) PutTag(ctx context.Context, t meta.Tag) error {
	_, err := x.w.ExecContext(ctx, sqlPutTag, t.Upstream, t.Repo, t.Name, t.Digest.String(), fromTime(t.CheckedAt))
	if err != nil {
		return fmt.Errorf("sqlite: put tag %s/%s:%s: %w", t.Upstream, t.Repo, t.Name, err)
	}
	return nil
}

// DeleteTag implements meta.Index.
func (x *Index) DeleteTag(ctx context.Context, upstream, repo, name string) error {
	if _, err := x.w.ExecContext(ctx, `DELETE FROM tags WHERE upstream = ? AND repo = ? AND name = ?`, upstream, repo, name); err != nil {
		return fmt.Errorf("sqlite: delete tag %s/%s:%s: %w", upstream, repo, name, err)
	}
	return nil
}

// Tags implements meta.Index. Names sort in byte order (SQLite's BINARY
// collation), the same order as Go's string comparison.
func (x *Index) Tags(ctx context.Context, upstream, repo string) (_ []meta.Tag, err error) {
	rows, err := x.r.QueryContext(ctx,
		`SELECT name, digest, checked_at FROM tags WHERE upstream = ? AND repo = ? ORDER BY name`,
		upstream, repo)
	if err != nil {
		return nil, fmt.Errorf("sqlite: tags of %s/%s: %w", upstream, repo, err)
	}
	defer rows.Close()
	var ts []meta.Tag
	for rows.Next() {
		var (
			name, d string
			at      int64
		)
		if err := rows.Scan(&name, &d, &at); err != nil {
			return nil, fmt.Errorf("sqlite: tags of %s/%s: %w", upstream, repo, err)
		}
		ts = append(ts, meta.Tag{Upstream: upstream, Repo: repo, Name: name, Digest: digest.Digest(d), CheckedAt: toTime(at)})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: tags of %s/%s: %w", upstream, repo, err)
	}
	return ts, nil
}

// Manifest implements meta.Index. One statement reads the record and its
// refs, so they come from the same snapshot.
func (x *Index) Manifest(ctx context.Context, d digest.Digest) (meta.Manifest, error) {
	rows, err := x.r.QueryContext(ctx, `
SELECT m.media_type, m.size, r.ref
FROM manifests m LEFT JOIN manifest_refs r ON r.manifest = m.digest
WHERE m.digest = ?
ORDER BY r.pos`, d.String())
	if err != nil {
		return meta.Manifest{}, fmt.Errorf("sqlite: manifest %s: %w", d, err)
	}
	defer rows.Close()
	m := meta.Manifest{Digest: d}
	found := false
	for rows.Next() {
		var ref sql.NullString
		if err := rows.Scan(&m.MediaType, &m.Size, &ref); err != nil {
			return meta.Manifest{}, fmt.Errorf("sqlite: manifest %s: %w", d, err)
		}
		found = true
		if ref.Valid {
			m.Refs = append(m.Refs, digest.Digest(ref.String))
		}
	}
	if err := rows.Err(); err != nil {
		return meta.Manifest{}, fmt.Errorf("sqlite: manifest %s: %w", d, err)
	}
	if !found {
		return meta.Manifest{}, fmt.Errorf("%w: manifest %s", meta.ErrNotFound, d)
	}
	return m, nil
}

// PutManifest implements meta.Index.
func (x *Index) PutManifest(ctx context.Context, m meta.Manifest) error {
	err := x.write(ctx, func(tx *sql.Tx) error {
		st, closeAll, err := prepare(ctx, tx, sqlPutManifest, sqlDeleteRefs, sqlInsertRef)
		if err != nil {
			return err
		}
		defer closeAll()
		return putManifest(ctx, st[0], st[1], st[2], m)
	})
	if err != nil {
		return fmt.Errorf("sqlite: put manifest %s: %w", m.Digest, err)
	}
	return nil
}

// Blob implements meta.Index.
func (x *Index) Blob(ctx context.Context, d digest.Digest) (meta.Blob, error) {
	b := meta.Blob{Digest: d}
	err := x.r.QueryRowContext(ctx, `SELECT size FROM blobs WHERE digest = ?`, d.String()).Scan(&b.Size)
	if errors.Is(err, sql.ErrNoRows) {
		return meta.Blob{}, fmt.Errorf("%w: blob %s", meta.ErrNotFound, d)
	}
	if err != nil {
		return meta.Blob{}, fmt.Errorf("sqlite: blob %s: %w", d, err)
	}
	return b, nil
}

// PutBlob implements meta.Index.
func (x *Index) PutBlob(ctx context.Context, b meta.Blob) error {
	_, err := x.w.ExecContext(ctx, sqlPutBlob, b.Digest.String(), b.Size)
	if err != nil {
		return fmt.Errorf("sqlite: put blob %s: %w", b.Digest, err)
	}
	return nil
}

// Link implements meta.Index; all digests in one transaction.
func (x *Index) Link(ctx context.Context, upstream, repo string, ds ...digest.Digest) error {
	if len(ds) == 0 {
		return nil
	}
	err := x.write(ctx, func(tx *sql.Tx) error {
		ins, err := tx.PrepareContext(ctx, sqlLink)
		if err != nil {
			return err
		}
		defer ins.Close()
		for _, d := range ds {
			if _, err := ins.ExecContext(ctx, upstream, repo, d.String()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: link to %s/%s: %w", upstream, repo, err)
	}
	return nil
}

// Linked implements meta.Index.
func (x *Index) Linked(ctx context.Context, upstream, repo string, d digest.Digest) (bool, error) {
	var ok bool
	if err := x.linkedStmt.QueryRowContext(ctx, upstream, repo, d.String()).Scan(&ok); err != nil {
		return false, fmt.Errorf("sqlite: linked %s/%s@%s: %w", upstream, repo, d, err)
	}
	return ok, nil
}

// Touch implements meta.Index; all digests in one transaction. The stored
// time only moves forward, so touches that arrive out of order (concurrent
// requests finishing) keep the latest.
func (x *Index) Touch(ctx context.Context, at time.Time, ds ...digest.Digest) error {
	if len(ds) == 0 {
		return nil
	}
	err := x.write(ctx, func(tx *sql.Tx) error {
		up, err := tx.PrepareContext(ctx, `
INSERT INTO access (digest, at) VALUES (?, ?)
ON CONFLICT (digest) DO UPDATE SET at = max(at, excluded.at)`)
		if err != nil {
			return err
		}
		defer up.Close()
		us := fromTime(at)
		for _, d := range ds {
			if _, err := up.ExecContext(ctx, d.String(), us); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: touch: %w", err)
	}
	return nil
}

// LastAccess implements meta.Index.
func (x *Index) LastAccess(ctx context.Context, d digest.Digest) (time.Time, error) {
	var us int64
	err := x.r.QueryRowContext(ctx, `SELECT at FROM access WHERE digest = ?`, d.String()).Scan(&us)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, fmt.Errorf("%w: access of %s", meta.ErrNotFound, d)
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("sqlite: last access of %s: %w", d, err)
	}
	return toTime(us), nil
}

// Reconcile implements meta.Index. It runs in one write transaction, so
// nothing recorded meanwhile can be judged absent by mistake; present is
// called with the write lock held and should be cheap (a set lookup built
// from blob.Store.Walk, not a network call per digest).
//
// Every digest any record names is checked; for an absent one, its manifest
// record (with its refs, by cascade), blob record, tags, links and last
// access are deleted. The count is of deleted manifest, blob, tag, link and
// access rows.
func (x *Index) Reconcile(ctx context.Context, present func(digest.Digest) bool) (removed int, err error) {
	err = x.write(ctx, func(tx *sql.Tx) error {
		absent, err := absentDigests(ctx, tx, present)
		if err != nil {
			return err
		}
		removed, err = forget(ctx, tx, absent)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("sqlite: reconcile: %w", err)
	}
	return removed, nil
}

// absentDigests returns the digests named by any record for which present
// is false. Only absent ones are kept in memory; normally there are few.
func absentDigests(ctx context.Context, tx *sql.Tx, present func(digest.Digest) bool) (_ []string, err error) {
	rows, err := tx.QueryContext(ctx, `
SELECT digest FROM manifests
UNION SELECT digest FROM blobs
UNION SELECT digest FROM tags
UNION SELECT digest FROM links
UNION SELECT digest FROM access`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var absent []string
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			return nil, err
		}
		if !present(digest.Digest(d)) {
			absent = append(absent, d)
		}
	}
	return absent, rows.Err()
}

// The statements that record content, shared by the single-record methods
// and Record.
const (
	sqlPutTag = `
INSERT INTO tags (upstream, repo, name, digest, checked_at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (upstream, repo, name) DO UPDATE SET digest = excluded.digest, checked_at = excluded.checked_at`
	// An upsert, not INSERT OR REPLACE: replacing would delete the row
	// first, a needless cascade to its refs.
	sqlPutManifest = `
INSERT INTO manifests (digest, media_type, size) VALUES (?, ?, ?)
ON CONFLICT (digest) DO UPDATE SET media_type = excluded.media_type, size = excluded.size`
	sqlDeleteRefs = `DELETE FROM manifest_refs WHERE manifest = ?`
	sqlInsertRef  = `INSERT INTO manifest_refs (manifest, pos, ref) VALUES (?, ?, ?)`
	sqlPutBlob    = `
INSERT INTO blobs (digest, size) VALUES (?, ?)
ON CONFLICT (digest) DO UPDATE SET size = excluded.size`
	sqlLink = `INSERT INTO links (upstream, repo, digest) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`
)

// putManifest records m and replaces its refs, through statements prepared
// from sqlPutManifest, sqlDeleteRefs and sqlInsertRef in one transaction.
func putManifest(ctx context.Context, put, deleteRefs, insertRef *sql.Stmt, m meta.Manifest) error {
	if _, err := put.ExecContext(ctx, m.Digest.String(), m.MediaType, m.Size); err != nil {
		return err
	}
	if _, err := deleteRefs.ExecContext(ctx, m.Digest.String()); err != nil {
		return err
	}
	for i, ref := range m.Refs {
		if _, err := insertRef.ExecContext(ctx, m.Digest.String(), i, ref.String()); err != nil {
			return err
		}
	}
	return nil
}

// prepare prepares qs in tx, in order; closeAll closes them (a transaction's
// statements are also closed when it ends, but not before).
func prepare(ctx context.Context, tx *sql.Tx, qs ...string) (stmts []*sql.Stmt, closeAll func(), err error) {
	closeAll = func() {
		for _, s := range stmts {
			s.Close()
		}
	}
	for _, q := range qs {
		s, err := tx.PrepareContext(ctx, q)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		stmts = append(stmts, s)
	}
	return stmts, closeAll, nil
}

// write runs fn in a transaction on the writer connection and commits it
// when fn succeeds.
func (x *Index) write(ctx context.Context, fn func(tx *sql.Tx) error) (err error) {
	tx, err := x.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback() // fn's error is the one to report
		}
	}()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}
