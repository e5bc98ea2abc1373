package wsgateway

import (
	"bytes"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
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
// the server encoded each record once for all of them.
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
	h.srv.events.mu.Lock()
	encoded := 0
	for _, ce := range h.srv.events.ring {
		if ce.pm != nil {
			encoded++
		}
	}
	h.srv.events.mu.Unlock()
	if encoded != msgs {
		t.Errorf("%d encodings for %d records and %d subscribers, want one per record", encoded, msgs, subs)
	}
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
