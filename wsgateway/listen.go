package wsgateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
)

// Serve serves the gateway protocol on ln (in ModeRemote, a TCP listener of
// its own: never libp2p's) until Close, then returns nil; Close closes ln.
// After Close it returns ErrServerClosed at once. The HTTP server drops a
// connection whose upgrade request has not fully arrived within
// HandshakeTimeout (Stats.HandshakeTimeouts) and keep-alive connections
// idle that long.
func (s *Server) Serve(ln net.Listener) error {
	us := &unixServer{hs: s.httpServer()}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.servers = append(s.servers, us)
	s.mu.Unlock()
	s.log.Info("gateway listening", "addr", ln.Addr().String())
	err := us.hs.Serve(handshakeListener{ln, s})
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("wsgateway: serve %s: %w", ln.Addr(), err)
}

// httpServer is the HTTP server of Serve and ServeUnix.
func (s *Server) httpServer() *http.Server {
	return &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: s.cfg.HandshakeTimeout,
		IdleTimeout:       s.cfg.HandshakeTimeout,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, handshakeKey{}, c)
		},
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
}

type handshakeKey struct{}

// handshakeListener hands the HTTP server connections that count a read
// timeout before the first request reached the handler: net/http gives up
// on a request whose headers miss ReadHeaderTimeout without telling anyone.
type handshakeListener struct {
	net.Listener
	s *Server
}

func (l handshakeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &handshakeConn{Conn: c, s: l.s}, nil
}

// handshakeConn is one accepted connection. Once a request reaches the
// handler the connection is past its handshake, and later read timeouts
// (net/http aborting its background read, the gateway's pong deadline) are
// not handshake timeouts.
type handshakeConn struct {
	net.Conn
	s       *Server
	served  atomic.Bool // a request reached the handler
	counted atomic.Bool // this connection's handshake timeout was counted
}

func (c *handshakeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil && !c.served.Load() && isTimeout(err) && c.counted.CompareAndSwap(false, true) {
		c.s.metrics.handshakeTimeouts.Add(1)
	}
	return n, err
}

// served marks r's connection as past its handshake.
func served(r *http.Request) {
	if c, ok := r.Context().Value(handshakeKey{}).(*handshakeConn); ok {
		c.served.Store(true)
	}
}
