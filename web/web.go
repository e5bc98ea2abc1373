package web

import (
	"crypto/rand"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/confabhq/confab/wsgateway"
)

//go:embed assets
var assets embed.FS

// GatewayPath is where the page opens its WebSocket.
const GatewayPath = "/v1"

// CSP is the Content-Security-Policy of every response: scripts, styles and
// connections only from the page's own origin (CSP 'self' covers ws: and
// wss: to the same host), images also as data: URLs, no framing, no <base>,
// no form posts.
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
	"img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'; object-src 'none'"

// Config configures a Server.
type Config struct {
	// Backend is the node to show (wsgateway.FromMesh(m)). Required.
	Backend wsgateway.Backend
	// Token is the read-only token the page must present; at least
	// wsgateway.MinTokenLen bytes. NewToken makes one, LoadToken keeps one
	// in a file. Required.
	Token string
	// Hide reports channels never to show (see HidePrivate). Default none.
	Hide func(channel string) bool
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Gateway tunes the read-only gateway (limits, timeouts); its Backend,
	// Logger and Mode are set by New. Zero value: wsgateway defaults.
	Gateway wsgateway.Config
}

// HidePrivate hides private channels and sessions ("~..."), which only a
// member's own node may show. A rendezvous sets Config.Hide to it.
func HidePrivate(channel string) bool { return strings.HasPrefix(channel, "~") }

// Server serves the page and its read-only gateway.
type Server struct {
	ro     *wsgateway.ReadOnly
	static http.Handler

	mu   sync.Mutex // guards hs, done
	hs   *http.Server
	done chan struct{}
}

// New builds the page's read-only gateway over cfg.Backend. It starts
// nothing; the caller mounts Handler (at the root of a host: the page uses
// absolute paths) and must call Close.
func New(cfg Config) (*Server, error) {
	if cfg.Backend == nil {
		return nil, errors.New("web: new: backend is required")
	}
	gc := cfg.Gateway
	gc.Backend, gc.Logger, gc.Mode = cfg.Backend, cfg.Logger, wsgateway.ModeReadOnly
	ro, err := wsgateway.NewReadOnly(gc, wsgateway.ReadOnlyConfig{Token: cfg.Token, Hide: cfg.Hide})
	if err != nil {
		return nil, fmt.Errorf("web: new: %w", err)
	}
	_, static := newStatic()
	return &Server{ro: ro, static: static}, nil
}

func newStatic() (fs.FS, http.Handler) {
	sub, _ := fs.Sub(assets, "assets")
	return sub, http.FileServerFS(sub)
}

// Handler serves the page at "/", its assets under "/assets/" and the
// read-only gateway at GatewayPath. Every response carries the security
// headers (CSP and friends).
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", CSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()")
		switch {
		case r.URL.Path == GatewayPath:
			s.ro.Handler().ServeHTTP(w, r)
		case r.Method != http.MethodGet && r.Method != http.MethodHead:
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		case r.URL.Path == "/" || r.URL.Path == "/index.html":
			h.Set("Cache-Control", "no-store")
			http.ServeFileFS(w, r, assets, "assets/index.html")
		case strings.HasPrefix(r.URL.Path, "/assets/") && !strings.HasSuffix(r.URL.Path, "/"):
			h.Set("Cache-Control", "no-cache")
			http.StripPrefix("/assets", s.static).ServeHTTP(w, r)
		default:
			http.NotFound(w, r)
		}
	})
}

// Close closes every gateway connection of the page and waits for them.
// Idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	hs, done := s.hs, s.done
	s.hs = nil
	s.mu.Unlock()
	var err error
	if hs != nil {
		err = hs.Close() // the listener and plain connections
		<-done
	}
	return errors.Join(err, s.ro.Close()) // hijacked WebSocket connections
}

// Listen serves the page on the TCP address addr until Close and returns
// the bound address. Call it at most once; Handler serves other listeners.
func (s *Server) Listen(addr string) (net.Addr, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("web: listen %s: %w", addr, err)
	}
	hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	s.mu.Lock()
	if s.hs != nil {
		s.mu.Unlock()
		l.Close()
		return nil, errors.New("web: listen: already listening")
	}
	s.hs, s.done = hs, done
	s.mu.Unlock()
	go func() {
		defer close(done)
		_ = hs.Serve(l) // returns http.ErrServerClosed after Close
	}()
	return l.Addr(), nil
}

// URL is the page's address on addr with the token in the fragment, which
// browsers never send to servers. Whoever holds it can read the node.
func URL(addr net.Addr, token string) string {
	return "http://" + addr.String() + "/#token=" + token
}

// NewToken returns a fresh random read-only token (32 random bytes, hex).
func NewToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// LoadToken reads the token kept in path, or creates the file (mode 0600)
// with a fresh token. A file readable by group or others is refused.
func LoadToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		tok := NewToken()
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return "", fmt.Errorf("web: token %s: %w", path, err)
		}
		_, err = f.WriteString(tok + "\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
			return "", fmt.Errorf("web: token %s: %w", path, err)
		}
		return tok, nil
	}
	if err != nil {
		return "", fmt.Errorf("web: token %s: %w", path, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("web: token %s: %w", path, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("web: token %s: mode %v is readable by others; chmod 600 it", path, fi.Mode().Perm())
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < wsgateway.MinTokenLen {
		return "", fmt.Errorf("web: token %s: shorter than %d characters", path, wsgateway.MinTokenLen)
	}
	return tok, nil
}
