package metatest

import (
	"context"
	"errors"

	"github.com/opencontainers/go-digest"

	"github.com/wharf-mirror/wharf/internal/meta"
)

var errTODO = errors.New("memory: not implemented yet")

func (x *memIndex) Repositories(ctx context.Context, q meta.RepositoryQuery) ([]meta.Repository, error) {
	return nil, errTODO
}
func (x *memIndex) TagsOf(ctx context.Context, d digest.Digest) ([]meta.Tag, error) {
	return nil, errTODO
}
func (x *memIndex) DeleteRepository(ctx context.Context, upstream, repo string) ([]digest.Digest, error) {
	return nil, errTODO
}
func (x *memIndex) BlobPage(ctx context.Context, after digest.Digest, limit int) ([]meta.BlobAccess, error) {
	return nil, errTODO
}
func (x *memIndex) Record(ctx context.Context, b meta.Batch) error { return errTODO }
