package wsgateway

import (
	"bytes"
	"net"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
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
