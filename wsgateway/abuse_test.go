package wsgateway

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Tests for the abuse counters of Stats: each hostile client shows up in
// exactly the counter meant for it.

// tcpHarness serves a memBackend with Serve on a loopback TCP listener.
func startTCP(t *testing.T, tweak func(*Config)) (*Server, string) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Backend = newMemBackend(t)
	if tweak != nil {
		tweak(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-errc; err != nil && !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return srv, ln.Addr().String()
}

// TestHandshakeTimeoutCounted: a client that dribbles part of its upgrade
// request, or says nothing, is dropped after HandshakeTimeout and counted;
// an upgraded connection that later goes quiet is not a handshake timeout.
func TestHandshakeTimeoutCounted(t *testing.T) {
	leakCheck(t)
	tweak := func(c *Config) {
		c.HandshakeTimeout = 100 * time.Millisecond
		c.PingInterval = 50 * time.Millisecond
		c.PongTimeout = 300 * time.Millisecond
	}
	uh := start(t, tweak)
	tsrv, taddr := startTCP(t, tweak)
	tests := []struct {
		name string
		srv  *Server
		dial func() (net.Conn, error)
	}{
		{"unix", uh.srv, func() (net.Conn, error) { return net.Dial("unix", uh.path) }},
		{"tcp", tsrv, func() (net.Conn, error) { return net.Dial("tcp", taddr) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i, say := range []string{"GET / HTTP/1.1\r\nHost: confab\r\nUpgrade: websocket\r\n", ""} {
				c, err := tt.dial()
				if err != nil {
					t.Fatal(err)
				}
				if _, err := io.WriteString(c, say); err != nil {
					t.Fatal(err)
				}
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				io.Copy(io.Discard, c) // until the server hangs up
				c.Close()
				waitFor(t, "handshake timeout counted", func() bool { return tt.srv.Stats().HandshakeTimeouts == uint64(i+1) })
			}
			if got := tt.srv.Stats().Accepted; got != 0 {
				t.Errorf("Accepted %d, want 0", got)
			}
		})
	}

	// An upgraded client that never reads (so never answers a ping) is
	// dropped after PongTimeout: a read timeout, not a handshake timeout.
	ws := uh.dialRaw(t)
	waitFor(t, "silent connection dropped", func() bool { return uh.srv.Stats().ReadTimeouts == 1 })
	if got := uh.srv.Stats().HandshakeTimeouts; got != 2 {
		t.Errorf("HandshakeTimeouts %d after a read timeout, want still 2", got)
	}
	ws.Close()
}

// TestWriteTimeoutCounted: a client that asks for a large history and never
// reads it is dropped when the write misses WriteTimeout, and counted.
func TestWriteTimeoutCounted(t *testing.T) {
	leakCheck(t)
	h := start(t, func(c *Config) { c.WriteTimeout = 200 * time.Millisecond })
	h.b.Join(context.Background(), "#bulk")
	for range 60 {
		if _, err := h.b.Send(context.Background(), "#bulk", "msg", strings.Repeat("x", 60<<10), ""); err != nil {
			t.Fatal(err)
		}
	}
	ws := h.dialRaw(t)
	for range 4 { // about 650 KB each: more than the socket buffers hold
		if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"history","req":"h","channel":"#bulk","limit":100}`)); err != nil {
			t.Fatal(err)
		}
	}
	// Never read.
	waitFor(t, "never-reading connection dropped", func() bool { return h.srv.Stats().Conns == 0 })
	got := h.srv.Stats()
	if got.WriteTimeouts != 1 || got.ReadTimeouts != 0 {
		t.Errorf("WriteTimeouts %d ReadTimeouts %d, want 1 and 0", got.WriteTimeouts, got.ReadTimeouts)
	}
}

// TestTooLargeCounted: a frame over MaxFrame (answered too_large) and one
// over the WebSocket read limit (closed at once) are both counted.
func TestTooLargeCounted(t *testing.T) {
	leakCheck(t)
	const max = 4096
	h := start(t, func(c *Config) { c.MaxFrame = max })
	tests := []struct {
		name string
		size int
	}{
		{"over MaxFrame", max + 1000},
		{"over the read limit", 3 * max},
	}
	for i, tt := range tests {
		ws := h.dialRaw(t)
		big := `{"type":"ping","req":"` + strings.Repeat("x", tt.size) + `"}`
		// Over the read limit the gateway may hang up before the whole
		// frame is written: a write error is expected then.
		ws.WriteMessage(websocket.TextMessage, []byte(big))
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				break
			}
		}
		waitFor(t, tt.name+" counted", func() bool { return h.srv.Stats().TooLarge == uint64(i+1) })
	}
}

// TestRefusedUpgradeCounted: a plain HTTP request is refused and counted as
// a bad upgrade; a browser origin is counted as an origin refusal only.
func TestRefusedUpgradeCounted(t *testing.T) {
	leakCheck(t)
	srv, addr := startTCP(t, nil)
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("plain GET: %s, want 400", resp.Status)
	}
	hdr := http.Header{"Origin": {"http://evil.example"}}
	if _, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/", hdr); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("dial with Origin: %v", err)
	}
	http.DefaultClient.CloseIdleConnections()
	got := srv.Stats()
	if got.RefusedUpgrade != 1 || got.RefusedOrigin != 1 {
		t.Errorf("RefusedUpgrade %d RefusedOrigin %d, want 1 and 1", got.RefusedUpgrade, got.RefusedOrigin)
	}
}
