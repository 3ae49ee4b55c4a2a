package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/wharf-mirror/wharf/internal/meta"
)

// Repositories implements meta.Index in one statement, so the page and its
// figures come from the same snapshot.
//
// The page CTE merges the (upstream, repo) prefixes of the primary keys of
// tags and links, both already in page order, so without Match a page reads
// the rows of its own repositories and one more, not the tables. Each figure
// is then a lookup by primary key: a repository's links are one range of the
// links key, and every digest one row of manifests, blobs and access. Match
// cannot use an index (it is a substring test) and scans the key prefixes.
//
// SQLite's lower() folds ASCII letters only (https://sqlite.org/lang_corefunc.html#lower),
// which is what meta promises for Match; both sides are folded by SQLite so
// that the comparison agrees with itself for any input.
func (x *Index) Repositories(ctx context.Context, q meta.RepositoryQuery) (_ []meta.Repository, err error) {
	query, args := repositoriesQuery(q)
	rows, err := x.r.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list repositories: %w", err)
	}
	defer rows.Close()
	var rs []meta.Repository
	for rows.Next() {
		var (
			r  meta.Repository
			at sql.NullInt64
		)
		if err := rows.Scan(&r.Upstream, &r.Name, &r.Tags, &r.Manifests, &r.Bytes, &at); err != nil {
			return nil, fmt.Errorf("sqlite: list repositories: %w", err)
		}
		if at.Valid {
			r.LastAccess = toTime(at.Int64)
		}
		rs = append(rs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list repositories: %w", err)
	}
	return rs, nil
}

// repositoriesQuery builds the statement of Repositories and its arguments.
func repositoriesQuery(q meta.RepositoryQuery) (query string, args []any) {
	var conds []string
	if q.Upstream != "" {
		conds = append(conds, `upstream = ?`)
		args = append(args, q.Upstream)
	}
	if q.Match != "" {
		// As BLOBs, instr compares bytes, like Go's strings.Contains,
		// also for a pattern that is not valid UTF-8
		// (https://sqlite.org/lang_corefunc.html#instr).
		conds = append(conds, `instr(CAST(lower(upstream || '/' || repo) AS BLOB), CAST(lower(?) AS BLOB)) > 0`)
		args = append(args, q.Match)
	}
	if q.AfterUpstream != "" || q.AfterName != "" {
		// A row value comparison is the (upstream, repo) order of the
		// keys, so it seeks (https://sqlite.org/rowvalue.html).
		conds = append(conds, `(upstream, repo) > (?, ?)`)
		args = append(args, q.AfterUpstream, q.AfterName)
	}
	where := ""
	if len(conds) > 0 {
		where = "WHERE " + strings.Join(conds, " AND ")
	}
	limit := q.Limit
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	// The WHERE clause is built from constant fragments only; every
	// value is a bound parameter.
	query = `
WITH page (upstream, repo) AS (
	SELECT upstream, repo FROM tags ` + where + `
	UNION
	SELECT upstream, repo FROM links ` + where + `
	ORDER BY 1, 2
	LIMIT ?
)
SELECT p.upstream, p.repo,
	(SELECT count(*) FROM tags t WHERE t.upstream = p.upstream AND t.repo = p.repo),
	count(m.digest),
	-- A digest recorded as a manifest and as a blob is one file: once,
	-- with the larger size, as in Usage. Unrecorded content adds NULL,
	-- which sum skips.
	coalesce(sum(max(coalesce(m.size, b.size), coalesce(b.size, m.size))), 0),
	(SELECT max(a.at) FROM access a WHERE a.digest IN (
		SELECT digest FROM links WHERE upstream = p.upstream AND repo = p.repo
		UNION ALL
		SELECT digest FROM tags WHERE upstream = p.upstream AND repo = p.repo))
FROM page p
LEFT JOIN links l ON l.upstream = p.upstream AND l.repo = p.repo
LEFT JOIN manifests m ON m.digest = l.digest
LEFT JOIN blobs b ON b.digest = l.digest
GROUP BY p.upstream, p.repo
ORDER BY p.upstream, p.repo`
	return query, append(append(args, args...), limit)
}

// TagsOf implements meta.Index through the tags_by_digest index.
func (x *Index) TagsOf(ctx context.Context, d digest.Digest) (_ []meta.Tag, err error) {
	rows, err := x.r.QueryContext(ctx, `
SELECT upstream, repo, name, checked_at FROM tags WHERE digest = ?
ORDER BY upstream, repo, name`, d.String())
	if err != nil {
		return nil, fmt.Errorf("sqlite: tags of %s: %w", d, err)
	}
	defer rows.Close()
	var ts []meta.Tag
	for rows.Next() {
		t := meta.Tag{Digest: d}
		var at int64
		if err := rows.Scan(&t.Upstream, &t.Repo, &t.Name, &at); err != nil {
			return nil, fmt.Errorf("sqlite: tags of %s: %w", d, err)
		}
		t.CheckedAt = toTime(at)
		ts = append(ts, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: tags of %s: %w", d, err)
	}
	return ts, nil
}

// DeleteRepository implements meta.Index. The digests are read and the rows
// deleted in one write transaction, so a tag or link recorded meanwhile is
// either both reported and deleted or neither.
func (x *Index) DeleteRepository(ctx context.Context, upstream, repo string) (ds []digest.Digest, err error) {
	err = x.write(ctx, func(tx *sql.Tx) error {
		ds = ds[:0]
		rows, err := tx.QueryContext(ctx, `
SELECT digest FROM tags WHERE upstream = ?1 AND repo = ?2
UNION
SELECT digest FROM links WHERE upstream = ?1 AND repo = ?2
ORDER BY 1`, upstream, repo)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var d string
			if err := rows.Scan(&d); err != nil {
				return err
			}
			ds = append(ds, digest.Digest(d))
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if err := rows.Close(); err != nil {
			return err
		}
		for _, q := range []string{
			`DELETE FROM tags WHERE upstream = ? AND repo = ?`,
			`DELETE FROM links WHERE upstream = ? AND repo = ?`,
		} {
			if _, err := tx.ExecContext(ctx, q, upstream, repo); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: delete repository %s/%s: %w", upstream, repo, err)
	}
	return ds, nil
}

// BlobPage implements meta.Index: a range of the blobs primary key.
func (x *Index) BlobPage(ctx context.Context, after digest.Digest, limit int) (_ []meta.BlobAccess, err error) {
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	rows, err := x.r.QueryContext(ctx, `
SELECT b.digest, b.size, a.at
FROM blobs b LEFT JOIN access a ON a.digest = b.digest
WHERE b.digest > ?
ORDER BY b.digest
LIMIT ?`, after.String(), limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list blobs after %q: %w", after, err)
	}
	bs, err := scanBlobAccess(rows)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list blobs after %q: %w", after, err)
	}
	return bs, nil
}

// Record implements meta.Index. Each kind of record goes through one
// prepared statement, all in one write transaction: an import of thousands
// of records costs one commit (one fsync of the WAL at most), and a failure
// at any record rolls back every one before it.
func (x *Index) Record(ctx context.Context, b meta.Batch) error {
	if err := b.Validate(); err != nil {
		return fmt.Errorf("sqlite: record: %w", err)
	}
	if len(b.Blobs)+len(b.Manifests)+len(b.Links)+len(b.Tags) == 0 {
		return nil
	}
	err := x.write(ctx, func(tx *sql.Tx) error {
		st, closeAll, err := prepare(ctx, tx, sqlPutBlob, sqlPutManifest, sqlDeleteRefs, sqlInsertRef, sqlLink, sqlPutTag)
		if err != nil {
			return err
		}
		defer closeAll()
		putBlob, putMan, delRefs, insRef, link, putTag := st[0], st[1], st[2], st[3], st[4], st[5]
		for _, bl := range b.Blobs {
			if _, err := putBlob.ExecContext(ctx, bl.Digest.String(), bl.Size); err != nil {
				return fmt.Errorf("blob %s: %w", bl.Digest, err)
			}
		}
		for _, m := range b.Manifests {
			if err := putManifest(ctx, putMan, delRefs, insRef, m); err != nil {
				return fmt.Errorf("manifest %s: %w", m.Digest, err)
			}
		}
		for _, l := range b.Links {
			if _, err := link.ExecContext(ctx, l.Upstream, l.Repo, l.Digest.String()); err != nil {
				return fmt.Errorf("link %s/%s@%s: %w", l.Upstream, l.Repo, l.Digest, err)
			}
		}
		for _, t := range b.Tags {
			if _, err := putTag.ExecContext(ctx, t.Upstream, t.Repo, t.Name, t.Digest.String(), fromTime(t.CheckedAt)); err != nil {
				return fmt.Errorf("tag %s/%s:%s: %w", t.Upstream, t.Repo, t.Name, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: record: %w", err)
	}
	return nil
}
