package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/opencontainers/go-digest"

	"github.com/wharf-mirror/wharf/internal/meta"
)

// Manifests implements meta.Index. One statement reads the records, their
// refs and their last access, so they come from the same snapshot; SQLite
// sorts NULL (never touched) before every time.
func (x *Index) Manifests(ctx context.Context) (_ []meta.ManifestAccess, err error) {
	rows, err := x.r.QueryContext(ctx, `
SELECT m.digest, m.media_type, m.size, a.at, r.ref
FROM manifests m
LEFT JOIN access a ON a.digest = m.digest
LEFT JOIN manifest_refs r ON r.manifest = m.digest
ORDER BY a.at, m.digest, r.pos`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list manifests: %w", err)
	}
	defer rows.Close()
	var ms []meta.ManifestAccess
	for rows.Next() {
		var (
			d, mediaType string
			size         int64
			at           sql.NullInt64
			ref          sql.NullString
		)
		if err := rows.Scan(&d, &mediaType, &size, &at, &ref); err != nil {
			return nil, fmt.Errorf("sqlite: list manifests: %w", err)
		}
		// Rows of one manifest are adjacent: the digest is the second
		// sort key and unique per manifest.
		if n := len(ms); n == 0 || ms[n-1].Digest != digest.Digest(d) {
			m := meta.ManifestAccess{Manifest: meta.Manifest{Digest: digest.Digest(d), MediaType: mediaType, Size: size}}
			if at.Valid {
				m.LastAccess = toTime(at.Int64)
			}
			ms = append(ms, m)
		}
		if ref.Valid {
			m := &ms[len(ms)-1]
			m.Refs = append(m.Refs, digest.Digest(ref.String))
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list manifests: %w", err)
	}
	return ms, nil
}

// Blobs implements meta.Index.
func (x *Index) Blobs(ctx context.Context) (_ []meta.BlobAccess, err error) {
	rows, err := x.r.QueryContext(ctx, `
SELECT b.digest, b.size, a.at
FROM blobs b LEFT JOIN access a ON a.digest = b.digest
ORDER BY a.at, b.digest`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list blobs: %w", err)
	}
	bs, err := scanBlobAccess(rows)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list blobs: %w", err)
	}
	return bs, nil
}

// scanBlobAccess reads rows of (digest, size, access time or NULL) and
// closes them.
func scanBlobAccess(rows *sql.Rows) ([]meta.BlobAccess, error) {
	defer rows.Close()
	var bs []meta.BlobAccess
	for rows.Next() {
		var (
			b  meta.BlobAccess
			d  string
			at sql.NullInt64
		)
		if err := rows.Scan(&d, &b.Size, &at); err != nil {
			return nil, err
		}
		b.Digest = digest.Digest(d)
		if at.Valid {
			b.LastAccess = toTime(at.Int64)
		}
		bs = append(bs, b)
	}
	return bs, rows.Err()
}

// Usage implements meta.Index. A digest recorded both as a manifest and as
// a blob (a manifest also fetched through the blobs endpoint) is one file
// in the store and counts once, with the larger of its recorded sizes.
func (x *Index) Usage(ctx context.Context) (meta.Usage, error) {
	var u meta.Usage
	err := x.r.QueryRowContext(ctx, `
SELECT
	(SELECT count(*) FROM manifests),
	(SELECT count(*) FROM blobs),
	(SELECT coalesce(sum(size), 0) FROM (
		SELECT max(size) AS size FROM (
			SELECT digest, size FROM manifests
			UNION ALL SELECT digest, size FROM blobs
		) GROUP BY digest
	))`).Scan(&u.Manifests, &u.Blobs, &u.Bytes)
	if err != nil {
		return meta.Usage{}, fmt.Errorf("sqlite: usage: %w", err)
	}
	return u, nil
}

// Evict implements meta.Index. The kept set is computed to a fixed point
// inside the write transaction: a digest referenced by a manifest that is
// not being evicted is kept, which may keep the digests it references in
// turn; each round keeps at least one more digest or ends, so there are at
// most len(ds) rounds.
func (x *Index) Evict(ctx context.Context, ds ...digest.Digest) (evicted []digest.Digest, err error) {
	if len(ds) == 0 {
		return nil, nil
	}
	err = x.write(ctx, func(tx *sql.Tx) error {
		evicted = evicted[:0]
		evicting := make(map[string]bool, len(ds))
		for _, d := range ds {
			evicting[d.String()] = true
		}
		referrers, err := tx.PrepareContext(ctx, `SELECT DISTINCT manifest FROM manifest_refs WHERE ref = ?`)
		if err != nil {
			return err
		}
		defer referrers.Close()
		for range len(ds) {
			kept, err := keepReferenced(ctx, referrers, ds, evicting)
			if err != nil {
				return err
			}
			if !kept {
				break
			}
		}
		var gone []string
		for _, d := range ds {
			if evicting[d.String()] {
				evicting[d.String()] = false // once, even if ds repeats it
				gone = append(gone, d.String())
				evicted = append(evicted, d)
			}
		}
		_, err = forget(ctx, tx, gone)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: evict: %w", err)
	}
	return evicted, nil
}

// keepReferenced takes out of evicting every digest that a manifest not in
// evicting references, and reports whether it took any.
func keepReferenced(ctx context.Context, referrers *sql.Stmt, ds []digest.Digest, evicting map[string]bool) (bool, error) {
	kept := false
	for _, d := range ds {
		if !evicting[d.String()] {
			continue
		}
		keep, err := referencedFromOutside(ctx, referrers, d.String(), evicting)
		if err != nil {
			return false, err
		}
		if keep {
			evicting[d.String()] = false
			kept = true
		}
	}
	return kept, nil
}

func referencedFromOutside(ctx context.Context, referrers *sql.Stmt, d string, evicting map[string]bool) (_ bool, err error) {
	rows, err := referrers.QueryContext(ctx, d)
	if err != nil {
		return false, err
	}
	defer rows.Close()
	for rows.Next() {
		var m string
		if err := rows.Scan(&m); err != nil {
			return false, err
		}
		if !evicting[m] {
			return true, nil
		}
	}
	return false, rows.Err()
}

// forget removes every record of each digest in ds: its manifest record
// (with its refs, by cascade), blob record, the tags pointing to it, its
// links and its last access. It returns how many rows it removed.
func forget(ctx context.Context, tx *sql.Tx, ds []string) (removed int, err error) {
	if len(ds) == 0 {
		return 0, nil
	}
	stmts, closeAll, err := prepare(ctx, tx,
		`DELETE FROM manifests WHERE digest = ?`,
		`DELETE FROM blobs WHERE digest = ?`,
		`DELETE FROM tags WHERE digest = ?`,
		`DELETE FROM links WHERE digest = ?`,
		`DELETE FROM access WHERE digest = ?`,
	)
	if err != nil {
		return 0, err
	}
	defer closeAll()
	for _, d := range ds {
		for _, s := range stmts {
			res, err := s.ExecContext(ctx, d)
			if err != nil {
				return 0, err
			}
			n, err := res.RowsAffected()
			if err != nil {
				return 0, err
			}
			removed += int(n)
		}
	}
	return removed, nil
}
