package wsgateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/confabhq/confab/mesh"
)

type harness struct {
	srv  *Server
	b    *memBackend
	path string
	errc chan error
}

// start serves a memBackend on a unix socket in a temp dir. tweak may
// change the config. Cleanup closes the server and checks ServeUnix ended
// cleanly.
func start(t *testing.T, tweak func(*Config)) *harness {
	t.Helper()
	b := newMemBackend(t)
	cfg := DefaultConfig()
	cfg.Backend = b
	if tweak != nil {
		tweak(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{srv: srv, b: b, path: filepath.Join(t.TempDir(), "gw.sock"), errc: make(chan error, 1)}
	go func() { h.errc <- srv.ServeUnix(h.path) }()
	waitFor(t, "socket file", func() bool { _, err := os.Lstat(h.path); return err == nil })
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	h.srv.Close()
	// ErrServerClosed: Close won the race with ServeUnix's registration
	// (the socket file appears just before it).
	if err := <-h.errc; err != nil && !errors.Is(err, ErrServerClosed) {
		panic(fmt.Sprintf("ServeUnix: %v", err))
	}
	h.errc <- nil // stop is idempotent
}

func (h *harness) dial(t *testing.T) *Client {
	t.Helper()
	c, err := Dial(ctx(t), "unix://"+h.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dialRaw returns a bare WebSocket connection that has read the welcome.
func (h *harness) dialRaw(t *testing.T) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{NetDialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", h.path)
	}}
	ws, _, err := d.DialContext(ctx(t), "ws://localhost/", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	if f := readFrame(t, ws); f.Type() != TypeWelcome {
		t.Fatalf("first frame %q, want welcome", f.Type())
	}
	return ws
}

func readFrame(t *testing.T, ws *websocket.Conn) Frame {
	t.Helper()
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, data, err := ws.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	f, err := DecodeReply(data)
	if err != nil {
		t.Fatalf("decode %s: %v", data, err)
	}
	return f
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func code(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return fmt.Sprintf("not an *Error: %v", err)
}

func TestRoundTrip(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	h := start(t, nil)
	fi, err := os.Lstat(h.path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("socket mode %o, want 600", got)
	}
	c := h.dial(t)
	x := ctx(t)

	w := c.Welcome()
	if w.V != ProtocolVersion || w.Node != h.b.id || w.Name != "tester" || w.Mode != ModeLocal || len(w.Nonce) != 32 {
		t.Errorf("welcome %+v", w)
	}
	if err := c.Join(x, "#a"); err != nil {
		t.Fatalf("join: %v", err)
	}
	info, err := c.Info(x)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(h.b.Info(), info); diff != "" {
		t.Errorf("info (-want +got):\n%s", diff)
	}
	ack, err := c.Send(x, "#a", "", "hello", "")
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	stored := h.b.all("#a")
	if len(stored) != 1 || ack.ID != stored[0].Env.ID || ack.Seq != 1 || ack.Cursor != stored[0].Cursor || stored[0].Env.Kind != "msg" {
		t.Errorf("ack %+v, stored %+v", ack, stored)
	}
	// A thin client's own signed envelope.
	k, _ := newKey(t)
	env := &mesh.Envelope{Channel: "#a", Name: "thin", Seq: 1, TS: 1, Kind: "msg", Content: "signed by me", ReplyTo: ack.ID}
	if err := env.Sign(k); err != nil {
		t.Fatal(err)
	}
	pack, err := c.Publish(x, env)
	if err != nil || pack.ID != env.ID {
		t.Errorf("publish: %+v, %v", pack, err)
	}
	recs, more, err := c.History(x, "#a", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(h.b.all("#a"), recs); diff != "" || more {
		t.Errorf("history more=%v (-want +got):\n%s", more, diff)
	}
	recs, more, err = c.History(x, "#a", "", 1)
	if err != nil || len(recs) != 1 || recs[0].Env.ID != env.ID || !more {
		t.Errorf("history limit 1: %v more=%v err=%v", recs, more, err)
	}
	peers, err := c.Who(x, "")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(h.b.peers, peers, cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })); diff != "" {
		t.Errorf("who (-want +got):\n%s", diff)
	}
	if err := c.Leave(x, "#a"); err != nil {
		t.Fatal(err)
	}
	if err := c.Join(x, "#b"); err != nil {
		t.Fatal(err)
	}

	bad := *env
	bad.Content = "tampered"
	tests := []struct {
		name string
		call func() error
		want string
	}{
		{"send not joined", func() error { _, err := c.Send(x, "#a", "", "x", ""); return err }, CodeNotJoined},
		{"send bad channel", func() error { _, err := c.Send(x, "#Bad", "", "x", ""); return err }, CodeBadChannel},
		{"send bad kind", func() error { _, err := c.Send(x, "#b", "Bad Kind", "x", ""); return err }, CodeBadFrame},
		{"send too large", func() error {
			_, err := c.Send(x, "#a", "", strings.Repeat("x", mesh.MaxContentLen+1), "")
			return err
		}, CodeTooLarge},
		{"leave not joined", func() error { return c.Leave(x, "#a") }, CodeNotJoined},
		{"publish tampered", func() error { _, err := c.Publish(x, &bad); return err }, CodeBadSignature},
		{"history bad cursor", func() error { _, _, err := c.History(x, "#a", "zz", 1); return err }, CodeBadCursor},
		{"subscribe bad cursor", func() error { _, err := c.Subscribe(x, []string{"#a"}, "zz"); return err }, CodeBadCursor},
	}
	for _, tt := range tests {
		if got := code(tt.call()); got != tt.want {
			t.Errorf("%s: code %q, want %q", tt.name, got, tt.want)
		}
	}
	// The connection survived every error.
	if _, err := c.Info(x); err != nil {
		t.Fatalf("info after errors: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Info(x); !errors.Is(err, ErrClientClosed) {
		t.Errorf("info after close: %v, want ErrClientClosed", err)
	}
	h.stop()
}

func TestRawFrames(t *testing.T) {
	h := start(t, nil)
	ws := h.dialRaw(t)
	tests := []struct {
		in   string
		want Frame
	}{
		{`{"type":"ping","req":"p"}`, &Pong{Req: "p"}},
		{`{"type":"ping"}`, &Pong{}},
		{`{"type":"auth","req":"a","peer":"x","sig":"AAAA"}`, &ErrorFrame{Req: "a", Code: CodeUnsupported}},
		{`{"type":"unsubscribe","req":"u"}`, &OK{Req: "u"}},
		{`{"type":"who","req":"w","channel":"#a"}`, &WhoReply{Req: "w", Peers: []WirePeer{PeerToWire(h.b.peers[0])}}},
		{`{"type":"history","req":"h","channel":"#a","limit":5}`, &HistoryReply{Req: "h", Records: []mesh.Record{}}},
	}
	for _, tt := range tests {
		if err := ws.WriteMessage(websocket.TextMessage, []byte(tt.in)); err != nil {
			t.Fatal(err)
		}
		got := readFrame(t, ws)
		if diff := cmp.Diff(tt.want, got, cmp.FilterPath(func(p cmp.Path) bool {
			return p.Last().String() == ".Message"
		}, cmp.Ignore())); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tt.in, diff)
		}
	}
}

func TestBadFrames(t *testing.T) {
	const maxBad = 5
	h := start(t, func(c *Config) { c.MaxBadFrames = maxBad })
	ws := h.dialRaw(t)
	type bad struct {
		in     string
		binary bool
		req    string
		code   string
	}
	bads := []bad{
		{in: `not json`, code: CodeBadFrame},
		{in: `{"type":"nope","req":"9"}`, req: "9", code: CodeUnknownType},
		{in: `{"type":"join","req":"1"}`, req: "1", code: CodeBadFrame},
		{in: `{"type":"join","channel":"#a"}`, code: CodeBadFrame},
		{in: `{"type":"join","req":"2","channel":"nohash"}`, req: "2", code: CodeBadChannel},
		{in: `{"type":"history","req":"3","channel":"#a","limit":-1}`, req: "3", code: CodeBadFrame},
		{in: `{"type":"ok","req":"4"}`, req: "4", code: CodeUnknownType},
		{in: `{"req":"5"}`, req: "5", code: CodeBadFrame},
		{in: `[1,2]`, code: CodeBadFrame},
		{in: `{"type":"join","req":"6","channel":"#a"}`, binary: true, code: CodeBadFrame},
	}
	write := func(b bad) {
		t.Helper()
		mt := websocket.TextMessage
		if b.binary {
			mt = websocket.BinaryMessage
		}
		if err := ws.WriteMessage(mt, []byte(b.in)); err != nil {
			t.Fatal(err)
		}
	}
	for i, b := range bads {
		write(b)
		got, ok := readFrame(t, ws).(*ErrorFrame)
		if !ok || got.Code != b.code || got.Req != b.req {
			t.Errorf("%s: got %+v, want code %q req %q", b.in, got, b.code, b.req)
		}
		if i%maxBad == maxBad-1 { // a good frame resets the count
			write(bad{in: `{"type":"info","req":"i"}`})
			if f := readFrame(t, ws); f.Type() != TypeInfo {
				t.Fatalf("info after bad frames: %+v", f)
			}
		}
	}
	for range maxBad {
		write(bads[0])
		readFrame(t, ws)
	}
	write(bads[0])
	if got, ok := readFrame(t, ws).(*ErrorFrame); !ok || got.Code != CodePolicy {
		t.Errorf("bad frame %d: %+v, want policy error", maxBad+1, got)
	}
	_, _, err := ws.ReadMessage()
	if !websocket.IsCloseError(err, ClosePolicy) {
		t.Errorf("after policy error: %v, want close %d", err, ClosePolicy)
	}
}

func TestTooLarge(t *testing.T) {
	const max = 4096
	h := start(t, func(c *Config) { c.MaxFrame = max })
	ws := h.dialRaw(t)
	big := `{"type":"send","req":"1","channel":"#a","content":"` + strings.Repeat("x", max+1000) + `"}`
	if err := ws.WriteMessage(websocket.TextMessage, []byte(big)); err != nil {
		t.Fatal(err)
	}
	if got, ok := readFrame(t, ws).(*ErrorFrame); !ok || got.Code != CodeTooLarge {
		t.Errorf("got %+v, want too_large", got)
	}
	_, _, err := ws.ReadMessage()
	if !websocket.IsCloseError(err, CloseTooLarge) {
		t.Errorf("after too_large: %v, want close %d", err, CloseTooLarge)
	}

	// The client maps the close to an *Error too.
	c := h.dial(t)
	_, err = c.Send(ctx(t), "#a", "", strings.Repeat("y", max), "")
	if got := code(err); got != CodeTooLarge {
		t.Errorf("client send over MaxFrame: %v", err)
	}
}

// collect reads events until it holds n, or the channel closes.
func collect(t *testing.T, ch <-chan Event, n int) []Event {
	t.Helper()
	var got []Event
	timeout := time.After(20 * time.Second)
	for len(got) < n {
		select {
		case e, ok := <-ch:
			if !ok {
				return got
			}
			got = append(got, e)
		case <-timeout:
			t.Fatalf("got %d events, want %d", len(got), n)
		}
	}
	return got
}

func TestSubscribeReplayThenLive(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	h := start(t, func(c *Config) { c.ReplayPage = 7 })
	x := ctx(t)
	for _, ch := range []string{"#a", "#b", "#c"} {
		h.b.Join(x, ch)
	}
	for i := range 120 {
		h.b.Send(x, []string{"#a", "#b", "#c"}[i%3], "msg", fmt.Sprint("old ", i), "")
	}
	since := h.b.all()[30].Cursor

	// Concurrent senders while the subscription replays and goes live.
	const live = 300
	var wg sync.WaitGroup
	startSend := make(chan struct{})
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-startSend
			for i := range live / 3 {
				if _, err := h.b.Send(x, []string{"#a", "#b", "#c"}[w], "msg", fmt.Sprint("new ", i), ""); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	c := h.dial(t)
	close(startSend)
	events, err := c.Subscribe(x, []string{"#a", "#b"}, since)
	if err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	var want []mesh.Record
	for _, r := range h.b.all("#a", "#b") {
		if r.Cursor > since {
			want = append(want, r)
		}
	}
	got := collect(t, events, len(want))
	var gotRecs []mesh.Record
	sawLive := false
	for i, e := range got {
		gotRecs = append(gotRecs, e.Record)
		if e.Replay && sawLive {
			t.Errorf("event %d: replay after live", i)
		}
		sawLive = sawLive || !e.Replay
	}
	if diff := cmp.Diff(want, gotRecs); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	// Nothing more arrives: no duplicates after the expected set.
	c.Send(x, "#c", "", "other channel", "")
	ack, err := c.Send(x, "#a", "", "marker", "")
	if err != nil {
		t.Fatal(err)
	}
	if e := collect(t, events, 1); len(e) != 1 || e[0].Record.Cursor != ack.Cursor || e[0].Replay {
		t.Errorf("after catch-up got %+v, want live marker %s", e, ack.Cursor)
	}

	// Second subscribe on the same connection is refused; unsubscribe ends it.
	if _, err := c.Subscribe(x, nil, ""); code(err) != CodeAlreadySubscribed {
		t.Errorf("second subscribe: %v", err)
	}
	if err := c.Unsubscribe(x); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-events; ok {
		t.Error("event channel still open after unsubscribe")
	}

	// since empty: live only, over every joined channel.
	events, err = c.Subscribe(x, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	ack, _ = c.Send(x, "#c", "", "live only", "")
	if e := collect(t, events, 1); len(e) != 1 || e[0].Record.Cursor != ack.Cursor {
		t.Errorf("live-only got %+v, want %s", e, ack.Cursor)
	}
	c.Close()
	h.stop()
}

func TestSlowConsumerResumes(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	h := start(t, func(c *Config) { c.SubscriptionQueue = 8; c.SendQueue = 8 })
	x := ctx(t)
	h.b.Join(x, "#a")
	c := h.dial(t)
	events, err := c.Subscribe(x, []string{"#a"}, "")
	if err != nil {
		t.Fatal(err)
	}
	// Nobody reads events: the client buffer, the socket, the send queue and
	// then the subscription queue fill up.
	content := strings.Repeat("z", 4096)
	for h.b.slowDrops.Load() == 0 && h.srv.Stats().SlowSubscribers == 0 {
		if _, err := h.b.Send(x, "#a", "msg", content, ""); err != nil {
			t.Fatal(err)
		}
	}
	var last string
	n := 0
	for e := range events {
		last = e.Record.Cursor
		n++
	}
	var re *Error
	if !errors.As(c.Err(), &re) || re.Code != CodeResume || re.Cursor != last || last == "" {
		t.Fatalf("after %d events Err() = %v, want resume at %q", n, c.Err(), last)
	}
	// Resume on a new connection: the rest, no gap, no duplicate.
	c.Close()
	c2 := h.dial(t)
	events, err = c2.Subscribe(x, []string{"#a"}, re.Cursor)
	if err != nil {
		t.Fatal(err)
	}
	all := h.b.all("#a")
	got := collect(t, events, len(all)-n)
	if len(got) != len(all)-n || got[0].Record.Cursor <= re.Cursor || got[len(got)-1].Record.Cursor != all[len(all)-1].Cursor {
		t.Errorf("resume got %d events, want %d", len(got), len(all)-n)
	}
	c2.Close()
	h.stop()
}

func TestCloseClosesConnections(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	h := start(t, nil)
	x := ctx(t)
	h.b.Join(x, "#a")
	c1, c2 := h.dial(t), h.dial(t)
	events, err := c1.Subscribe(x, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Info(x); err != nil {
		t.Fatal(err)
	}
	h.stop()
	if _, ok := <-events; ok {
		t.Error("event after server close")
	}
	if got := code(c1.Err()); got != CodeClosed {
		t.Errorf("c1.Err() = %v, want code closed", c1.Err())
	}
	if _, err := c2.Info(x); err == nil {
		t.Error("c2 still works after server close")
	}
	if _, err := os.Lstat(h.path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after Close: %v", err)
	}
	c1.Close()
	c2.Close()
	if err := h.srv.ServeUnix(h.path + "2"); !errors.Is(err, ErrServerClosed) {
		t.Errorf("ServeUnix after Close: %v", err)
	}
}

func TestServeUnixStaleSocket(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gw.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close() // a dead server's socket file stays behind

	b := newMemBackend(t)
	srv, err := New(Config{Backend: b})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeUnix(path) }()
	waitFor(t, "serving", func() bool {
		c, err := Dial(ctx(t), "unix://"+path)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	// A live socket is not taken over.
	srv2, _ := New(Config{Backend: b})
	if err := srv2.ServeUnix(path); !errors.Is(err, ErrSocketInUse) {
		t.Errorf("second server: %v, want ErrSocketInUse", err)
	}
	srv2.Close()
	// Nor is a regular file.
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	if err := srv2.ServeUnix(file); err == nil || errors.Is(err, ErrSocketInUse) {
		t.Errorf("regular file: %v", err)
	}
	srv.Close()
	if err := <-errc; err != nil {
		t.Errorf("ServeUnix: %v", err)
	}
}

func TestHandlerOverTCP(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	b := newMemBackend(t)
	srv, err := New(Config{Backend: b, MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	url := "ws" + strings.TrimPrefix(hs.URL, "http") + "/gw"
	c, err := Dial(ctx(t), url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Info(ctx(t)); err != nil {
		t.Fatal(err)
	}
	// MaxConns reached.
	if _, err := Dial(ctx(t), url); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("dial over MaxConns: %v", err)
	}
	c.Close()
	// A browser page (any Origin) is refused.
	waitFor(t, "connection released", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return srv.active == 0
	})
	hdr := http.Header{"Origin": {"http://evil.example"}}
	if _, resp, err := websocket.DefaultDialer.Dial(url, hdr); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("dial with Origin: %v", err)
	}
	srv.Close()
	hs.Close()
}

func TestConfig(t *testing.T) {
	b := newMemBackend(t)
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{Backend: b}, true},
		{"no backend", Config{}, false},
		{"remote", Config{Backend: b, Mode: ModeRemote}, true},
		{"remote bad origin", Config{Backend: b, Mode: ModeRemote, Remote: RemoteConfig{AllowedOrigins: []string{"evil"}}}, false},
		{"remote negative per-IP", Config{Backend: b, Mode: ModeRemote, Remote: RemoteConfig{MaxConnsPerIP: -1}}, false},
		{"bogus mode", Config{Backend: b, Mode: "bogus"}, false},
		{"tiny frame", Config{Backend: b, MaxFrame: 10}, false},
		{"pong shorter than ping", Config{Backend: b, PingInterval: time.Minute, PongTimeout: time.Second}, false},
		{"negative queue", Config{Backend: b, SendQueue: -1}, false},
	}
	for _, tt := range tests {
		s, err := New(tt.cfg)
		if got := err == nil; got != tt.ok {
			t.Errorf("%s: New err = %v, want ok %v", tt.name, err, tt.ok)
		}
		if s != nil {
			s.Close()
		}
	}
}
