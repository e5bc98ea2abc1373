package wsgateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gorilla/websocket"
	"github.com/libp2p/go-libp2p/core/crypto"
	"go.uber.org/goleak"

	"github.com/confabhq/confab/mesh"
)

// recordConn records every Write that reaches the network.
type recordConn struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
}

func (r *recordConn) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes = append(r.writes, bytes.Clone(p))
	return len(p), nil
}

func TestBatchConn(t *testing.T) {
	big := bytes.Repeat([]byte("x"), batchBytes)
	tests := []struct {
		name   string
		hold   bool
		writes [][]byte
		want   [][]byte // what reaches the network, write by write
	}{
		{"pass through", false, [][]byte{[]byte("a"), []byte("b")}, [][]byte{[]byte("a"), []byte("b")}},
		{"held: one write", true, [][]byte{[]byte("a"), []byte("bc"), []byte("d")}, [][]byte{[]byte("abcd")}},
		{"held: a big write flushes first and goes alone", true, [][]byte{[]byte("a"), big, []byte("z")}, [][]byte{[]byte("a"), big, []byte("z")}},
		{"held: nothing written", true, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := &recordConn{}
			bc := &batchConn{Conn: rc}
			if tt.hold {
				bc.hold()
			}
			for _, w := range tt.writes {
				if n, err := bc.Write(w); n != len(w) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if err := bc.release(); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, rc.writes); diff != "" {
				t.Errorf("network writes (-want +got):\n%s", diff)
			}
		})
	}
}

// TestLiveEventsEncodedOnce: every subscriber gets every live record, and
// they share one live group, which encodes each record once for all of them.
func TestLiveEventsEncodedOnce(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	h := start(t, nil)
	x := ctx(t)
	h.b.Join(x, "#a")
	const subs, msgs = 4, 10
	var streams []<-chan Event
	for range subs {
		c := h.dial(t)
		ev, err := c.Subscribe(x, []string{"#a"}, "")
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, ev)
	}
	for i := range msgs {
		if _, err := h.b.Send(x, "#a", "msg", string(rune('a'+i)), ""); err != nil {
			t.Fatal(err)
		}
	}
	want := h.b.all("#a")
	for i, ev := range streams {
		var got []mesh.Record
		for _, e := range collect(t, ev, msgs) {
			if e.Replay {
				t.Errorf("subscriber %d: replay event on a live-only subscription", i)
			}
			got = append(got, e.Record)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("subscriber %d (-want +got):\n%s", i, diff)
		}
	}
	// One group, one backend subscription, every subscriber in it: each
	// record was encoded once, by the group, for all of them.
	h.srv.events.mu.Lock()
	groups := len(h.srv.events.groups)
	members := 0
	for _, g := range h.srv.events.groups {
		g.mu.Lock()
		members += len(g.members)
		g.mu.Unlock()
	}
	h.srv.events.mu.Unlock()
	if groups != 1 || members != subs {
		t.Errorf("%d live groups with %d members for %d subscribers of one channel, want 1 with %d", groups, members, subs, subs)
	}
	h.stop()
}

// TestSlowMemberAlone: in a live group, a subscriber that stops reading is
// sent resume and closed (4008) on its own; the group never waits for it,
// and a subscriber that keeps reading gets every record, in order.
func TestSlowMemberAlone(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	h := start(t, func(c *Config) { c.SubscriptionQueue = 8; c.SendQueue = 8 })
	x := ctx(t)
	h.b.Join(x, "#a")
	slow := h.dialRaw(t) // subscribes, then never reads
	if err := slow.WriteMessage(websocket.TextMessage, []byte(`{"type":"subscribe","req":"s","channels":["#a"]}`)); err != nil {
		t.Fatal(err)
	}
	fast := h.dial(t)
	events, err := fast.Subscribe(x, []string{"#a"}, "")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both subscribers in one group", func() bool {
		h.srv.events.mu.Lock()
		defer h.srv.events.mu.Unlock()
		g := h.srv.events.groups["#a"]
		if g == nil {
			return false
		}
		g.mu.Lock()
		defer g.mu.Unlock()
		return len(g.members) == 2
	})
	// Each record is sent once the fast subscriber has the one before.
	content := strings.Repeat("z", 4096)
	var gotCursors []string
	send := func() {
		t.Helper()
		if _, err := h.b.Send(x, "#a", "msg", content, ""); err != nil {
			t.Fatal(err)
		}
		for _, e := range collect(t, events, 1) {
			gotCursors = append(gotCursors, e.Record.Cursor)
		}
	}
	for h.srv.Stats().SlowSubscribers == 0 {
		send()
	}
	for range 5 { // the group goes on for the fast one
		send()
	}
	var want []string
	for _, r := range h.b.all("#a") {
		want = append(want, r.Cursor)
	}
	if diff := cmp.Diff(want, gotCursors); diff != "" {
		t.Errorf("fast subscriber (-want +got):\n%s", diff)
	}
	if err := fast.Err(); err != nil {
		t.Errorf("fast subscriber ended: %v", err)
	}
	// The slow one: everything queued before, then resume, then 4008.
	var last string
	for {
		slow.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, data, err := slow.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != CloseResume {
				t.Fatalf("slow subscriber: %v, want close %d", err, CloseResume)
			}
			break
		}
		f, err := DecodeReply(data)
		if err != nil {
			t.Fatal(err)
		}
		switch f := f.(type) {
		case *Event:
			last = f.Record.Cursor
		case *ErrorFrame:
			if f.Code != CodeResume || f.Cursor != last || last == "" {
				t.Errorf("slow subscriber: error %q cursor %q, want resume at %q", f.Code, f.Cursor, last)
			}
		}
	}
	fast.Close()
	h.stop()
}

// TestSlowDuringReplay: live records that arrive while a subscription
// replays are held; past SubscriptionQueue of them the subscription ends
// after its replay with resume at the last replayed cursor, and resuming
// from it misses nothing.
func TestSlowDuringReplay(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	h := start(t, func(c *Config) { c.SubscriptionQueue = 4; c.SendQueue = 4; c.ReplayPage = 8 })
	x := ctx(t)
	h.b.Join(x, "#a")
	content := strings.Repeat("r", 8192)
	for range 200 { // more than the sockets hold: the replay blocks
		if _, err := h.b.Send(x, "#a", "msg", content, ""); err != nil {
			t.Fatal(err)
		}
	}
	ws := h.dialRaw(t)
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"subscribe","req":"s","channels":["#a"],"since":"0000000000000000"}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the subscriber in its group", func() bool {
		h.srv.events.mu.Lock()
		defer h.srv.events.mu.Unlock()
		return h.srv.events.groups["#a"] != nil
	})
	for range 10 { // live, while the replay waits for the client
		if _, err := h.b.Send(x, "#a", "msg", "live", ""); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	var resume *ErrorFrame
	for {
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, data, err := ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != CloseResume {
				t.Fatalf("read: %v, want close %d", err, CloseResume)
			}
			break
		}
		f, err := DecodeReply(data)
		if err != nil {
			t.Fatal(err)
		}
		switch f := f.(type) {
		case *Event:
			got = append(got, f.Record.Cursor)
		case *ErrorFrame:
			resume = f
		}
	}
	all := h.b.all("#a")
	if len(got) < 200 || resume == nil || resume.Code != CodeResume || resume.Cursor != got[len(got)-1] {
		t.Fatalf("got %d events then %+v, want the 200 replayed and resume at the last", len(got), resume)
	}
	for i, c := range got {
		if c != all[i].Cursor {
			t.Fatalf("event %d: cursor %s, want %s", i, c, all[i].Cursor)
		}
	}
	c := h.dial(t)
	events, err := c.Subscribe(x, []string{"#a"}, resume.Cursor)
	if err != nil {
		t.Fatal(err)
	}
	rest := collect(t, events, len(all)-len(got))
	for i, e := range rest {
		if want := all[len(got)+i].Cursor; e.Record.Cursor != want {
			t.Errorf("resumed event %d: cursor %s, want %s", i, e.Record.Cursor, want)
		}
	}
	c.Close()
	h.stop()
}

// FuzzDecodeServerFrame: the client's fast path for events decodes every
// input exactly as DecodeReply does (same frame, or an error for both).
func FuzzDecodeServerFrame(f *testing.F) {
	_, replies := goldenFrames(f)
	for _, fr := range replies {
		b, err := EncodeFrame(fr)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	ev := liveEvent(f)
	f.Add(ev)
	f.Add(bytes.Replace(ev, []byte(`"replay":false`), []byte(`"replay":false,"Type":"ok","req":"1"`), 1))
	f.Add(bytes.Replace(ev, []byte(`"replay":false`), []byte(`"replay":false,"type":"pong"`), 1))
	f.Add(bytes.Replace(ev, []byte(`"replay":false`), []byte(`"req":"`+strings.Repeat("r", MaxReqLen+1)+`"`), 1))
	f.Add([]byte(`{"type":"event","record":{"envelope":null,"cursor":""}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, gerr := decodeServerFrame(b)
		want, werr := DecodeReply(b)
		if (gerr == nil) != (werr == nil) {
			t.Fatalf("fast path error %v, DecodeReply error %v", gerr, werr)
		}
		if gerr != nil {
			if code(gerr) != code(werr) {
				t.Fatalf("fast path code %q, DecodeReply %q", code(gerr), code(werr))
			}
			return
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("fast path differs (-DecodeReply +fast):\n%s", diff)
		}
	})
}

// liveEvent is an event frame as the server encodes it.
func liveEvent(t testing.TB) []byte {
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	env := &mesh.Envelope{Channel: "#a", Name: "ada", Seq: 1, TS: 1700000000000, Kind: "msg", Content: strings.Repeat("hello ", 33)}
	if err := env.Sign(key); err != nil {
		t.Fatal(err)
	}
	b, err := EncodeFrame(&Event{Record: mesh.Record{Env: env, Cursor: "0000000000000001"}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func BenchmarkDecodeEvent(b *testing.B) {
	ev := liveEvent(b)
	for _, bc := range []struct {
		name   string
		decode func([]byte) (Frame, error)
	}{{"DecodeReply", DecodeReply}, {"client", decodeServerFrame}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bc.decode(ev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkFanout: one live record to every subscriber over loopback TCP,
// the server's side of the gateway comparison in bench/. Clients read raw
// frames and decode nothing, so what differs between versions is the
// server. cpu-µs/frame is the process's CPU (server and clients) per frame
// delivered.
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) { benchFanout(b, n) })
	}
}

func benchFanout(b *testing.B, n int) {
	be := newMemBackend(b)
	be.Join(context.Background(), "#a")
	cfg := DefaultConfig()
	cfg.Backend = be
	cfg.MaxConns = n + 16
	srv, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(ln) }()
	var (
		got  atomic.Int64 // frames after live, all clients
		wg   sync.WaitGroup
		wss  []*websocket.Conn
		live sync.WaitGroup
		done = make(chan struct{}, 1)
	)
	for range n {
		ws, _, err := websocket.DefaultDialer.Dial("ws://"+ln.Addr().String()+"/", nil)
		if err != nil {
			b.Fatal(err)
		}
		wss = append(wss, ws)
		ws.ReadMessage() // welcome
		if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"subscribe","req":"s","channels":["#a"]}`)); err != nil {
			b.Fatal(err)
		}
		live.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seen := 0; ; {
				if _, _, err := ws.NextReader(); err != nil {
					return
				}
				if seen++; seen == 2 { // ok, live
					live.Done()
				} else if seen > 2 && got.Add(1)%int64(n) == 0 {
					select { // the last frame of a record
					case done <- struct{}{}:
					default:
					}
				}
			}
		}()
	}
	live.Wait()
	content := strings.Repeat("x", 200)
	cpu0 := cpuNow()
	b.ResetTimer()
	for range b.N {
		if _, err := be.Send(context.Background(), "#a", "msg", content, ""); err != nil {
			b.Fatal(err)
		}
		<-done
	}
	b.StopTimer()
	b.ReportMetric(float64((cpuNow()-cpu0).Microseconds())/float64(b.N*n), "cpu-µs/frame")
	srv.Close()
	<-served
	for _, ws := range wss {
		ws.Close()
	}
	wg.Wait()
}

func cpuNow() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
