package wsgateway

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/libp2p/go-libp2p/core/crypto"
	"go.uber.org/goleak"

	"github.com/confabhq/confab/mesh"
)

// seqBackend adds NextSeq (and seq enforcement on Publish, as mesh does)
// to memBackend.
type seqBackend struct{ *memBackend }

func (b seqBackend) NextSeq(ctx context.Context, channel, author string) (uint64, error) {
	var n uint64
	for _, r := range b.all(channel) {
		if r.Env.From == author && r.Env.Seq > n {
			n = r.Env.Seq
		}
	}
	return n + 1, nil
}

func (b seqBackend) Publish(ctx context.Context, env *mesh.Envelope) (mesh.Record, error) {
	if err := env.Verify(); err != nil { // Backend.Publish verifies first, as mesh.Publish does
		return mesh.Record{}, err
	}
	if n, _ := b.NextSeq(ctx, env.Channel, env.From); env.Seq != n {
		return mesh.Record{}, mesh.ErrSeqGap
	}
	return b.memBackend.Publish(ctx, env)
}

type remoteHarness struct {
	srv *Server
	b   seqBackend
	url string
}

func startRemote(t *testing.T, tweak func(*Config)) *remoteHarness {
	t.Helper()
	b := seqBackend{newMemBackend(t)}
	cfg := DefaultConfig()
	cfg.Backend = b
	cfg.Mode = ModeRemote
	if tweak != nil {
		tweak(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { srv.Close(); hs.Close() })
	return &remoteHarness{srv: srv, b: b, url: "ws" + strings.TrimPrefix(hs.URL, "http") + "/"}
}

func (h *remoteHarness) dial(t *testing.T) *Client {
	t.Helper()
	c, err := Dial(ctx(t), h.url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// authed dials and authenticates with a fresh key.
func (h *remoteHarness) authed(t *testing.T, secret string) (*Client, crypto.PrivKey, string) {
	t.Helper()
	k, id := newKey(t)
	c := h.dial(t)
	if err := c.Authenticate(ctx(t), k, secret); err != nil {
		t.Fatalf("authenticate: %v", err)
	}
	return c, k, id
}

func signed(t *testing.T, k crypto.PrivKey, ch string, seq uint64, content string) *mesh.Envelope {
	t.Helper()
	e := &mesh.Envelope{Channel: ch, Name: "thin", Seq: seq, TS: time.Now().UnixMilli(), Kind: "msg", Content: content}
	if err := e.Sign(k); err != nil {
		t.Fatal(err)
	}
	return e
}

// closeCode waits for the connection to end and returns Err's code.
func waitClosed(t *testing.T, c *Client) string {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		t.Fatal("connection not closed")
	}
	return code(c.Err())
}

func TestRemoteAuthAndPublish(t *testing.T) {
	leakCheck(t)
	h := startRemote(t, nil)
	c := h.dial(t)
	if got := c.Welcome().Mode; got != ModeRemote {
		t.Fatalf("welcome mode %q", got)
	}
	// Before auth only auth is accepted; the connection survives.
	if err := c.Join(ctx(t), "#a"); code(err) != CodeUnauthorized {
		t.Fatalf("join before auth: %v, want unauthorized", err)
	}
	k, id := newKey(t)
	if err := c.Authenticate(ctx(t), k, ""); err != nil {
		t.Fatal(err)
	}
	if err := c.Authenticate(ctx(t), k, ""); code(err) != CodeUnauthorized {
		t.Errorf("second auth: %v, want unauthorized", err)
	}
	if err := c.Join(ctx(t), "#a"); err != nil {
		t.Fatal(err)
	}
	events, err := c.Subscribe(ctx(t), nil, "")
	if err != nil {
		t.Fatal(err)
	}
	n, err := c.NextSeq(ctx(t), "#a", "")
	if err != nil || n != 1 {
		t.Fatalf("NextSeq = %d, %v; want 1", n, err)
	}
	env := signed(t, k, "#a", 1, "hello")
	ack, err := c.Publish(ctx(t), env)
	if err != nil {
		t.Fatal(err)
	}
	if ack.ID != env.ID || ack.Seq != 1 {
		t.Errorf("ack %+v", ack)
	}
	ev := collect(t, events, 1)[0]
	if ev.Record.Env.From != id || ev.Record.Env.ID != env.ID {
		t.Errorf("event from %s id %s, want %s %s", ev.Record.Env.From, ev.Record.Env.ID, id, env.ID)
	}

	// seq_gap carries the next seq.
	_, err = c.Publish(ctx(t), signed(t, k, "#a", 5, "skip"))
	var pe *Error
	if !errors.As(err, &pe) || pe.Code != CodeSeqGap || pe.Next != 2 {
		t.Errorf("gap publish: %v (%+v), want seq_gap next 2", err, pe)
	}
	// Someone else's envelope, even validly signed, is refused.
	other, _ := newKey(t)
	if _, err := c.Publish(ctx(t), signed(t, other, "#a", 1, "forged")); code(err) != CodeUnauthorized {
		t.Errorf("foreign publish: %v, want unauthorized", err)
	}
	// A tampered envelope fails verification.
	bad := signed(t, k, "#a", 2, "x")
	bad.Content = "y"
	if _, err := c.Publish(ctx(t), bad); code(err) != CodeBadSignature {
		t.Errorf("tampered publish: %v, want bad_signature", err)
	}
	if _, err := c.Send(ctx(t), "#a", "", "hi", ""); code(err) != CodeUnsupported {
		t.Errorf("send in remote mode: %v, want unsupported", err)
	}
	// Leave is per connection: the node keeps the channel.
	if err := c.Leave(ctx(t), "#a"); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(h.b.Info().Channels, "#a") {
		t.Error("remote leave made the node leave")
	}
	if err := c.Leave(ctx(t), "#a"); code(err) != CodeNotJoined {
		t.Errorf("second leave: %v", err)
	}
}

func TestRemoteAuthRefused(t *testing.T) {
	leakCheck(t)
	h := startRemote(t, func(c *Config) { c.Remote.JoinSecret = []byte("s3cret") })
	k, id := newKey(t)
	rawAuth := func(t *testing.T, c *Client, sig []byte, peerID, secret string) error {
		_, err := expect[*OK](c.call(ctx(t), func(req string) Frame {
			return &Auth{Req: req, Peer: peerID, Sig: sig, Secret: secret}
		}))
		return err
	}
	first := h.dial(t)
	firstSig, _ := k.Sign(AuthBytes(first.Welcome().Nonce, first.Welcome().Node, id))
	tests := []struct {
		name string
		auth func(c *Client) error
	}{
		{"wrong secret", func(c *Client) error { return c.Authenticate(ctx(t), k, "nope") }},
		{"no secret", func(c *Client) error { return c.Authenticate(ctx(t), k, "") }},
		{"bad signature", func(c *Client) error {
			return rawAuth(t, c, make([]byte, 64), id, "s3cret")
		}},
		{"signed for another gateway", func(c *Client) error {
			sig, _ := k.Sign(AuthBytes(c.Welcome().Nonce, "12D3KooWRawPbxPtP1eZaJpumGnyWX2DcUyd3RQnydr3eAto4Az7", id))
			return rawAuth(t, c, sig, id, "s3cret")
		}},
		{"replayed nonce of another connection", func(c *Client) error {
			return rawAuth(t, c, firstSig, id, "s3cret")
		}},
		{"signature by another key", func(c *Client) error {
			other, _ := newKey(t)
			sig, _ := other.Sign(AuthBytes(c.Welcome().Nonce, c.Welcome().Node, id))
			return rawAuth(t, c, sig, id, "s3cret")
		}},
	}
	for _, tt := range tests {
		c := h.dial(t)
		if err := tt.auth(c); code(err) != CodeUnauthorized {
			t.Errorf("%s: %v, want unauthorized", tt.name, err)
		}
		if got := waitClosed(t, c); got != CodeUnauthorized {
			t.Errorf("%s: closed with %q, want unauthorized (4001)", tt.name, got)
		}
	}
	// The first connection's own nonce still works, once.
	if err := rawAuth(t, first, firstSig, id, "s3cret"); err != nil {
		t.Fatalf("good auth: %v", err)
	}
	if got := h.srv.Stats().AuthFailures; got != uint64(len(tests)) {
		t.Errorf("AuthFailures = %d, want %d", got, len(tests))
	}
}

func TestRemoteDisplaced(t *testing.T) {
	leakCheck(t)
	h := startRemote(t, nil)
	old, k, _ := h.authed(t, "")
	newer := h.dial(t)
	if err := newer.Authenticate(ctx(t), k, ""); err != nil {
		t.Fatal(err)
	}
	if got := waitClosed(t, old); got != CodeDisplaced {
		t.Errorf("old connection ended with %q (%v), want displaced", got, old.Err())
	}
	if err := newer.Join(ctx(t), "#a"); err != nil {
		t.Errorf("new connection: %v", err)
	}
	if got := h.srv.Stats().Displaced; got != 1 {
		t.Errorf("Displaced = %d", got)
	}
}

func TestRemoteAuthTimeout(t *testing.T) {
	leakCheck(t)
	h := startRemote(t, func(c *Config) { c.Remote.AuthTimeout = 100 * time.Millisecond })
	c := h.dial(t)
	if got := waitClosed(t, c); got != CodeAuthTimeout && got != CodeUnauthorized {
		t.Errorf("idle unauthenticated connection ended with %q (%v), want auth_timeout", got, c.Err())
	}
	// An authenticated one is not timed out.
	a, _, _ := h.authed(t, "")
	time.Sleep(300 * time.Millisecond) // longer than AuthTimeout: nothing must happen
	if err := a.Join(ctx(t), "#a"); err != nil {
		t.Errorf("authenticated connection after AuthTimeout: %v", err)
	}
}

func TestRemoteLimits(t *testing.T) {
	leakCheck(t)
	h := startRemote(t, func(c *Config) {
		c.Remote.MaxConnsPerIP = 3
		c.Remote.Rate = 0.001
		c.Remote.Burst = 4
		c.Remote.MaxJoins = 2
		c.MaxBadFrames = 3
	})
	c, _, _ := h.authed(t, "")
	// Per-IP cap: 3 connections from 127.0.0.1, then 429.
	h.dial(t)
	extra := h.dial(t)
	if _, err := Dial(ctx(t), h.url); err == nil || !strings.Contains(err.Error(), "429") {
		t.Errorf("dial over MaxConnsPerIP: %v, want HTTP 429", err)
	}
	extra.Close()
	waitFor(t, "slot released", func() bool { return h.srv.Stats().Conns < 3 })
	// MaxJoins, then the rate (burst 4: two joins, one refused join and one
	// more request are allowed; the next is rate limited).
	for i, want := range []string{"", "", CodePolicy, "", CodeRateLimited} {
		ch := []string{"#a", "#b", "#c", "#a", "#b"}[i]
		if err := c.Join(ctx(t), ch); (err == nil) != (want == "") || (err != nil && code(err) != want) {
			t.Errorf("join %d (%s): %v, want %q", i, ch, err, want)
		}
	}
	if got := h.srv.Stats().RateLimited; got != 1 {
		t.Errorf("RateLimited = %d", got)
	}
	// Ping is free and the connection is alive.
	ws := rawRemote(t, h.url, nil)
	for i := 0; i < 3; i++ {
		ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"nope","req":"x"}`))
		if f := readFrame(t, ws); f.(*ErrorFrame).Code != CodeUnknownType {
			t.Fatalf("bad frame %d: %+v", i, f)
		}
	}
	ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"join","req":"x","channel":"#a"}`))
	if f := readFrame(t, ws); f.(*ErrorFrame).Code != CodePolicy {
		t.Errorf("4th bad frame (unauthorized join): %+v, want policy", f)
	}
}

// rawRemote opens a bare WebSocket to url with hdr and reads the welcome.
func rawRemote(t *testing.T, url string, hdr http.Header) *websocket.Conn {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.DialContext(ctx(t), url, hdr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	if f := readFrame(t, ws); f.Type() != TypeWelcome {
		t.Fatalf("first frame %q", f.Type())
	}
	return ws
}

func TestRemoteOrigin(t *testing.T) {
	leakCheck(t)
	h := startRemote(t, func(c *Config) { c.Remote.AllowedOrigins = []string{"https://app.example.com"} })
	host := strings.TrimSuffix(strings.TrimPrefix(h.url, "ws://"), "/")
	tests := []struct {
		origin string
		ok     bool
	}{
		{"", true},
		{"http://" + host, true},
		{"https://app.example.com", true},
		{"https://evil.example.com", false},
		{"null", false},
	}
	for _, tt := range tests {
		hdr := http.Header{}
		if tt.origin != "" {
			hdr.Set("Origin", tt.origin)
		}
		ws, resp, err := websocket.DefaultDialer.DialContext(ctx(t), h.url, hdr)
		if got := err == nil; got != tt.ok {
			t.Errorf("origin %q: err %v, want ok %v", tt.origin, err, tt.ok)
		}
		if !tt.ok && resp != nil && resp.StatusCode != http.StatusForbidden {
			t.Errorf("origin %q: status %d, want 403", tt.origin, resp.StatusCode)
		}
		if ws != nil {
			ws.Close()
		}
	}
}

func TestAuthBytesFixed(t *testing.T) {
	got := AuthBytes([]byte{1, 2}, "G", "CC")
	want := append([]byte("\x00\x00\x00\x16confab/gateway-auth/v1"), "\x00\x00\x00\x02\x01\x02\x00\x00\x00\x01G\x00\x00\x00\x02CC"...)
	if string(got) != string(want) {
		t.Errorf("AuthBytes = %q, want %q", got, want)
	}
}

// leakCheck verifies, after every other cleanup of t, that no goroutine
// started during the test is left.
func leakCheck(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// searchBackend adds a naive substring Search to memBackend.
type searchBackend struct{ seqBackend }

func (b searchBackend) Search(ctx context.Context, query, channel string, limit int) ([]mesh.Record, error) {
	var out []mesh.Record
	all := b.all()
	for i := len(all) - 1; i >= 0 && len(out) < limit; i-- {
		if r := all[i]; strings.Contains(r.Env.Content, query) && (channel == "" || r.Env.Channel == channel) {
			out = append(out, r)
		}
	}
	return out, nil
}

func TestSearchFrame(t *testing.T) {
	leakCheck(t)
	h := startRemote(t, func(c *Config) { c.Backend = searchBackend{c.Backend.(seqBackend)} })
	c, k, _ := h.authed(t, "")
	if err := c.Join(ctx(t), "#a"); err != nil {
		t.Fatal(err)
	}
	for i, s := range []string{"deploy now", "lunch", "deploy later"} {
		if _, err := c.Publish(ctx(t), signed(t, k, "#a", uint64(i+1), s)); err != nil {
			t.Fatal(err)
		}
	}
	recs, err := c.Search(ctx(t), "deploy", "#a", 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		got = append(got, r.Env.Content)
	}
	if want := []string{"deploy later", "deploy now"}; !slices.Equal(got, want) {
		t.Errorf("search = %q, want %q", got, want)
	}
	// Without an index: unsupported.
	h2 := startRemote(t, nil)
	c2, _, _ := h2.authed(t, "")
	if _, err := c2.Search(ctx(t), "x", "", 0); code(err) != CodeUnsupported {
		t.Errorf("search without index: %v", err)
	}
}
