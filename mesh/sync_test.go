package mesh

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// FuzzDecodeSyncRequest: the catch-up request is read from any peer. It
// must never panic, and what it accepts is bounded.
func FuzzDecodeSyncRequest(f *testing.F) {
	k := newKey(f)
	id, _ := peer.IDFromPrivateKey(k)
	real, _ := json.Marshal(SyncRequest{Type: "sync", V: 1, Channel: "#general", Have: map[string]uint64{id.String(): 17}, Limit: 1000})
	f.Add(real)
	f.Add(real[:len(real)/2])
	f.Add([]byte(`{"type":"sync","v":1,"channel":"#a","have":{},"limit":-1}`))
	f.Add([]byte(`{"type":"sync","v":1,"channel":"general","have":{"x":1}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeSyncRequest(b)
		if err != nil {
			return
		}
		if !ValidChannel(r.Channel) || len(r.Have) > maxSyncAuthors || r.Limit <= 0 || r.Limit > maxSyncLimit {
			t.Fatalf("accepted an out-of-bounds request: %+v", r)
		}
		for a := range r.Have {
			if _, err := AuthorKey(a); err != nil {
				t.Fatalf("accepted author %q: %v", a, err)
			}
		}
	})
}

// memHistory is the part of History that serving catch-up reads, in memory:
// every author's envelopes of one channel by seq.
type memHistory struct {
	History // the rest is never called here
	envs    map[string]map[uint64]*Envelope
}

func (h *memHistory) HighWater(_ context.Context, channel string) (map[string]uint64, error) {
	hw := map[string]uint64{}
	for a, m := range h.envs {
		for s := uint64(1); m[s] != nil; s++ {
			hw[a] = s
		}
	}
	return hw, nil
}

func (h *memHistory) Since(_ context.Context, channel, author string, after uint64, limit int) ([]*Envelope, error) {
	seqs := slices.Sorted(maps.Keys(h.envs[author]))
	var out []*Envelope
	for _, s := range seqs {
		if s > after && len(out) < limit {
			out = append(out, h.envs[author][s])
		}
	}
	return out, nil
}

// rawMemHistory also serves the stored binary form, as store.DB does; bad
// replaces the binary of the envelope with that id.
type rawMemHistory struct {
	*memHistory
	bad map[string][]byte
}

func (h rawMemHistory) SinceRaw(ctx context.Context, channel, author string, after uint64, limit int) ([][]byte, uint64, error) {
	envs, _ := h.Since(ctx, channel, author, after, limit)
	var bins [][]byte
	var last uint64
	for _, e := range envs {
		b := e.Marshal()
		if r, ok := h.bad[e.ID]; ok {
			b = r
		}
		bins, last = append(bins, b), e.Seq
	}
	return bins, last, nil
}

// parseSync reads a catch-up response with readSyncResponse and verifies
// every envelope; the response must end with the flag.
func parseSync(t *testing.T, b []byte) ([]*Envelope, bool) {
	t.Helper()
	r := bufio.NewReader(bytes.NewReader(b))
	var out []*Envelope
	more, err := readSyncResponse(r, map[string]uint64{}, func(e *Envelope) error {
		out = append(out, e)
		return e.Verify()
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := r.Buffered(); n != 0 {
		t.Fatalf("%d bytes after the flag", n)
	}
	return out, more
}

// TestWriteSync: the catch-up response holds, author by author in seq order,
// what the requester lacks, at most Limit envelopes, with the "more" flag
// set when it stopped early; served from the stored binary form or from
// decoded envelopes, the bytes are the same.
func TestWriteSync(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	h := &memHistory{envs: map[string]map[uint64]*Envelope{}}
	var a1, a2 string
	for _, tc := range []struct {
		k    crypto.PrivKey
		seqs []uint64
		from *string
	}{{k1, []uint64{1, 2, 3, 4, 5}, &a1}, {k2, []uint64{1, 2, 4}, &a2}} {
		for _, s := range tc.seqs {
			e := signed(t, tc.k, func(e *Envelope) { e.Seq = s; e.Content = strings.Repeat("c", int(s)*10) })
			*tc.from = e.From
			if h.envs[e.From] == nil {
				h.envs[e.From] = map[uint64]*Envelope{}
			}
			h.envs[e.From][s] = e
		}
	}
	ordered := slices.Sorted(maps.Keys(h.envs)) // the server's author order
	seqsOf := func(envs []*Envelope) map[string][]uint64 {
		m := map[string][]uint64{}
		for _, e := range envs {
			m[e.From] = append(m[e.From], e.Seq)
		}
		return m
	}
	tests := []struct {
		name     string
		have     map[string]uint64
		limit    int
		wantN    int
		wantMore bool
	}{
		{"everything", nil, 100, 8, false}, // a2's 4 is past its high-water mark 2 but in the same page as 1 and 2
		{"limited", nil, 3, 3, true},
		{"exactly the limit", nil, 8, 8, false},
		{"have some", map[string]uint64{a1: 3, a2: 1}, 100, 4, false},            // a1's 4, 5; a2's 2, 4
		{"have up to the marks", map[string]uint64{a1: 4, a2: 2}, 100, 1, false}, // a2's 4 waits for its gap
		{"have all", map[string]uint64{a1: 5, a2: 2}, 100, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &SyncRequest{Type: "sync", V: 1, Channel: "#general", Have: tt.have, Limit: tt.limit}
			hw, _ := h.HighWater(context.Background(), req.Channel)
			var outs [2]bytes.Buffer
			for i, hist := range []History{h, rawMemHistory{memHistory: h}} {
				m := &Mesh{hist: hist}
				w := bufio.NewWriter(&outs[i])
				if err := m.writeSync(context.Background(), w, req, hw); err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(outs[0].Bytes(), outs[1].Bytes()) {
				t.Fatal("raw and decoded responses differ")
			}
			got, more := parseSync(t, outs[0].Bytes())
			if len(got) != tt.wantN || more != tt.wantMore {
				t.Fatalf("got %d envelopes, more=%v; want %d, more=%v", len(got), more, tt.wantN, tt.wantMore)
			}
			// Authors in order, each one's seqs ascending and past its mark.
			for i := 1; i < len(got); i++ {
				p, e := got[i-1], got[i]
				if slices.Index(ordered, p.From) > slices.Index(ordered, e.From) || p.From == e.From && p.Seq >= e.Seq {
					t.Errorf("envelope %d (%s seq %d) after %s seq %d", i, e.From, e.Seq, p.From, p.Seq)
				}
			}
			for a, seqs := range seqsOf(got) {
				if seqs[0] <= tt.have[a] {
					t.Errorf("%s: sent seq %d, requester has up to %d", a, seqs[0], tt.have[a])
				}
			}
		})
	}
}

// TestWriteSyncOversized: a stored envelope over the limit the requester
// enforces ends the response with an error instead of a frame it would
// refuse.
func TestWriteSyncOversized(t *testing.T) {
	k := newKey(t)
	e := signed(t, k, func(e *Envelope) { e.Seq = 1 })
	h := rawMemHistory{
		memHistory: &memHistory{envs: map[string]map[uint64]*Envelope{e.From: {1: e}}},
		bad:        map[string][]byte{e.ID: make([]byte, MaxEnvelopeLen+1)},
	}
	req := &SyncRequest{Type: "sync", V: 1, Channel: "#general", Limit: 10}
	hw, _ := h.HighWater(context.Background(), req.Channel)
	m := &Mesh{hist: h}
	if err := m.writeSync(context.Background(), bufio.NewWriter(io.Discard), req, hw); !errors.Is(err, ErrTooLarge) {
		t.Errorf("writeSync = %v, want ErrTooLarge", err)
	}
}

// TestReadFrameInto: frames reuse the buffer when it is large enough, and
// a frame over the limit is refused before it is read.
func TestReadFrameInto(t *testing.T) {
	var in bytes.Buffer
	for _, f := range [][]byte{[]byte("hello"), []byte("hi"), bytes.Repeat([]byte("x"), 100), nil} {
		if err := writeFrame(&in, f); err != nil {
			t.Fatal(err)
		}
	}
	r := bytes.NewReader(in.Bytes())
	buf := make([]byte, 0, 10)
	for _, want := range []string{"hello", "hi", strings.Repeat("x", 100), ""} {
		got, err := readFrameInto(r, 1000, buf)
		if err != nil || string(got) != want {
			t.Fatalf("readFrameInto = %q, %v; want %q", got, err, want)
		}
		if len(want) <= 10 && len(want) > 0 && &got[0] != &buf[:1][0] {
			t.Errorf("frame %q did not reuse the buffer", want)
		}
	}
	in.Reset()
	_ = writeFrame(&in, make([]byte, 11))
	if _, err := readFrameInto(bytes.NewReader(in.Bytes()), 10, nil); !errors.Is(err, ErrTooLarge) {
		t.Errorf("over the limit: %v, want ErrTooLarge", err)
	}
}

// TestReadSyncResponse: what a requester refuses in a response.
func TestReadSyncResponse(t *testing.T) {
	k := newKey(t)
	e := signed(t, k, nil)
	frames := func(fs ...[]byte) []byte {
		var b bytes.Buffer
		for _, f := range fs {
			_ = writeFrame(&b, f)
		}
		return b.Bytes()
	}
	good := e.Marshal()
	tests := []struct {
		name    string
		in      []byte
		want    error // nil: no error
		wantMax uint64
	}{
		{"one and more", append(frames(good, nil), 1), nil, 7},
		{"bad envelope", append(frames(good[:len(good)-1], nil), 0), errSyncEnvelope, 0},
		{"frame too large", append(binary.BigEndian.AppendUint32(nil, MaxEnvelopeLen+1), good...), ErrTooLarge, 0},
		{"no flag", frames(good, nil), io.EOF, 7},
		{"truncated", frames(good)[:100], io.ErrUnexpectedEOF, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			have := map[string]uint64{}
			_, err := readSyncResponse(bufio.NewReader(bytes.NewReader(tt.in)), have, func(*Envelope) error { return nil })
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
			if have[e.From] != tt.wantMax {
				t.Errorf("mark %d, want %d", have[e.From], tt.wantMax)
			}
		})
	}
	t.Run("more than asked", func(t *testing.T) {
		var b bytes.Buffer
		for range maxSyncLimit + 1 {
			_ = writeFrame(&b, good)
		}
		n := 0
		_, err := readSyncResponse(bufio.NewReader(&b), map[string]uint64{}, func(*Envelope) error { n++; return nil })
		if !errors.Is(err, ErrMalformed) || n != maxSyncLimit {
			t.Errorf("err = %v after %d envelopes, want ErrMalformed after %d", err, n, maxSyncLimit)
		}
	})
}

// FuzzReadSyncResponse: a catch-up response comes from any peer. Reading it
// must never panic, never pass on more than maxSyncLimit envelopes, and
// pass on only envelopes that decode within the limits.
func FuzzReadSyncResponse(f *testing.F) {
	k := newKey(f)
	var real bytes.Buffer
	for s := uint64(1); s <= 3; s++ {
		_ = writeFrame(&real, signed(f, k, func(e *Envelope) { e.Seq = s }).Marshal())
	}
	_ = writeFrame(&real, nil)
	real.WriteByte(1)
	f.Add(real.Bytes())
	f.Add(real.Bytes()[:real.Len()/2])
	f.Add([]byte{0, 0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		n := 0
		have := map[string]uint64{}
		_, _ = readSyncResponse(bufio.NewReader(bytes.NewReader(b)), have, func(e *Envelope) error {
			n++
			if len(e.Marshal()) > MaxEnvelopeLen || e.Seq > have[e.From] {
				t.Fatalf("passed on %d bytes, seq %d over mark %d", len(e.Marshal()), e.Seq, have[e.From])
			}
			return nil
		})
		if n > maxSyncLimit {
			t.Fatalf("passed on %d envelopes", n)
		}
	})
}
