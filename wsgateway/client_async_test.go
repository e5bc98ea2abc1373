package wsgateway

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gorilla/websocket"

	"github.com/confabhq/confab/mesh"
)

// TestSubscribeFunc: the handler gets replay then live events in order on
// the reader goroutine; Unsubscribe closes done and no call follows it; a
// second subscription after it works; closing the connection closes done.
func TestSubscribeFunc(t *testing.T) {
	leakCheck(t)
	h := start(t, nil)
	x := ctx(t)
	h.b.Join(x, "#a")
	for i := range 5 {
		h.b.Send(x, "#a", "msg", fmt.Sprint("old ", i), "")
	}
	since := h.b.all("#a")[1].Cursor
	c := h.dial(t)
	got := make(chan Event, 64)
	var afterDone atomic.Bool
	var doneSeen atomic.Bool
	done, err := c.SubscribeFunc(x, []string{"#a"}, since, func(e Event) {
		if doneSeen.Load() {
			afterDone.Store(true)
		}
		got <- e
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := c.Send(x, "#a", "", fmt.Sprint("new ", i), ""); err != nil {
			t.Fatal(err)
		}
	}
	var want []mesh.Record
	for _, r := range h.b.all("#a") {
		if r.Cursor > since {
			want = append(want, r)
		}
	}
	var gotRecs []mesh.Record
	for range want {
		select {
		case e := <-got:
			gotRecs = append(gotRecs, e.Record)
		case <-time.After(10 * time.Second):
			t.Fatalf("got %d of %d events", len(gotRecs), len(want))
		}
	}
	if diff := cmp.Diff(want, gotRecs); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if err := c.Unsubscribe(x); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
		doneSeen.Store(true)
	case <-time.After(10 * time.Second):
		t.Fatal("done not closed after unsubscribe")
	}
	if _, err := c.Send(x, "#a", "", "after unsubscribe", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SubscribeFunc(x, nil, "", nil); err == nil {
		t.Error("nil handler accepted")
	}
	// A new subscription on the same connection, live only.
	done2, err := c.SubscribeFunc(x, []string{"#a"}, "", func(e Event) { got <- e })
	if err != nil {
		t.Fatal(err)
	}
	ack, err := c.Send(x, "#a", "", "live", "")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-got:
		if e.Record.Cursor != ack.Cursor {
			t.Errorf("live event %s, want %s (an event after unsubscribe leaked?)", e.Record.Cursor, ack.Cursor)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no live event")
	}
	if afterDone.Load() {
		t.Error("handler called after done closed")
	}
	c.Close()
	select {
	case <-done2:
	case <-time.After(10 * time.Second):
		t.Fatal("done not closed by Close")
	}
}

// TestPublishAsyncPipelined: publishes written back to back without
// waiting are handled in order, each acked with its own id and seq; a
// bad one in the middle fails alone and the next gets seq_gap.
func TestPublishAsyncPipelined(t *testing.T) {
	leakCheck(t)
	h := startRemote(t, nil)
	c, k, _ := h.authed(t, "")
	x := ctx(t)
	if err := c.Join(x, "#a"); err != nil {
		t.Fatal(err)
	}
	const n = 50
	var envs []*mesh.Envelope
	type pend struct {
		env  *mesh.Envelope
		wait func() (Ack, error)
	}
	var ps []pend
	for i := range n {
		env := signed(t, k, "#a", uint64(i+1), fmt.Sprint("pipelined ", i))
		envs = append(envs, env)
		wait, err := c.PublishAsync(x, env)
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, pend{env, func() (Ack, error) { return wait(x) }})
	}
	for i, p := range ps {
		ack, err := p.wait()
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		if ack.ID != p.env.ID || ack.Seq != uint64(i+1) {
			t.Errorf("ack %d = %+v, want id %s seq %d", i, ack, p.env.ID, i+1)
		}
	}
	var gotIDs, wantIDs []string
	for _, r := range h.b.all("#a") {
		gotIDs = append(gotIDs, r.Env.ID)
	}
	for _, e := range envs {
		wantIDs = append(wantIDs, e.ID)
	}
	if diff := cmp.Diff(wantIDs, gotIDs); diff != "" {
		t.Errorf("stored order (-want +got):\n%s", diff)
	}

	bad := signed(t, k, "#a", n+1, "tampered")
	bad.Content = "changed after signing"
	w1, err := c.PublishAsync(x, bad)
	if err != nil {
		t.Fatal(err)
	}
	w2, err := c.PublishAsync(x, signed(t, k, "#a", n+2, "after the bad one"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w1(x); code(err) != CodeBadSignature {
		t.Errorf("tampered publish: %v, want %s", err, CodeBadSignature)
	}
	if _, err := w2(x); code(err) != CodeSeqGap {
		t.Errorf("publish after a failed one: %v, want %s", err, CodeSeqGap)
	}
}

// TestWriterPings: the writer pings every PingInterval while nothing else
// is sent, and a client that answers stays connected.
func TestWriterPings(t *testing.T) {
	leakCheck(t)
	h := start(t, func(c *Config) {
		c.PingInterval = 20 * time.Millisecond
		c.PongTimeout = 5 * time.Second
	})
	ws := h.dialRaw(t)
	var pings atomic.Int32
	ws.SetPingHandler(func(data string) error {
		pings.Add(1)
		return ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	readDone := make(chan error, 1)
	go func() {
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				readDone <- err
				return
			}
		}
	}()
	waitFor(t, "5 pings", func() bool { return pings.Load() >= 5 })
	select {
	case err := <-readDone:
		t.Fatalf("connection ended: %v", err)
	default:
	}
	ws.Close()
	<-readDone
}
