package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/confabhq/confab/mesh"
)

var ctx = context.Background()

// appendAll appends envs one call each and returns their cursors.
func appendAll(t *testing.T, db *DB, envs ...*mesh.Envelope) []string {
	t.Helper()
	curs, err := db.Append(ctx, envs)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	return curs
}

// interleaved stores 3 messages in #a and 2 in #b in the order a0 b0 a1 b1 a2.
func interleaved(t *testing.T, db *DB) map[string]string {
	t.Helper()
	k := newKey(t)
	cur := map[string]string{}
	order := []struct {
		ch, c string
		seq   uint64
	}{{"#a", "a0", 1}, {"#b", "b0", 1}, {"#a", "a1", 2}, {"#b", "b1", 2}, {"#a", "a2", 3}}
	for _, o := range order {
		cur[o.c] = appendAll(t, db, signed(t, k, o.ch, o.seq, o.c))[0]
	}
	return cur
}

func TestPaging(t *testing.T) {
	db := open(t, "")
	cur := interleaved(t, db)
	tests := []struct {
		name, op, ch, cursor string
		limit                int
		want                 []string
	}{
		{"after start", "after", "#a", "", 0, []string{"a0", "a1", "a2"}},
		{"after start limit", "after", "#a", "", 2, []string{"a0", "a1"}},
		{"after page 2", "after", "#a", cur["a1"], 2, []string{"a2"}},
		{"after last", "after", "#a", cur["a2"], 2, nil},
		{"after other channel's cursor", "after", "#a", cur["b0"], 0, []string{"a1", "a2"}},
		{"after b", "after", "#b", cur["a0"], 0, []string{"b0", "b1"}},
		{"after max cursor", "after", "#a", "ffffffffffffffff", 0, nil},
		{"after zero cursor", "after", "#a", "0000000000000000", 0, []string{"a0", "a1", "a2"}},
		{"before end", "before", "#a", "", 0, []string{"a0", "a1", "a2"}},
		{"before end limit", "before", "#a", "", 2, []string{"a1", "a2"}},
		{"before page 2", "before", "#a", cur["a1"], 2, []string{"a0"}},
		{"before first", "before", "#a", cur["a0"], 2, nil},
		{"before other channel's cursor", "before", "#a", cur["b1"], 0, []string{"a0", "a1"}},
		{"before b", "before", "#b", cur["a2"], 1, []string{"b1"}},
		{"before zero cursor", "before", "#a", "0000000000000000", 0, nil},
		{"before max cursor", "before", "#a", "ffffffffffffffff", 0, []string{"a0", "a1", "a2"}},
		{"empty channel", "after", "#none", "", 0, nil},
		{"limit too big is clamped", "after", "#a", "", MaxLimit + 5, []string{"a0", "a1", "a2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := db.After
			if tt.op == "before" {
				f = db.Before
			}
			envs, curs, err := f(ctx, tt.ch, tt.cursor, tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			if got := contents(envs); !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			var want []string
			for _, c := range tt.want {
				want = append(want, cur[c])
			}
			if !slices.Equal(curs, want) {
				t.Errorf("cursors %q, want %q", curs, want)
			}
		})
	}
	// Cursors are increasing in arrival order.
	all := []string{cur["a0"], cur["b0"], cur["a1"], cur["b1"], cur["a2"]}
	if !slices.IsSorted(all) || len(slices.Compact(slices.Clone(all))) != 5 {
		t.Errorf("cursors not strictly increasing: %q", all)
	}
	chans, err := db.Channels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"#a", "#b"}; !slices.Equal(chans, want) {
		t.Errorf("Channels = %q, want %q", chans, want)
	}
}

func TestPagingWalksWholeChannel(t *testing.T) {
	db := open(t, "")
	k := newKey(t)
	var want []string
	var batch []*mesh.Envelope
	for i := 1; i <= 25; i++ {
		batch = append(batch, signed(t, k, "#x", uint64(i), nth("x", i)), signed(t, k, "#y", uint64(i), nth("y", i)))
		want = append(want, nth("x", i))
	}
	appendAll(t, db, batch...)
	for _, dir := range []string{"after", "before"} {
		t.Run(dir, func(t *testing.T) {
			var got []string
			cursor := ""
			for range 100 {
				var envs []*mesh.Envelope
				var curs []string
				var err error
				if dir == "after" {
					envs, curs, err = db.After(ctx, "#x", cursor, 4)
				} else {
					envs, curs, err = db.Before(ctx, "#x", cursor, 4)
				}
				if err != nil {
					t.Fatal(err)
				}
				if len(envs) == 0 {
					break
				}
				if dir == "after" {
					got = append(got, contents(envs)...)
					cursor = curs[len(curs)-1]
				} else {
					got = append(contents(envs), got...)
					cursor = curs[0]
				}
			}
			if !slices.Equal(got, want) {
				t.Errorf("walked %q, want %q", got, want)
			}
		})
	}
}

func TestBadCursor(t *testing.T) {
	db := open(t, "")
	for _, c := range []string{"0", "000000000000000G", "00000000000000000", "00000000000000AA", "zzzzzzzzzzzzzzzz", "-000000000000001"} {
		if _, _, err := db.After(ctx, "#a", c, 1); !errors.Is(err, ErrBadCursor) {
			t.Errorf("After(%q) err = %v, want ErrBadCursor", c, err)
		}
		if _, _, err := db.Before(ctx, "#a", c, 1); !errors.Is(err, ErrBadCursor) {
			t.Errorf("Before(%q) err = %v, want ErrBadCursor", c, err)
		}
	}
	for _, ch := range []string{"", "a", "#A", "#a\x00b"} {
		if _, _, err := db.After(ctx, ch, "", 1); !errors.Is(err, ErrInvalid) {
			t.Errorf("After(channel %q) err = %v, want ErrInvalid", ch, err)
		}
		if _, err := db.HighWater(ctx, ch); !errors.Is(err, ErrInvalid) {
			t.Errorf("HighWater(channel %q) err = %v, want ErrInvalid", ch, err)
		}
	}
	if _, err := db.Since(ctx, "#a", "x\x00y", 0, 1); !errors.Is(err, ErrInvalid) {
		t.Errorf("Since(author with NUL) err = %v, want ErrInvalid", err)
	}
}

func TestIdempotent(t *testing.T) {
	k := newKey(t)
	e1, e2, e3 := signed(t, k, "#a", 1, "one"), signed(t, k, "#a", 2, "two"), signed(t, k, "#a", 3, "three")
	tests := []struct {
		name    string
		batches [][]*mesh.Envelope
		reopen  bool // between batches
		stored  []bool
	}{
		{"same batch", [][]*mesh.Envelope{{e1, e2, e1, e2, e3}}, false, []bool{true, true, false, false, true}},
		{"across batches", [][]*mesh.Envelope{{e1, e2}, {e2, e3, e1}}, false, []bool{true, true, false, true, false}},
		{"across reopen", [][]*mesh.Envelope{{e1, e2}, {e1, e3, e2}}, true, []bool{true, true, false, true, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			db := open(t, dir)
			var got []bool
			for i, b := range tt.batches {
				if i > 0 && tt.reopen {
					if err := db.Close(); err != nil {
						t.Fatal(err)
					}
					db = open(t, dir)
				}
				curs := appendAll(t, db, b...)
				for _, c := range curs {
					got = append(got, c != "")
				}
			}
			if !slices.Equal(got, tt.stored) {
				t.Errorf("stored = %v, want %v", got, tt.stored)
			}
			envs, _, err := db.After(ctx, "#a", "", 0)
			if err != nil {
				t.Fatal(err)
			}
			if got := len(envs); got != 3 {
				t.Errorf("channel has %d envelopes, want 3", got)
			}
			hw, err := db.HighWater(ctx, "#a")
			if err != nil {
				t.Fatal(err)
			}
			if got := hw[e1.From]; got != 3 {
				t.Errorf("high water %d, want 3", got)
			}
			for _, e := range []*mesh.Envelope{e1, e2, e3} {
				got, err := db.Get(ctx, e.ID)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(e, got); diff != "" {
					t.Errorf("Get(%s) (-want +got):\n%s", e.ID, diff)
				}
				if err := got.Verify(); err != nil {
					t.Errorf("stored envelope does not verify: %v", err)
				}
			}
		})
	}
}

func TestHighWaterAndSince(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	tests := []struct {
		name   string
		order  []uint64 // seqs of k1, each in its own Append
		batch  bool     // all in one Append instead
		wantHW uint64
		since  uint64
		want   []uint64 // Since(since)
	}{
		{"in order", []uint64{1, 2, 3}, false, 3, 1, []uint64{2, 3}},
		{"missing first", []uint64{2, 3}, false, 0, 0, []uint64{2, 3}},
		{"gap filled last", []uint64{3, 1, 2}, false, 3, 0, []uint64{1, 2, 3}},
		{"gaps filled out of order", []uint64{1, 3, 5, 2, 4}, false, 5, 2, []uint64{3, 4, 5}},
		{"gap remains", []uint64{1, 2, 4, 6}, false, 2, 2, []uint64{4, 6}},
		{"one batch out of order", []uint64{4, 2, 3, 1}, true, 4, 0, []uint64{1, 2, 3, 4}},
		{"since beyond", []uint64{1, 2}, false, 2, 2, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := open(t, "")
			var envs []*mesh.Envelope
			for _, s := range tt.order {
				envs = append(envs, signed(t, k1, "#a", s, nth("m", int(s))))
			}
			if tt.batch {
				appendAll(t, db, envs...)
			} else {
				for _, e := range envs {
					appendAll(t, db, e)
				}
			}
			// Another author and another channel must not interfere.
			appendAll(t, db, signed(t, k2, "#a", 1, "other"), signed(t, k1, "#b", 1, "elsewhere"))
			hw, err := db.HighWater(ctx, "#a")
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]uint64{envs[0].From: tt.wantHW}
			if tt.wantHW == 0 {
				delete(want, envs[0].From)
			}
			k2id := signed(t, k2, "#a", 1, "other").From
			want[k2id] = 1
			if diff := cmp.Diff(want, hw); diff != "" {
				t.Errorf("HighWater (-want +got):\n%s", diff)
			}
			got, err := db.Since(ctx, "#a", envs[0].From, tt.since, 0)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(seqs(got), tt.want) {
				t.Errorf("Since(%d) = %v, want %v", tt.since, seqs(got), tt.want)
			}
		})
	}
	t.Run("since limit", func(t *testing.T) {
		db := open(t, "")
		for s := uint64(1); s <= 5; s++ {
			appendAll(t, db, signed(t, k1, "#a", s, "x"))
		}
		got, err := db.Since(ctx, "#a", signed(t, k1, "#a", 1, "x").From, 1, 2)
		if err != nil {
			t.Fatal(err)
		}
		if want := []uint64{2, 3}; !slices.Equal(seqs(got), want) {
			t.Errorf("Since limit 2 = %v, want %v", seqs(got), want)
		}
	})
}

// TestHighWaterAcrossReopen fills a gap after a restart, when the committer
// must rebuild its per-author state from disk.
func TestHighWaterAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	k := newKey(t)
	db := open(t, dir)
	appendAll(t, db, signed(t, k, "#a", 1, "1"), signed(t, k, "#a", 3, "3"), signed(t, k, "#a", 4, "4"))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = open(t, dir)
	e2 := signed(t, k, "#a", 2, "2")
	hw, err := db.HighWater(ctx, "#a")
	if err != nil {
		t.Fatal(err)
	}
	if got := hw[e2.From]; got != 1 {
		t.Errorf("high water before filling = %d, want 1", got)
	}
	appendAll(t, db, e2)
	if hw, err = db.HighWater(ctx, "#a"); err != nil {
		t.Fatal(err)
	}
	if got := hw[e2.From]; got != 4 {
		t.Errorf("high water after filling = %d, want 4", got)
	}
}

// TestEquivocation: a second envelope with an author's used seq is stored
// and listed, but the author index keeps the first.
func TestEquivocation(t *testing.T) {
	db := open(t, "")
	k := newKey(t)
	first, second := signed(t, k, "#a", 1, "first"), signed(t, k, "#a", 1, "second")
	curs := appendAll(t, db, first, second)
	if curs[0] == "" || curs[1] == "" {
		t.Fatalf("cursors %q, want both stored", curs)
	}
	got, err := db.Since(ctx, "#a", first.From, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"first"}; !slices.Equal(contents(got), want) {
		t.Errorf("Since = %q, want %q", contents(got), want)
	}
	all, _, err := db.After(ctx, "#a", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"first", "second"}; !slices.Equal(contents(all), want) {
		t.Errorf("After = %q, want %q", contents(all), want)
	}
}

func TestReopenOffsetsMonotonic(t *testing.T) {
	dir := t.TempDir()
	k := newKey(t)
	var all []string
	seq := uint64(0)
	for round := range 3 {
		db := open(t, dir)
		for i := range 3 {
			seq++
			// Alternate channels so per-channel paging sees the gaps.
			all = append(all, appendAll(t, db, signed(t, k, []string{"#a", "#b"}[i%2], seq, nth("r", round)))...)
		}
		if got, want := db.Stats().LastOffset, uint64(len(all)); got != want {
			t.Errorf("round %d: LastOffset = %d, want %d", round, got, want)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.IsSorted(all) || len(slices.Compact(slices.Clone(all))) != len(all) {
		t.Errorf("cursors across reopen not strictly increasing: %q", all)
	}
}

func TestConcurrentAppend(t *testing.T) {
	db := open(t, "")
	const writers, per = 16, 30
	keys := make([]any, writers)
	envs := make([][]*mesh.Envelope, writers)
	for w := range writers {
		k := newKey(t)
		keys[w] = k
		for i := range per {
			envs[w] = append(envs[w], signed(t, k, "#c", uint64(i+1), nth("m", i)))
		}
	}
	var (
		mu   sync.Mutex
		curs []string
		wg   sync.WaitGroup
	)
	for w := range writers {
		wg.Go(func() {
			for _, e := range envs[w] {
				// Every writer also appends one envelope of its neighbour, so
				// duplicates race across batches.
				c, err := db.Append(ctx, []*mesh.Envelope{e, envs[(w+1)%writers][0]})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for _, x := range c {
					if x != "" {
						curs = append(curs, x)
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if got, want := len(curs), writers*per; got != want {
		t.Fatalf("%d cursors, want %d", got, want)
	}
	slices.Sort(curs)
	if n := len(slices.Compact(slices.Clone(curs))); n != len(curs) {
		t.Errorf("%d distinct cursors of %d", n, len(curs))
	}
	got, gotCurs, err := db.After(ctx, "#c", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != writers*per || !slices.Equal(gotCurs, curs) {
		t.Errorf("After returned %d envelopes; cursors match: %v", len(got), slices.Equal(gotCurs, curs))
	}
	hw, err := db.HighWater(ctx, "#c")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range envs {
		if hw[e[0].From] != per {
			t.Errorf("high water of %s = %d, want %d", e[0].From, hw[e[0].From], per)
		}
	}
	st := db.Stats()
	if st.Appends != writers*per || st.Duplicates != writers*per {
		t.Errorf("stats appends=%d duplicates=%d, want %d each", st.Appends, st.Duplicates, writers*per)
	}
	t.Logf("stats: %+v", st)
}

func TestAppendRejectsInvalid(t *testing.T) {
	db := open(t, "")
	k := newKey(t)
	good := signed(t, k, "#a", 1, "ok")
	mut := func(f func(e *mesh.Envelope)) *mesh.Envelope {
		e := *good
		e.Sig = slices.Clone(good.Sig)
		f(&e)
		return &e
	}
	tests := []struct {
		name string
		env  *mesh.Envelope
	}{
		{"nil", nil},
		{"empty", &mesh.Envelope{}},
		{"upper-case id", mut(func(e *mesh.Envelope) { e.ID = strings.ToUpper(e.ID) })},
		{"short id", mut(func(e *mesh.Envelope) { e.ID = e.ID[:63] })},
		{"id not content hash", mut(func(e *mesh.Envelope) { e.Content = "changed" })},
		{"bad channel", mut(func(e *mesh.Envelope) { e.Channel = "#A" })},
		{"channel with NUL", mut(func(e *mesh.Envelope) { e.Channel = "#a\x00b" })},
		{"from with NUL", mut(func(e *mesh.Envelope) { e.From = e.From + "\x00x" })},
		{"empty from", mut(func(e *mesh.Envelope) { e.From = "" })},
		{"seq zero", mut(func(e *mesh.Envelope) { e.Seq = 0 })},
		{"short sig", mut(func(e *mesh.Envelope) { e.Sig = e.Sig[:10] })},
		{"no sig", mut(func(e *mesh.Envelope) { e.Sig = nil })},
		{"content too large", mut(func(e *mesh.Envelope) { e.Content = strings.Repeat("x", mesh.MaxContentLen+1) })},
		{"name with newline", mut(func(e *mesh.Envelope) { e.Name = "a\nb" })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The bad envelope comes after a good one: nothing may be written.
			curs, err := db.Append(ctx, []*mesh.Envelope{good, tt.env})
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Append err = %v (cursors %q), want ErrInvalid", err, curs)
			}
		})
	}
	if chans, err := db.Channels(ctx); err != nil || len(chans) != 0 {
		t.Errorf("Channels = %q, %v; want none", chans, err)
	}
	if _, err := db.Get(ctx, good.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(good) err = %v, want ErrNotFound", err)
	}
	if st := db.Stats(); st.Appends != 0 || st.Rejected != uint64(len(tests)) {
		t.Errorf("stats %+v, want 0 appends and %d rejected", st, len(tests))
	}
	if c, err := db.Append(ctx, nil); err != nil || len(c) != 0 {
		t.Errorf("Append(nil) = %q, %v; want empty, nil", c, err)
	}
}

func TestGetNotFound(t *testing.T) {
	db := open(t, "")
	for _, id := range []string{"", "xyz", strings.Repeat("0", 64), strings.Repeat("A", 64)} {
		if _, err := db.Get(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%q) err = %v, want ErrNotFound", id, err)
		}
	}
}

func TestCorruptRecords(t *testing.T) {
	k := newKey(t)
	truncated := append([]byte{msgVersion, 0, 0, 0, 0, 0, 0, 0, 1}, signed(t, k, "#a", 9, "x").Marshal()[:50]...)
	tests := []struct {
		name  string
		key   func(e *mesh.Envelope, cursor string) []byte
		value []byte
	}{
		{"garbage message", func(e *mesh.Envelope, _ string) []byte { id, _ := parseID(e.ID); return msgKey(id) }, []byte("garbage")},
		{"empty message", func(e *mesh.Envelope, _ string) []byte { id, _ := parseID(e.ID); return msgKey(id) }, nil},
		{"truncated envelope", func(e *mesh.Envelope, _ string) []byte { id, _ := parseID(e.ID); return msgKey(id) }, truncated},
		{"log points at short id", func(e *mesh.Envelope, c string) []byte { off, _, _ := parseCursor(c); return logKey(e.Channel, off) }, []byte("short")},
		{"log points at missing id", func(e *mesh.Envelope, c string) []byte { off, _, _ := parseCursor(c); return logKey(e.Channel, off) }, make([]byte, 32)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := open(t, "")
			e := signed(t, k, "#a", 1, "fine")
			c := appendAll(t, db, e)[0]
			if err := db.bdb.Update(func(txn *badger.Txn) error { return txn.Set(tt.key(e, c), tt.value) }); err != nil {
				t.Fatal(err)
			}
			if _, _, err := db.After(ctx, "#a", "", 0); !errors.Is(err, ErrCorrupt) {
				t.Errorf("After err = %v, want ErrCorrupt", err)
			}
			if _, err := db.Since(ctx, "#a", e.From, 0, 0); strings.HasPrefix(tt.name, "garbage") && !errors.Is(err, ErrCorrupt) {
				t.Errorf("Since err = %v, want ErrCorrupt", err)
			}
		})
	}
}

func TestCloseIdempotentNoLeak(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	cfg := DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.Logger = quietLogger()
	cfg.GCInterval = time.Millisecond // the GC goroutine must run and stop too
	db, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	k := newKey(t)
	appendAll(t, db, signed(t, k, "#a", 1, "x"))
	for i := uint64(2); i < 20; i++ {
		appendAll(t, db, signed(t, k, "#a", i, "x"))
	}
	for i := range 3 {
		if err := db.Close(); err != nil {
			t.Errorf("Close #%d: %v", i, err)
		}
	}
	if _, err := db.Append(ctx, []*mesh.Envelope{signed(t, k, "#a", 2, "y")}); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close err = %v, want ErrClosed", err)
	}
	if _, _, err := db.After(ctx, "#a", "", 0); !errors.Is(err, ErrClosed) {
		t.Errorf("After after Close err = %v, want ErrClosed", err)
	}
	if _, err := db.Get(ctx, strings.Repeat("0", 64)); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close err = %v, want ErrClosed", err)
	}
	_ = db.Stats()
}

func TestCloseWhileAppending(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	cfg := DefaultConfig()
	cfg.InMemory = true
	cfg.Logger = quietLogger()
	db, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	k := newKey(t)
	var wg sync.WaitGroup
	for w := range 8 {
		e := signed(t, k, "#a", uint64(w+1), "x")
		wg.Go(func() {
			for {
				if _, err := db.Append(ctx, []*mesh.Envelope{e}); err != nil {
					if !errors.Is(err, ErrClosed) {
						t.Errorf("Append err = %v, want nil or ErrClosed", err)
					}
					return
				}
			}
		})
	}
	for db.Stats().Batches < 10 {
		// Poll until the appenders are clearly running.
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
}

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no dir", Config{}},
		{"negative batch", Config{InMemory: true, MaxBatch: -1}},
		{"bad discard ratio", Config{InMemory: true, GCDiscardRatio: 1.5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, err := New(tt.cfg)
			if err == nil {
				db.Close()
				t.Fatal("New succeeded, want error")
			}
		})
	}
}

const helperEnv = "STORE_TEST_HELPER"

// TestHelperProcess is not a test: the tests below re-exec the test binary
// to run it as a second process.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		t.Skip("helper process only")
	}
	dir := os.Getenv("STORE_TEST_DIR")
	cfg := DefaultConfig()
	cfg.Dir = dir
	cfg.Logger = quietLogger()
	switch mode {
	case "lock":
		db, err := New(cfg)
		if err == nil {
			db.Close()
			fmt.Println("opened")
			os.Exit(0)
		}
		fmt.Println(err)
		if errors.Is(err, ErrLocked) {
			os.Exit(3)
		}
		os.Exit(4)
	case "append":
		db, err := New(cfg)
		if err != nil {
			fmt.Println(err)
			os.Exit(4)
		}
		k := newKey(t)
		w := bufio.NewWriter(os.Stdout)
		for seq := uint64(1); ; seq++ {
			e := signed(t, k, "#kill", seq, "x")
			c, err := db.Append(ctx, []*mesh.Envelope{e})
			if err != nil {
				fmt.Println(err)
				os.Exit(4)
			}
			fmt.Fprintln(w, c[0], e.ID)
			w.Flush()
		}
	}
	os.Exit(5)
}

func helper(t *testing.T, mode, dir string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, "STORE_TEST_DIR="+dir)
	return cmd
}

func TestLocked(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir)
	t.Run("same process", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Dir = dir
		db2, err := New(cfg)
		if err == nil {
			db2.Close()
			t.Fatal("second New on the same dir succeeded")
		}
		if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "another confab process") {
			t.Errorf("err = %q, want ErrLocked naming %s and another confab process", err, dir)
		}
	})
	t.Run("other process", func(t *testing.T) {
		out, err := helper(t, "lock", dir).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 {
			t.Fatalf("helper: %v, output %q; want exit 3 (ErrLocked)", err, out)
		}
		if !strings.Contains(string(out), dir) || !strings.Contains(string(out), "another confab process") {
			t.Errorf("helper error %q does not name %s and another confab process", out, dir)
		}
	})
	t.Run("after close", func(t *testing.T) {
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		out, err := helper(t, "lock", dir).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "opened") {
			t.Errorf("helper after Close: %v, %q; want it to open", err, out)
		}
	})
}

// TestKill9 kills a process that is appending and checks that every
// acknowledged envelope survived and no offset is reused.
func TestKill9(t *testing.T) {
	dir := t.TempDir()
	cmd := helper(t, "append", dir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	var acked [][2]string
	for len(acked) < 200 && sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("helper said %q", sc.Text())
		}
		acked = append(acked, [2]string{f[0], f[1]})
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if len(acked) < 200 {
		t.Fatalf("helper acknowledged only %d envelopes", len(acked))
	}
	db := open(t, dir)
	for _, a := range acked {
		if _, err := db.Get(ctx, a[1]); err != nil {
			t.Fatalf("acknowledged envelope %s (cursor %s) lost: %v", a[1], a[0], err)
		}
	}
	_, curs, err := db.After(ctx, "#kill", acked[len(acked)-1][0], 0)
	if err != nil {
		t.Fatal(err)
	}
	last := acked[len(acked)-1][0]
	if len(curs) > 0 {
		last = curs[len(curs)-1]
	}
	// The search index catches up from its watermark: the last
	// acknowledged envelope is found (Search waits for the indexer).
	found, _, err := db.Search(ctx, "tester", "#kill", MaxSearchLimit)
	if err != nil || !slices.Contains(ids(found), acked[len(acked)-1][1]) {
		t.Errorf("search after restart: %d results, err %v; want the last acknowledged among them", len(found), err)
	}
	c := appendAll(t, db, signed(t, newKey(t), "#kill", 1, "after restart"))[0]
	if c <= last {
		t.Errorf("cursor after restart %s <= last stored %s", c, last)
	}
}

// TestAppendLargerThanOneTxn appends more bytes in one call than one badger
// transaction holds, so the committer must split the write.
func TestAppendLargerThanOneTxn(t *testing.T) {
	db := open(t, "")
	k := newKey(t)
	big := strings.Repeat("z", mesh.MaxContentLen-100)
	var envs []*mesh.Envelope
	n := int(db.bdb.MaxBatchSize()/int64(len(big))) + 10
	for i := range n {
		envs = append(envs, signed(t, k, "#big", uint64(i+1), big+nth("-", i)))
	}
	curs := appendAll(t, db, envs...)
	if !slices.IsSorted(curs) || slices.Contains(curs, "") {
		t.Errorf("cursors not all stored and increasing: %q", curs)
	}
	if st := db.Stats(); st.Syncs < 2 || st.Appends != uint64(n) {
		t.Errorf("stats %+v: want %d appends in at least 2 synced commits", st, n)
	}
	hw, err := db.HighWater(ctx, "#big")
	if err != nil {
		t.Fatal(err)
	}
	if got := hw[envs[0].From]; got != uint64(n) {
		t.Errorf("high water %d, want %d", got, n)
	}
}

// TestAppendManyInOneCall appends more envelopes in one call than one
// badger transaction has entries for (tiny ones, many authors, so each
// writes its own h/ key too), so the committer splits by count; and a
// batch of 1000 ordinary envelopes, which fits one transaction.
func TestAppendManyInOneCall(t *testing.T) {
	db := open(t, "")
	maxCount, _ := db.txnLimits()
	n := int(maxCount/6) + 100
	authors := make([]*mesh.Envelope, 64)
	for i := range authors {
		authors[i] = signed(t, newKey(t), "#many", 1, "x")
	}
	var envs []*mesh.Envelope
	for i := range n {
		e := *authors[i%len(authors)]
		e.Seq = uint64(i/len(authors) + 1)
		e.Content = nth("x", i)
		e.ID = e.ComputeID()
		envs = append(envs, &e)
	}
	curs := appendAll(t, db, envs...)
	if !slices.IsSorted(curs) || slices.Contains(curs, "") {
		t.Errorf("cursors not all stored and increasing")
	}
	st := db.Stats()
	if st.Syncs < 2 || st.Appends != uint64(n) {
		t.Errorf("stats %+v: want %d appends in at least 2 synced commits", st, n)
	}
	hw, err := db.HighWater(ctx, "#many")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range authors {
		if want := uint64(n / len(authors)); hw[a.From] < want {
			t.Errorf("high water %d, want at least %d", hw[a.From], want)
		}
	}

	k := newKey(t)
	var batch []*mesh.Envelope
	for i := range 1000 {
		batch = append(batch, signed(t, k, "#one", uint64(i+1), strings.Repeat("ordinary chat text ", 10)+nth("n", i)))
	}
	appendAll(t, db, batch...)
	if got := db.Stats().Syncs - st.Syncs; got != 1 {
		t.Errorf("a batch of 1000 took %d synced commits, want 1", got)
	}
}

// TestSmallAuthorCache forces the committer's per-author cache to be cleared
// between almost every batch while batches are in flight.
func TestSmallAuthorCache(t *testing.T) {
	defer func(n int) { maxAuthorCache = n }(maxAuthorCache)
	maxAuthorCache = 2
	db := open(t, "")
	const authors, per = 6, 25
	var wg sync.WaitGroup
	froms := make([]string, authors)
	for a := range authors {
		k := newKey(t)
		var envs []*mesh.Envelope
		for i := range per {
			envs = append(envs, signed(t, k, "#s", uint64(i+1), nth("m", i)))
		}
		// Swap neighbours so gaps open and close across batches.
		for i := 0; i+1 < per; i += 2 {
			envs[i], envs[i+1] = envs[i+1], envs[i]
		}
		froms[a] = envs[0].From
		wg.Go(func() {
			for _, e := range envs {
				if _, err := db.Append(ctx, []*mesh.Envelope{e, envs[0]}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	hw, err := db.HighWater(ctx, "#s")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range froms {
		if hw[f] != per {
			t.Errorf("high water of %s = %d, want %d", f, hw[f], per)
		}
	}
	if st := db.Stats(); st.Appends != authors*per {
		t.Errorf("appends = %d, want %d", st.Appends, authors*per)
	}
}
