package mitm

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

const (
	// DefaultMaxConns is the connection bound of a Proxy whose MaxConns is 0.
	DefaultMaxConns = 1024
	// dialTimeout bounds dialling a tunnel target.
	dialTimeout = 10 * time.Second
	// replyTimeout bounds writing the CONNECT reply to a client that does
	// not read.
	replyTimeout = 10 * time.Second
	// Limits of the HTTP/1.1 server behind interception; the TLS handshake
	// is bounded by readHeaderTimeout too (net/http applies the smallest
	// read timeout to it).
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 64 << 10
)

var (
	errProxyClosed  = errors.New("mitm: proxy closed")
	errTooManyConns = errors.New("mitm: too many proxy connections")
)

// Proxy is the http.Handler of an HTTPS_PROXY listener. It intercepts
// CONNECT requests for the registry hosts wharf serves, tunnels those an
// explicit allowlist names, and refuses everything else, so that it is never
// an open proxy.
//
// Hosts are compared in normalised form: DNS names lower-case without a
// trailing dot, IP literals in canonical form. A Proxy must not be copied
// after first use. Its fields must not change once it serves requests.
type Proxy struct {
	// CA mints the certificates of intercepted hosts. Nil disables
	// interception.
	CA *CA
	// Intercept reports whether host (no port; normalised) is a registry
	// wharf serves: configured upstream names, aliases, and the blob/CDN
	// hosts the configuration names. It is asked only about DNS names other
	// than localhost on port 443. Nil intercepts nothing.
	Intercept func(host string) bool
	// Tunnel reports whether a CONNECT target (host:port, host normalised,
	// IPv6 bracketed) that is not intercepted may be tunnelled untouched: an
	// explicit allowlist. It is the only way IP literals, localhost and ports
	// other than 443 get through. Nil refuses everything not intercepted.
	Tunnel func(hostport string) bool
	// Handler serves the decrypted requests of intercepted hosts, and the
	// absolute-form plain-HTTP requests for them. Requests reach it with
	// r.Host and r.URL.Host the target host (no port), r.URL.Scheme "https"
	// (r.TLS set) or "http" (plain), r.RequestURI in origin form and
	// r.RemoteAddr the client's address; Proxy-Authorization and
	// Proxy-Connection are removed. Nil answers 404.
	Handler http.Handler
	// Dial dials tunnel targets; nil means a net.Dialer. Every dial is
	// bounded by a 10 s timeout on ctx.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Logger receives refusals and connection failures; nil discards them.
	Logger *slog.Logger
	// MaxConns bounds the concurrent tunnelled and intercepted connections
	// (0 means DefaultMaxConns); a CONNECT beyond it is answered 503.
	MaxConns int

	mu     sync.Mutex
	closed bool
	conns  map[*trackedConn]struct{}
	srv    *http.Server  // serves intercepted connections; started on first use
	ln     *connListener // srv's listener
	wg     sync.WaitGroup
}

// targetKey is the context key under which the intercepted connection's
// CONNECT host reaches serveIntercepted.
type targetKey struct{}

// ServeHTTP handles one request on the proxy listener:
//
//   - CONNECT host:port (RFC 9110 §9.3.6): a malformed target is answered
//     400. A DNS name on port 443 that Intercept accepts is answered
//     "200 Connection established", then TLS is terminated with a leaf for
//     the host (the SNI must equal it or be absent) and the requests inside
//     are served by Handler; each must carry a Host equal to the CONNECT host,
//     else 421. A target Tunnel accepts is dialled (502 if that fails),
//     answered 200 and spliced byte for byte. Anything else is answered 403
//     with a one-line body naming the target.
//   - An absolute-form request (RFC 9112 §3.2.2, "GET http://quay.io/v2/")
//     for an intercepted host on port 80 is served by Handler; any other
//     absolute-form request is answered 403.
//   - An origin-form request ("GET /v2/") is not a proxy request: 400.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		p.serveConnect(w, r)
		return
	}
	p.serveForward(w, r)
}

// Close stops the proxy: later CONNECT requests are answered 503, every
// hijacked connection (intercepted and tunnelled) is closed, and Close waits
// until the goroutines serving them have returned. An intercepted
// connection that Handler hijacks itself is Handler's to close. Close is
// idempotent.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.wg.Wait()
		return nil
	}
	p.closed = true
	srv := p.srv
	var open []*trackedConn
	for tc := range p.conns {
		if tc.Conn != nil {
			open = append(open, tc)
		}
	}
	p.mu.Unlock()

	var err error
	if srv != nil {
		// Closes the listener and the connections it serves. Connections
		// still being handed over are closed below.
		err = srv.Close()
	}
	for _, tc := range open {
		tc.closeAll()
	}
	p.wg.Wait()
	return err
}

func (p *Proxy) serveConnect(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor != 1 {
		// An HTTP/2 CONNECT is a stream, not a connection to hijack.
		http.Error(w, "wharf: CONNECT is supported over HTTP/1.1 only", http.StatusHTTPVersionNotSupported)
		return
	}
	// RequestURI is the request target exactly as sent: for CONNECT the
	// authority-form host:port (RFC 9112 §3.2.3). The Host header is not
	// consulted.
	a, err := parseAuthority(r.RequestURI)
	if err != nil {
		http.Error(w, fmt.Sprintf("wharf: malformed CONNECT target %q: want host:port", r.RequestURI), http.StatusBadRequest)
		return
	}
	switch {
	case p.intercepts(a):
		p.intercept(w, r, a)
	case p.Tunnel != nil && p.Tunnel(a.hostport()):
		p.tunnel(w, r, a)
	default:
		p.logger().Info("mitm: CONNECT refused", "target", a.hostport(), "client", r.RemoteAddr)
		http.Error(w, "wharf: CONNECT to "+a.hostport()+" refused: not a registry this mirror serves", http.StatusForbidden)
	}
}

// intercepts reports whether a may be intercepted. IP literals and localhost
// never are: a certificate for them would let a client be talked into
// trusting wharf for its own machine.
func (p *Proxy) intercepts(a authority) bool {
	return a.kind == kindName && a.port == "443" &&
		p.CA != nil && p.Intercept != nil && p.Intercept(a.host)
}

// intercept answers 200 and hands the TLS server side of the hijacked
// connection to the internal HTTP server.
func (p *Proxy) intercept(w http.ResponseWriter, r *http.Request, a authority) {
	tc, ln, err := p.acquire(a.host, true)
	if err != nil {
		p.refuseBusy(w, r, a, err)
		return
	}
	conn, err := hijack(w)
	if err != nil {
		tc.release()
		p.logger().Warn("mitm: hijack failed", "target", a.hostport(), "client", r.RemoteAddr, "err", err)
		http.Error(w, "wharf: cannot take over the connection", http.StatusInternalServerError)
		return
	}
	if !p.attach(tc, conn, nil) {
		conn.Close()
		tc.release()
		return
	}
	if err := writeEstablished(conn); err != nil {
		p.logger().Debug("mitm: CONNECT reply failed", "target", a.hostport(), "client", r.RemoteAddr, "err", err)
		tc.closeAll()
		tc.release()
		return
	}
	p.logger().Debug("mitm: intercepting", "target", a.hostport(), "client", r.RemoteAddr)
	if !ln.handoff(tls.Server(tc, p.interceptConfig(a.host))) {
		// The proxy closed meanwhile; from here on tc is this goroutine's.
		tc.closeAll()
		tc.release()
	}
}

// interceptConfig is the TLS configuration of one intercepted connection:
// the leaf of the CONNECT host, and a failed handshake for any other SNI.
func (p *Proxy) interceptConfig(host string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if hello.ServerName != "" {
				sni, _, err := normalizeHost(hello.ServerName)
				if err != nil || sni != host {
					return nil, fmt.Errorf("%w: SNI %q, CONNECT %s", ErrSNIMismatch, hello.ServerName, host)
				}
			}
			return p.CA.Leaf(host)
		},
	}
}

// serveIntercepted is the internal server's handler: it checks that the
// request is for the connection's CONNECT host and passes it to Handler.
func (p *Proxy) serveIntercepted(w http.ResponseWriter, r *http.Request) {
	target, _ := r.Context().Value(targetKey{}).(string)
	host, port, _, err := splitHostHeader(r.Host)
	if target == "" || err != nil || host != target || (port != "" && port != "443") {
		// RFC 9110 §15.5.20: the client may retry on a connection for
		// the right host.
		http.Error(w, fmt.Sprintf("wharf: this connection serves %s, not %q", target, r.Host), http.StatusMisdirectedRequest)
		return
	}
	p.handler().ServeHTTP(w, rewrite(r, "https", target))
}

// tunnel dials the target, answers 200 and copies bytes both ways until
// either side ends, then closes both.
func (p *Proxy) tunnel(w http.ResponseWriter, r *http.Request, a authority) {
	tc, _, err := p.acquire(a.host, false)
	if err != nil {
		p.refuseBusy(w, r, a, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), dialTimeout)
	target, err := p.dial(ctx, "tcp", a.hostport())
	cancel()
	if err != nil {
		tc.release()
		p.logger().Warn("mitm: tunnel dial failed", "target", a.hostport(), "client", r.RemoteAddr, "err", err)
		http.Error(w, "wharf: cannot reach "+a.hostport(), http.StatusBadGateway)
		return
	}
	conn, err := hijack(w)
	if err != nil {
		target.Close()
		tc.release()
		p.logger().Warn("mitm: hijack failed", "target", a.hostport(), "client", r.RemoteAddr, "err", err)
		http.Error(w, "wharf: cannot take over the connection", http.StatusInternalServerError)
		return
	}
	defer tc.release()
	if !p.attach(tc, conn, target) {
		conn.Close()
		target.Close()
		return
	}
	if err := writeEstablished(conn); err != nil {
		p.logger().Debug("mitm: CONNECT reply failed", "target", a.hostport(), "client", r.RemoteAddr, "err", err)
		tc.closeAll()
		return
	}
	p.logger().Debug("mitm: tunnelling", "target", a.hostport(), "client", r.RemoteAddr)
	splice(conn, target)
}

// splice copies a→b and b→a until either direction ends, then closes both
// so the other direction ends too, and returns once both copies have.
func splice(a, b net.Conn) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(b, a)
		a.Close()
		b.Close()
	}()
	io.Copy(a, b)
	a.Close()
	b.Close()
	<-done
}

// serveForward handles the non-CONNECT requests of the proxy listener.
func (p *Proxy) serveForward(w http.ResponseWriter, r *http.Request) {
	if !r.URL.IsAbs() {
		http.Error(w, "wharf: this is wharf's proxy port; use it as HTTPS_PROXY", http.StatusBadRequest)
		return
	}
	if r.URL.Scheme != "http" {
		http.Error(w, "wharf: only http:// requests are proxied; https goes through CONNECT", http.StatusBadRequest)
		return
	}
	host, port, kind, err := splitHostHeader(r.URL.Host)
	if err != nil {
		http.Error(w, fmt.Sprintf("wharf: malformed proxy request host %q", r.URL.Host), http.StatusBadRequest)
		return
	}
	if kind == kindName && (port == "" || port == "80") && p.Intercept != nil && p.Intercept(host) {
		p.handler().ServeHTTP(w, rewrite(r, "http", host))
		return
	}
	target := host
	if port != "" {
		target = net.JoinHostPort(host, port)
	}
	p.logger().Info("mitm: proxy request refused", "target", target, "client", r.RemoteAddr)
	http.Error(w, "wharf: request for "+target+" refused: not a registry this mirror serves", http.StatusForbidden)
}

// rewrite returns a shallow copy of r as Handler expects it: for host over
// scheme, in origin form, without proxy headers (RFC 9110 §11.7.2, RFC 9112
// §9.6 Proxy-Connection is obsolete but still sent).
func rewrite(r *http.Request, scheme, host string) *http.Request {
	r2 := r.WithContext(r.Context())
	u := *r.URL
	u.Scheme = scheme
	u.Host = host
	r2.URL = &u
	r2.Host = host
	r2.RequestURI = u.RequestURI()
	if r.Header.Get("Proxy-Authorization") != "" || r.Header.Get("Proxy-Connection") != "" {
		r2.Header = r.Header.Clone()
		r2.Header.Del("Proxy-Authorization")
		r2.Header.Del("Proxy-Connection")
	}
	return r2
}

func (p *Proxy) refuseBusy(w http.ResponseWriter, r *http.Request, a authority, err error) {
	msg := "wharf: too many proxy connections"
	if errors.Is(err, errProxyClosed) {
		msg = "wharf: proxy is shutting down"
	}
	p.logger().Warn("mitm: CONNECT refused", "target", a.hostport(), "client", r.RemoteAddr, "err", err)
	http.Error(w, msg, http.StatusServiceUnavailable)
}

// acquire reserves a connection slot for host. For an intercepted host it
// also starts the internal server if needed and returns its listener.
func (p *Proxy) acquire(host string, intercept bool) (*trackedConn, *connListener, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, nil, errProxyClosed
	}
	maxConns := p.MaxConns
	if maxConns <= 0 {
		maxConns = DefaultMaxConns
	}
	if len(p.conns) >= maxConns {
		return nil, nil, errTooManyConns
	}
	if intercept && p.ln == nil {
		p.startLocked()
	}
	tc := &trackedConn{p: p, host: host}
	if p.conns == nil {
		p.conns = make(map[*trackedConn]struct{})
	}
	p.conns[tc] = struct{}{}
	p.wg.Add(1)
	return tc, p.ln, nil
}

// attach records the hijacked connection (and the tunnel peer) of tc so
// Close can end them; false if the proxy closed meanwhile, in which case the
// caller closes them.
func (p *Proxy) attach(tc *trackedConn, conn, peer net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	tc.Conn = conn
	tc.peer = peer
	return true
}

// startLocked starts the HTTP/1.1 server that serves intercepted
// connections. p.mu must be held.
func (p *Proxy) startLocked() {
	p.ln = newConnListener()
	p.srv = &http.Server{
		Handler:           http.HandlerFunc(p.serveIntercepted),
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		// No HTTP/2: interceptConfig offers http/1.1 only.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if tc := trackedOf(c); tc != nil {
				return context.WithValue(ctx, targetKey{}, tc.host)
			}
			return ctx
		},
		ConnState: func(c net.Conn, s http.ConnState) {
			// StateClosed comes after the handler returned; StateHijacked
			// hands the connection to Handler.
			if s == http.StateClosed || s == http.StateHijacked {
				if tc := trackedOf(c); tc != nil {
					tc.release()
				}
			}
		},
		// TLS handshake failures (a client that does not trust the CA, an
		// SNI mismatch) are logged here.
		ErrorLog: slog.NewLogLogger(p.logger().Handler(), slog.LevelWarn),
	}
	srv, ln := p.srv, p.ln
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.logger().Error("mitm: intercept server stopped", "err", err)
		}
	}()
}

func (p *Proxy) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if p.Dial != nil {
		return p.Dial(ctx, network, addr)
	}
	d := net.Dialer{Timeout: dialTimeout}
	return d.DialContext(ctx, network, addr)
}

func (p *Proxy) handler() http.Handler {
	if p.Handler != nil {
		return p.Handler
	}
	return http.NotFoundHandler()
}

func (p *Proxy) logger() *slog.Logger {
	if p.Logger != nil {
		return p.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// hijack takes over the client connection of w. Bytes the client sent after
// the CONNECT request without waiting for the reply (a pipelined
// ClientHello) are kept in front of the connection, and deadlines the proxy
// listener's server may have set are cleared.
func hijack(w http.ResponseWriter) (net.Conn, error) {
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, err
	}
	if err := c.SetDeadline(time.Time{}); err != nil {
		c.Close()
		return nil, err
	}
	if n := brw.Reader.Buffered(); n > 0 {
		buf, _ := brw.Reader.Peek(n)
		return &prefixConn{Conn: c, r: io.MultiReader(bytes.NewReader(bytes.Clone(buf)), c)}, nil
	}
	return c, nil
}

// writeEstablished sends the CONNECT success reply (RFC 9110 §9.3.6: any
// 2xx; no body, no Content-Length).
func writeEstablished(c net.Conn) error {
	if err := c.SetWriteDeadline(time.Now().Add(replyTimeout)); err != nil {
		return err
	}
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return err
	}
	return c.SetWriteDeadline(time.Time{})
}

// prefixConn is a connection whose first bytes were already read.
type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// trackedConn is one hijacked client connection the Proxy owns. It is the
// net.Conn under the TLS server of an intercepted connection, and carries
// the CONNECT host to the internal server.
type trackedConn struct {
	net.Conn // set by attach
	peer     net.Conn
	p        *Proxy
	host     string
	once     sync.Once
}

// closeAll closes the client connection and the tunnel peer.
func (tc *trackedConn) closeAll() {
	if tc.Conn != nil {
		tc.Conn.Close()
	}
	if tc.peer != nil {
		tc.peer.Close()
	}
}

// release frees tc's slot and tells Close its goroutines are done. It is
// called exactly once per acquire in effect; later calls do nothing.
func (tc *trackedConn) release() {
	tc.once.Do(func() {
		tc.p.mu.Lock()
		delete(tc.p.conns, tc)
		tc.p.mu.Unlock()
		tc.p.wg.Done()
	})
}

// trackedOf returns the trackedConn under an intercepted connection.
func trackedOf(c net.Conn) *trackedConn {
	if t, ok := c.(*tls.Conn); ok {
		tc, _ := t.NetConn().(*trackedConn)
		return tc
	}
	return nil
}

// connListener is a net.Listener whose connections are handed to it by
// Proxy.intercept, so one http.Server serves every intercepted connection.
type connListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newConnListener() *connListener {
	return &connListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

// handoff passes c to Accept; false if the listener is closed.
func (l *connListener) handoff(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return interceptAddr{} }

// interceptAddr names the in-process listener of intercepted connections.
type interceptAddr struct{}

func (interceptAddr) Network() string { return "mitm" }
func (interceptAddr) String() string  { return "mitm" }
