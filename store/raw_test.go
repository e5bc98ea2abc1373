package store

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/confabhq/confab/mesh"
)

// TestSinceRaw: SinceRaw returns what Since returns, as Marshal encodes it,
// and the last seq, for every afterSeq and limit, across gaps, other
// authors and other channels.
func TestSinceRaw(t *testing.T) {
	db := open(t, "")
	k1, k2 := newKey(t), newKey(t)
	var envs []*mesh.Envelope
	for _, s := range []uint64{1, 2, 3, 5, 6, 9} { // gaps at 4, 7, 8
		envs = append(envs, signed(t, k1, "#a", s, strings.Repeat("x", int(s)*37)))
	}
	appendAll(t, db, envs...)
	appendAll(t, db, signed(t, k2, "#a", 1, "other author"), signed(t, k1, "#b", 7, "other channel"))
	author := envs[0].From
	for _, limit := range []int{0, 1, 2, 4, 1000, 5000} {
		for after := uint64(0); after <= 10; after++ {
			want, err := db.Since(ctx, "#a", author, after, limit)
			if err != nil {
				t.Fatal(err)
			}
			got, last, err := db.SinceRaw(ctx, "#a", author, after, limit)
			if err != nil {
				t.Fatalf("SinceRaw(%d, %d): %v", after, limit, err)
			}
			if len(got) != len(want) {
				t.Fatalf("SinceRaw(%d, %d) = %d envelopes, Since %d", after, limit, len(got), len(want))
			}
			wantLast := uint64(0)
			for i, e := range want {
				if !bytes.Equal(got[i], e.Marshal()) {
					t.Errorf("SinceRaw(%d, %d)[%d] differs from Marshal of seq %d", after, limit, i, e.Seq)
				}
				wantLast = e.Seq
			}
			if last != wantLast {
				t.Errorf("SinceRaw(%d, %d) last = %d, want %d", after, limit, last, wantLast)
			}
		}
	}
	// Appending to one slice must not clobber the next (shared buffer).
	got, _, err := db.SinceRaw(ctx, "#a", author, 0, 0)
	if err != nil || len(got) < 2 {
		t.Fatal(len(got), err)
	}
	next := append([]byte(nil), got[1]...)
	_ = append(got[0], 0xff)
	if !bytes.Equal(got[1], next) {
		t.Error("appending to one returned slice changed the next")
	}
	if _, _, err := db.SinceRaw(ctx, "#a", author, ^uint64(0), 0); err != nil {
		t.Errorf("SinceRaw(max) err = %v", err)
	}
}

func TestSinceRawInvalid(t *testing.T) {
	db := open(t, "")
	for _, tt := range []struct{ channel, author string }{
		{"general", "x"}, {"#a", ""}, {"#a", strings.Repeat("a", 65)}, {"#a", "a\x00b"},
	} {
		if _, _, err := db.SinceRaw(ctx, tt.channel, tt.author, 0, 0); !errors.Is(err, ErrInvalid) {
			t.Errorf("SinceRaw(%q, %q) err = %v, want ErrInvalid", tt.channel, trunc(tt.author), err)
		}
	}
	db.Close()
	if _, _, err := db.SinceRaw(ctx, "#a", "x", 0, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("SinceRaw after Close err = %v, want ErrClosed", err)
	}
}

// TestSinceRawCorrupt: a stored value that does not hash to its id, or an
// index entry that points nowhere, is ErrCorrupt, never bytes on the wire.
func TestSinceRawCorrupt(t *testing.T) {
	k := newKey(t)
	tampered := func(e *mesh.Envelope) []byte {
		b := append([]byte{msgVersion, 0, 0, 0, 0, 0, 0, 0, 1}, e.Marshal()...)
		b[len(b)-70] ^= 1 // a content byte: the signature is not what is checked here
		return b
	}
	msg := func(e *mesh.Envelope) []byte { id, _ := parseID(e.ID); return msgKey(id) }
	author := func(e *mesh.Envelope) []byte { return authorKey(e.Channel, e.From, e.Seq) }
	tests := []struct {
		name  string
		key   func(e *mesh.Envelope) []byte
		value func(e *mesh.Envelope) []byte
	}{
		{"content changed", msg, tampered},
		{"garbage", msg, func(*mesh.Envelope) []byte { return []byte("garbage") }},
		{"empty", msg, func(*mesh.Envelope) []byte { return nil }},
		{"wrong version", msg, func(e *mesh.Envelope) []byte { return append([]byte{9, 0, 0, 0, 0, 0, 0, 0, 1}, e.Marshal()...) }},
		{"index entry short", author, func(*mesh.Envelope) []byte { return []byte("short") }},
		{"index entry missing", author, func(*mesh.Envelope) []byte { return make([]byte, 32) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := open(t, "")
			e := signed(t, k, "#a", 1, "fine content")
			appendAll(t, db, e)
			if err := db.bdb.Update(func(txn *badger.Txn) error { return txn.Set(tt.key(e), tt.value(e)) }); err != nil {
				t.Fatal(err)
			}
			if got, _, err := db.SinceRaw(ctx, "#a", e.From, 0, 0); !errors.Is(err, ErrCorrupt) {
				t.Errorf("SinceRaw = %d envelopes, err %v; want ErrCorrupt", len(got), err)
			}
		})
	}
}

// BenchmarkSinceRaw compares the two ways the catch-up server can read a
// store of 100000 envelopes (16 authors, one channel): Since and Marshal (as
// it did), and SinceRaw, each author in pages of 1000. The indexer is done
// before either starts, so cpu-µs/env is the reads alone. Run it with
// -benchtime 1x (one pass each).
func BenchmarkSinceRaw(b *testing.B) {
	envs := historyEnvs(b, catchUpStore)
	db := open(b, b.TempDir())
	for i := 0; i < len(envs); i += 4096 {
		if _, err := db.Append(ctx, envs[i:min(i+4096, len(envs))]); err != nil {
			b.Fatal(err)
		}
	}
	waitIndexedAll(b, db)
	channel := envs[0].Channel
	hw, err := db.HighWater(ctx, channel)
	if err != nil {
		b.Fatal(err)
	}
	run := func(b *testing.B, page func(a string, after uint64) (int, uint64, int)) {
		c0 := cpuTime()
		n, bytes := 0, 0
		for range b.N {
			for a, top := range hw {
				for after := uint64(0); after < top; {
					got, last, sz := page(a, after)
					if got == 0 {
						b.Fatal("empty page")
					}
					n, bytes, after = n+got, bytes+sz, last
				}
			}
		}
		b.ReportMetric(float64((cpuTime()-c0).Nanoseconds())/1e3/float64(n), "cpu-µs/env")
		b.SetBytes(int64(bytes / b.N))
	}
	b.Run("since+marshal", func(b *testing.B) {
		run(b, func(a string, after uint64) (int, uint64, int) {
			page, err := db.Since(ctx, channel, a, after, 1000)
			if err != nil || len(page) == 0 {
				b.Fatal(len(page), err)
			}
			sz := 0
			for _, e := range page {
				sz += len(e.Marshal())
			}
			return len(page), page[len(page)-1].Seq, sz
		})
	})
	b.Run("raw", func(b *testing.B) {
		run(b, func(a string, after uint64) (int, uint64, int) {
			page, last, err := db.SinceRaw(ctx, channel, a, after, 1000)
			if err != nil {
				b.Fatal(len(page), err)
			}
			sz := 0
			for _, bin := range page {
				sz += len(bin)
			}
			return len(page), last, sz
		})
	})
}
