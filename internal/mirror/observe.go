package mirror

import "io"

// Observer is told how many bytes the Service moves, for metrics;
// *metrics.Metrics implements it. It is called on the hot path (for every
// chunk a fill reads, and every chunk or file section a reader writes), so
// it must be cheap and never block. Upstreams are the configured names;
// nothing names a repository or digest.
type Observer interface {
	// BlobBytesServed: n bytes of a blob were written to a client of
	// upstream, read from a committed file (fromCache) or from a fill
	// still in progress.
	BlobBytesServed(upstream string, fromCache bool, n int64)
	// UpstreamBytes: n bytes arrived from upstream into the cache (blob
	// fills and manifests).
	UpstreamBytes(upstream string, n int64)
}

type nopObserver struct{}

func (nopObserver) BlobBytesServed(string, bool, int64) {}
func (nopObserver) UpstreamBytes(string, int64)         {}

func observerOrNop(o Observer) Observer {
	if o == nil {
		return nopObserver{}
	}
	return o
}

// served wraps dst so that the bytes written through it are reported as
// served for upstream, from the cache or from a fill in progress.
func (s *Service) served(dst io.Writer, upstream string, fromCache bool) io.Writer {
	if _, nop := s.obs.(nopObserver); nop {
		return dst
	}
	return servedWriter{w: dst, obs: s.obs, upstream: upstream, fromCache: fromCache}
}

// servedFromCache returns dst reporting as bytes read from a committed
// file: a fill's reader that switches to the committed file.
func servedFromCache(dst io.Writer) io.Writer {
	if sw, ok := dst.(servedWriter); ok {
		sw.fromCache = true
		return sw
	}
	return dst
}

// servedWriter counts what reaches the client. It implements ReaderFrom
// by handing the source to the underlying writer, so that copying a
// committed file still ends in sendfile.
type servedWriter struct {
	w         io.Writer
	obs       Observer
	upstream  string
	fromCache bool
}

func (sw servedWriter) Write(p []byte) (int, error) {
	n, err := sw.w.Write(p)
	sw.obs.BlobBytesServed(sw.upstream, sw.fromCache, int64(n))
	return n, err
}

func (sw servedWriter) ReadFrom(r io.Reader) (int64, error) {
	n, err := io.Copy(sw.w, r)
	sw.obs.BlobBytesServed(sw.upstream, sw.fromCache, n)
	return n, err
}
