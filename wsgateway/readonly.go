package wsgateway

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"

	"github.com/confabhq/confab/mesh"
)

// ModeReadOnly: a watcher (the browser page, a dashboard script) that holds
// the gateway's read-only token. It may read — info, who, history,
// subscribe, unsubscribe, ping, search — and nothing else: join, leave,
// send and publish are answered with CodeReadOnly, auth with
// CodeUnsupported. Served by ReadOnly, never by a Server made with New.
const ModeReadOnly Mode = "readonly"

// CodeReadOnly answers a request that would change the node on a read-only
// connection.
const CodeReadOnly = "read_only"

// MinTokenLen is the shortest read-only token NewReadOnly accepts, in bytes.
const MinTokenLen = 16

// errReadOnly is what the read-only backend returns for every write; the
// connection maps it to an error frame with CodeReadOnly.
var errReadOnly = &Error{Code: CodeReadOnly, Message: "this connection is read-only"}

// ReadOnlyConfig holds what only a read-only gateway needs.
type ReadOnlyConfig struct {
	// Token is the shared secret a watcher presents, as the "token" query
	// parameter of the WebSocket URL (browsers cannot set headers on a
	// WebSocket) or as "Authorization: Bearer <token>". It is compared in
	// constant time. Required, at least MinTokenLen bytes.
	Token string
	// Hide, if set, reports channels that must never be shown: they vanish
	// from info and who, subscriptions skip them and history on them is
	// answered not_joined. A rendezvous hides private ("~") channels, which
	// only a member's own node may show.
	Hide func(channel string) bool
}

// ReadOnly serves the gateway protocol in ModeReadOnly over HTTP: it checks
// the token and the origin, then hands the connection to an ordinary
// Server whose backend refuses every write.
type ReadOnly struct {
	s     *Server
	token [sha256.Size]byte
}

// NewReadOnly returns a read-only gateway over cfg.Backend. cfg.Mode must
// be empty or ModeReadOnly; the other fields take the defaults listed on
// DefaultConfig. It starts nothing; the caller mounts Handler and must call
// Close.
func NewReadOnly(cfg Config, ro ReadOnlyConfig) (*ReadOnly, error) {
	if cfg.Mode != "" && cfg.Mode != ModeReadOnly {
		return nil, fmt.Errorf("wsgateway: new read-only: mode %q", cfg.Mode)
	}
	if len(ro.Token) < MinTokenLen {
		return nil, fmt.Errorf("wsgateway: new read-only: token shorter than %d bytes", MinTokenLen)
	}
	if cfg.Backend == nil {
		return nil, errors.New("wsgateway: new read-only: backend is required")
	}
	cfg.Backend = &readOnlyBackend{b: cfg.Backend, hide: ro.Hide}
	// New validates and fills a local-mode config; the mode is switched
	// afterwards so the welcome says "readonly" and send is refused. The
	// connection code branches only on ModeLocal and ModeRemote, and the
	// backend refuses every write whatever the mode.
	cfg.Mode = ModeLocal
	s, err := New(cfg)
	if err != nil {
		return nil, err
	}
	s.cfg.Mode = ModeReadOnly
	s.upgrader.CheckOrigin = sameOrigin
	return &ReadOnly{s: s, token: sha256.Sum256([]byte(ro.Token))}, nil
}

// Handler returns the HTTP handler that upgrades requests on any path to
// read-only gateway connections. A request without the token gets 401; a
// browser request from another origin (its Origin host differs from the
// request's Host) gets 403. Requests without an Origin header come from
// non-browser clients and need only the token.
func (r *ReadOnly) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !sameOrigin(req) {
			http.Error(w, "cross-origin request refused", http.StatusForbidden)
			return
		}
		if !r.authorized(req) {
			http.Error(w, "read-only token required", http.StatusUnauthorized)
			return
		}
		r.s.serveHTTP(w, req)
	})
}

// Close closes every connection and waits for them (see Server.Close).
func (r *ReadOnly) Close() error { return r.s.Close() }

func (r *ReadOnly) authorized(req *http.Request) bool {
	tok := req.URL.Query().Get("token")
	if tok == "" {
		if a := req.Header.Get("Authorization"); strings.HasPrefix(a, "Bearer ") {
			tok = strings.TrimPrefix(a, "Bearer ")
		}
	}
	if tok == "" {
		return false
	}
	// Hashing first makes the comparison constant-time in the length too.
	got := sha256.Sum256([]byte(tok))
	return subtle.ConstantTimeCompare(got[:], r.token[:]) == 1
}

// sameOrigin accepts requests without an Origin header (not from a browser)
// and browser requests whose Origin host equals the request's Host.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return false
	}
	return strings.EqualFold(u.Host, r.Host)
}

// readOnlyBackend refuses every write and hides the channels hide reports.
type readOnlyBackend struct {
	b    Backend
	hide func(string) bool
}

func (r *readOnlyBackend) hidden(ch string) bool { return r.hide != nil && r.hide(ch) }

func (r *readOnlyBackend) visible(chs []string) []string {
	if r.hide == nil {
		return chs
	}
	return slices.DeleteFunc(slices.Clone(chs), r.hide)
}

func (r *readOnlyBackend) Info() mesh.Info {
	i := r.b.Info()
	i.Channels = r.visible(i.Channels)
	return i
}

func (r *readOnlyBackend) Join(context.Context, string) error  { return errReadOnly }
func (r *readOnlyBackend) Leave(context.Context, string) error { return errReadOnly }

func (r *readOnlyBackend) Send(context.Context, string, string, string, string) (mesh.Record, error) {
	return mesh.Record{}, errReadOnly
}

func (r *readOnlyBackend) Publish(context.Context, *mesh.Envelope) (mesh.Record, error) {
	return mesh.Record{}, errReadOnly
}

func (r *readOnlyBackend) Subscribe(channels []string, queue int) Subscription {
	if r.hide == nil {
		return r.b.Subscribe(channels, queue)
	}
	// "Every channel" would include hidden ones: name the visible joined
	// channels instead (channels joined later are not followed).
	if len(channels) == 0 {
		channels = r.b.Info().Channels
	}
	if channels = r.visible(channels); len(channels) == 0 {
		return newEmptySub()
	}
	return r.b.Subscribe(channels, queue)
}

func (r *readOnlyBackend) After(ctx context.Context, ch, cursor string, limit int) ([]mesh.Record, error) {
	if r.hidden(ch) {
		return nil, fmt.Errorf("%w: %s", mesh.ErrNotJoined, ch)
	}
	return r.b.After(ctx, ch, cursor, limit)
}

func (r *readOnlyBackend) Before(ctx context.Context, ch, cursor string, limit int) ([]mesh.Record, error) {
	if r.hidden(ch) {
		return nil, fmt.Errorf("%w: %s", mesh.ErrNotJoined, ch)
	}
	return r.b.Before(ctx, ch, cursor, limit)
}

func (r *readOnlyBackend) Who(ctx context.Context, ch string) []mesh.Peer {
	if r.hidden(ch) {
		return nil
	}
	peers := r.b.Who(ctx, ch)
	if r.hide == nil {
		return peers
	}
	out := make([]mesh.Peer, len(peers))
	for i, p := range peers {
		p.Channels = r.visible(p.Channels)
		out[i] = p
	}
	return out
}

// Search passes a search to the backend's index (SearchBackend), leaving out
// hidden channels. Without an index it answers unsupported, as a Server does.
func (r *readOnlyBackend) Search(ctx context.Context, query, channel string, limit int) ([]mesh.Record, error) {
	sb, ok := r.b.(SearchBackend)
	if !ok {
		return nil, &Error{Code: CodeUnsupported, Message: "this node has no search index"}
	}
	if r.hidden(channel) {
		return nil, fmt.Errorf("%w: %s", mesh.ErrNotJoined, channel)
	}
	recs, err := sb.Search(ctx, query, channel, limit)
	if err != nil || r.hide == nil {
		return recs, err
	}
	return slices.DeleteFunc(recs, func(rec mesh.Record) bool { return rec.Env == nil || r.hide(rec.Env.Channel) }), nil
}

var _ SearchBackend = (*readOnlyBackend)(nil)

// emptySub is a subscription to nothing: its channel closes on Close.
type emptySub struct {
	ch   chan mesh.Record
	once sync.Once
}

func newEmptySub() *emptySub              { return &emptySub{ch: make(chan mesh.Record)} }
func (e *emptySub) C() <-chan mesh.Record { return e.ch }
func (e *emptySub) Err() error            { return nil }
func (e *emptySub) Close()                { e.once.Do(func() { close(e.ch) }) }
