package faults

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/wsgateway"
)

// gwFixture is an in-process agent with a local-mode gateway on a unix
// socket, configured with small limits so abuse reaches them quickly.
type gwFixture struct {
	a    *memAgent
	srv  *wsgateway.Server
	sock string
	cfg  wsgateway.Config
}

const gwChan = "#gw"

func startGateway(t *testing.T, tune func(*wsgateway.Config)) *gwFixture {
	t.Helper()
	dir := shortTemp(t)
	a := startMem(t, dir, "gwnode")
	if err := a.mesh.Join(context.Background(), gwChan); err != nil {
		t.Fatal(err)
	}
	cfg := wsgateway.DefaultConfig()
	cfg.Backend = wsgateway.FromMesh(a.mesh)
	tune(&cfg)
	srv, err := wsgateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := &gwFixture{a: a, srv: srv, sock: filepath.Join(dir, "gw.sock"), cfg: cfg}
	served := make(chan error, 1)
	go func() { served <- srv.ServeUnix(f.sock) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; err != nil {
			t.Errorf("ServeUnix: %v", err)
		}
	})
	waitFor(t, 10*time.Second, "gateway socket", func() bool {
		c, err := net.Dial("unix", f.sock)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return f
}

type gwConfig = wsgateway.Config

func (f *gwFixture) dial() (*wsgateway.Client, error) {
	return wsgateway.Dial(context.Background(), "unix://"+f.sock)
}

// rawWS opens a WebSocket on the gateway's socket without the Go client,
// so the test can misbehave.
func (f *gwFixture) rawWS() (*websocket.Conn, *http.Response, error) {
	d := websocket.Dialer{
		HandshakeTimeout: 5 * time.Second,
		NetDialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", f.sock)
		},
	}
	return d.Dial("ws://confab/", nil)
}

// honest checks that a well-behaved client can still connect, send and read
// history, recording its send in h.
func (f *gwFixture) honest(t *testing.T, h *History, key string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := wsgateway.Dial(ctx, "unix://"+f.sock)
	if err != nil {
		t.Fatalf("honest client cannot connect: %v", err)
	}
	defer c.Close()
	ack, err := c.Send(ctx, gwChan, "msg", key, "")
	if err != nil {
		t.Fatalf("honest send: %v", err)
	}
	h.Record(Op{Key: key, Via: "gwnode", Channel: gwChan, ID: ack.ID, Seq: ack.Seq, Acked: true})
	if _, _, err := c.History(ctx, gwChan, "", 10); err != nil {
		t.Fatalf("honest history: %v", err)
	}
}

func (f *gwFixture) check(t *testing.T, h *History) {
	t.Helper()
	h.Observe("gwnode", gwChan, ObsFromRecords(f.a.history(t, gwChan)))
	if r := h.Check(); !r.OK() {
		t.Fatalf("history check failed:\n%s", r)
	}
}

// readUntilClose reads frames until the connection ends and returns the
// error frames' codes and the close code (0 if none).
func readUntilClose(ws *websocket.Conn, d time.Duration) (codes []string, closeCode int) {
	ws.SetReadDeadline(time.Now().Add(d))
	for {
		_, b, err := ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return codes, ce.Code
			}
			return codes, 0
		}
		var ef struct{ Type, Code string }
		if json.Unmarshal(b, &ef) == nil && ef.Type == "error" {
			codes = append(codes, ef.Code)
		}
	}
}

// TestGatewayConnectionFlood: a local client opens far more connections
// than MaxConns. The excess is refused (HTTP 503, RefusedFull); once the
// abuser lets go, an honest client connects and works.
func TestGatewayConnectionFlood(t *testing.T) {
	noLeaks(t)
	const max = 8
	f := startGateway(t, func(c *wsgateway.Config) { c.MaxConns = max })
	h := NewHistory()
	n := pick(100, 2000)
	var (
		mu      sync.Mutex
		open    []*websocket.Conn
		refused int
		other   []error
	)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ws, resp, err := f.rawWS()
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				open = append(open, ws)
			case resp != nil && resp.StatusCode == http.StatusServiceUnavailable:
				refused++
			default:
				other = append(other, err)
			}
		}()
	}
	wg.Wait()
	st := f.srv.Stats()
	t.Logf("%d connection attempts: %d open, %d refused (503), %d other errors; Stats %+v", n, len(open), refused, len(other), st)
	if len(open) > max {
		t.Errorf("%d connections open, MaxConns is %d", len(open), max)
	}
	if st.RefusedFull != uint64(refused) || refused < n-max {
		t.Errorf("refused %d, RefusedFull %d, want both >= %d", refused, st.RefusedFull, n-max)
	}
	if len(other) > 0 {
		t.Errorf("unexpected dial errors, first: %v", other[0])
	}
	for _, ws := range open {
		ws.Close()
	}
	waitFor(t, 10*time.Second, "slots released", func() bool { return f.srv.Stats().Conns == 0 })
	f.honest(t, h, "after-conn-flood")
	f.check(t, h)
}

// TestGatewaySlowHandshake: a client dribbles its HTTP upgrade one byte at
// a time. The server drops it after HandshakeTimeout (ReadHeaderTimeout)
// and it never holds a connection slot; honest clients are served
// meanwhile.
func TestGatewaySlowHandshake(t *testing.T) {
	noLeaks(t)
	f := startGateway(t, func(c *wsgateway.Config) { c.HandshakeTimeout = time.Second })
	h := NewHistory()
	var conns []net.Conn
	for range pick(20, 200) {
		c, err := net.Dial("unix", f.sock)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	req := "GET / HTTP/1.1\r\nHost: confab\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
	start := time.Now()
	closed := make(chan time.Duration, len(conns))
	for _, c := range conns {
		go func() {
			defer c.Close()
			for i := 0; ; i = (i + 1) % len(req) {
				c.SetWriteDeadline(time.Now().Add(time.Second))
				if _, err := c.Write([]byte{req[i]}); err != nil {
					break
				}
				c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				var b [512]byte
				if _, err := c.Read(b[:]); err != nil && !errors.Is(err, net.ErrClosed) && !isTimeout(err) {
					break // the server answered (408/400) and closed
				}
				if time.Since(start) > 20*time.Second {
					break
				}
			}
			closed <- time.Since(start)
		}()
	}
	f.honest(t, h, "during-dribble")
	var worst time.Duration
	for range conns {
		if d := <-closed; d > worst {
			worst = d
		}
	}
	// Only the honest client was ever upgraded: no dribbler took a slot.
	if got := f.srv.Stats().Accepted; got != 1 {
		t.Errorf("gateway accepted %d connections, want only the honest one", got)
	}
	if worst > 15*time.Second {
		t.Errorf("a dribbling client stayed connected %v with HandshakeTimeout 1s", worst)
	}
	t.Logf("%d dribbling clients dropped within %v; Stats %+v (no counter for handshake timeouts)", len(conns), worst.Round(time.Millisecond), f.srv.Stats())
	f.check(t, h)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestGatewayNeverReads: a client subscribes and never reads. The gateway
// drops it — either its write deadline expires (close without a frame; the
// usual outcome, and not counted in any Stats field) or its subscription
// queue overflows first (resume, close 4008, SlowSubscribers) — and the node
// keeps storing and acknowledging every send meanwhile.
func TestGatewayNeverReads(t *testing.T) {
	noLeaks(t)
	f := startGateway(t, func(c *wsgateway.Config) {
		c.SendQueue = 8
		c.SubscriptionQueue = 16
		c.WriteTimeout = 2 * time.Second
	})
	h := NewHistory()
	ws, _, err := f.rawWS()
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"subscribe","req":"s1","channels":["#gw"]}`)); err != nil {
		t.Fatal(err)
	}
	// Then never read. Send enough bulky messages to fill the socket buffers,
	// the send queue and the subscription queue.
	body := strings.Repeat("x", 4000)
	n := pick(400, 4000)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 4 {
				key := fmt.Sprintf("bulk-%05d-%s", i, body)
				rec, err := f.a.mesh.Send(context.Background(), gwChan, "msg", key, "")
				op := Op{Key: key, Via: "gwnode", Channel: gwChan}
				if err != nil {
					op.Err = err.Error()
				} else {
					op.ID, op.Seq, op.Acked = rec.Env.ID, rec.Env.Seq, true
				}
				h.Record(op)
			}
		}()
	}
	wg.Wait()
	waitFor(t, 20*time.Second, "the never-reading connection to be closed", func() bool { return f.srv.Stats().Conns == 0 })
	t.Logf("after %d sends: Stats %+v", n, f.srv.Stats())
	codes, cc := readUntilClose(ws, 5*time.Second)
	if cc != 1006 && cc != wsgateway.CloseResume {
		t.Errorf("never-reading client closed with %d, want 1006 (write deadline) or %d (resume)", cc, wsgateway.CloseResume)
	}
	t.Logf("never-reading client: %d sends, then saw error codes %v and close %d; Stats %+v", n, codes, cc, f.srv.Stats())
	f.honest(t, h, "after-slow")
	f.check(t, h)
}

// TestGatewayFrameLimits sends frames up to and past every size limit and
// bad frames in a row: each gets its documented answer, the connection
// survives what it should, and an honest client is unaffected.
func TestGatewayFrameLimits(t *testing.T) {
	noLeaks(t)
	const maxFrame = 128 << 10
	f := startGateway(t, func(c *wsgateway.Config) { c.MaxFrame = maxFrame; c.MaxBadFrames = 8 })
	h := NewHistory()
	sendFrame := func(content string) string {
		return `{"type":"send","req":"r","channel":"#gw","content":"` + content + `"}`
	}
	exactly := func(n int) string { // a send frame of exactly n bytes
		pad := n - len(sendFrame(""))
		return sendFrame(strings.Repeat("a", pad))
	}
	type step struct {
		name      string
		frame     string
		wantType  string // reply type, "" if the connection must close
		wantCode  string
		wantClose int
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"content at the limit is stored", []step{
			{"max content", sendFrame(strings.Repeat("m", mesh.MaxContentLen)), "ack", "", 0},
		}},
		{"content over the limit is refused, connection stays", []step{
			{"content+1", sendFrame(strings.Repeat("o", mesh.MaxContentLen+1)), "error", "too_large", 0},
			{"ping after", `{"type":"ping","req":"p"}`, "pong", "", 0},
		}},
		{"frame of exactly MaxFrame", []step{
			{"max frame", exactly(maxFrame), "error", "too_large", 0},
			{"ping after", `{"type":"ping","req":"p"}`, "pong", "", 0},
		}},
		{"frame over MaxFrame closes 1009 after too_large", []step{
			{"max frame+1", exactly(maxFrame + 1), "error", "too_large", 1009},
		}},
		{"frame over twice MaxFrame closes 1009", []step{
			{"2*max+1", exactly(2*maxFrame + 1), "", "", 1009},
		}},
		{"bad frames in a row close 1008", func() []step {
			var s []step
			for range 8 {
				s = append(s, step{"garbage", `{"type":`, "error", "bad_frame", 0})
			}
			return append(s, step{"one too many", `nonsense`, "error", "policy", 1008})
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ws, _, err := f.rawWS()
			if err != nil {
				t.Fatal(err)
			}
			defer ws.Close()
			ws.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, _, err := ws.ReadMessage(); err != nil { // welcome
				t.Fatal(err)
			}
			for _, s := range tt.steps {
				if err := ws.WriteMessage(websocket.TextMessage, []byte(s.frame)); err != nil {
					if s.wantClose == 0 {
						t.Fatalf("%s: write: %v", s.name, err)
					}
				}
				if s.wantType != "" {
					_, b, err := ws.ReadMessage()
					if err != nil {
						t.Fatalf("%s: read reply: %v", s.name, err)
					}
					var got struct{ Type, Code, ID string }
					if err := json.Unmarshal(b, &got); err != nil {
						t.Fatalf("%s: reply %q: %v", s.name, b, err)
					}
					if got.Type != s.wantType || got.Code != s.wantCode {
						t.Fatalf("%s: got %s/%s, want %s/%s", s.name, got.Type, got.Code, s.wantType, s.wantCode)
					}
					if got.Type == "ack" {
						h.Record(Op{Key: strings.Repeat("m", mesh.MaxContentLen), Via: "gwnode", Channel: gwChan, ID: got.ID, Acked: true})
					}
				}
				if s.wantClose != 0 {
					_, cc := readUntilClose(ws, 10*time.Second)
					if cc != s.wantClose {
						t.Fatalf("%s: close code %d, want %d", s.name, cc, s.wantClose)
					}
				}
			}
		})
	}
	t.Logf("frame limits: Stats %+v (frames over MaxFrame are not counted in BadFrames)", f.srv.Stats())
	f.honest(t, h, "after-frames")
	f.check(t, h)
}
