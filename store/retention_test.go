package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"go.uber.org/goleak"

	"github.com/confabhq/confab/mesh"
)

// clock is an injectable Config.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// openRetain opens a store on a temp dir with retention settings and no
// background sweeper (tests call sweep).
func openRetain(t *testing.T, maxAge time.Duration, maxBytes int64, c *clock) *DB {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.Logger = quietLogger()
	cfg.MaxAge, cfg.MaxBytes = maxAge, maxBytes
	cfg.RetentionInterval = -1
	if c != nil {
		cfg.Now = c.Now
	}
	db, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// keysAt returns every key (as a string) that ends with offset off under the
// prefixes keyed by offset, plus m/ and a/ keys whose value or key names id.
func refs(t *testing.T, db *DB, e *mesh.Envelope, cursor string) []string {
	t.Helper()
	off, _, err := parseCursor(cursor)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := parseID(e.ID)
	suffix := binary.BigEndian.AppendUint64(nil, off)
	var found []string
	db.bdb.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			k := item.Key()
			v, _ := item.ValueCopy(nil)
			switch {
			case bytes.HasPrefix(k, []byte(prefixPosting)), bytes.HasPrefix(k, []byte(prefixArrival)), bytes.HasPrefix(k, []byte(prefixLog)):
				if bytes.HasSuffix(k, suffix) {
					found = append(found, string(k))
				}
			case bytes.HasPrefix(k, []byte(prefixMsg)), bytes.HasPrefix(k, []byte(prefixAuthor)):
				if bytes.Contains(k, id) || bytes.Equal(v, id) {
					found = append(found, string(k))
				}
			}
		}
		return nil
	})
	return found
}

func TestRetentionByAge(t *testing.T) {
	c := newClock()
	db := openRetain(t, time.Hour, 0, c)
	k := newKey(t)
	e1, e2 := signed(t, k, "#a", 1, "old apple"), signed(t, k, "#a", 2, "old banana")
	e3 := signed(t, k, "#b", 1, "old apple in b")
	curs := appendAll(t, db, e1, e2, e3)
	c.Advance(30 * time.Minute)
	e4 := signed(t, k, "#a", 3, "new apple")
	curs = append(curs, appendAll(t, db, e4)...)
	if n, err := db.sweep(); err != nil || n != 0 {
		t.Fatalf("sweep before anything expired: %d deleted, err %v", n, err)
	}
	if len(refs(t, db, e1, curs[0])) == 0 {
		t.Fatal("refs finds no keys of a stored envelope")
	}
	c.Advance(45 * time.Minute) // e1..e3 are 75 minutes old, e4 45
	n, err := db.sweep()
	if err != nil || n != 3 {
		t.Fatalf("sweep: %d deleted, err %v; want 3", n, err)
	}
	for i, e := range []*mesh.Envelope{e1, e2, e3} {
		if _, err := db.Get(ctx, e.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(e%d) err = %v, want ErrNotFound", i+1, err)
		}
		if r := refs(t, db, e, curs[i]); len(r) != 0 {
			t.Errorf("keys of deleted e%d left: %q", i+1, r)
		}
	}
	if _, err := db.Get(ctx, e4.ID); err != nil {
		t.Errorf("Get(e4): %v", err)
	}
	got, _, err := db.Search(ctx, "apple", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids(got), []string{e4.ID}) {
		t.Errorf("Search(apple) = %q, want only e4", contents(got))
	}
	if got, _, _ := db.Search(ctx, "old", "", 0); len(got) != 0 {
		t.Errorf("Search(old) = %q, want nothing", contents(got))
	}
	page, _, err := db.After(ctx, "#a", "", 0)
	if err != nil || !slices.Equal(ids(page), []string{e4.ID}) {
		t.Errorf("After(#a) = %q, err %v; want e4", contents(page), err)
	}
	if got, err := db.Since(ctx, "#a", e1.From, 0, 0); err != nil || !slices.Equal(seqs(got), []uint64{3}) {
		t.Errorf("Since = %v, err %v; want seq 3", seqs(got), err)
	}
	// High-water marks keep covering the deleted prefix.
	for ch, want := range map[string]uint64{"#a": 3, "#b": 1} {
		hw, err := db.HighWater(ctx, ch)
		if err != nil || hw[e1.From] != want {
			t.Errorf("HighWater(%s) = %v, err %v; want %d", ch, hw, err, want)
		}
	}
	chans, _ := db.Channels(ctx)
	if !slices.Equal(chans, []string{"#a", "#b"}) {
		t.Errorf("Channels = %q", chans)
	}
	st := db.Stats()
	if st.Expired != 3 || st.Trimmed != 0 || st.StoredCount != 1 {
		t.Errorf("stats %+v: want 3 expired, 0 trimmed, 1 stored", st)
	}
	// Appending continues with higher offsets and the mark advances.
	e5 := signed(t, k, "#a", 4, "later")
	if c5 := appendAll(t, db, e5)[0]; c5 <= curs[3] {
		t.Errorf("cursor after deletions %s <= %s", c5, curs[3])
	}
	if hw, _ := db.HighWater(ctx, "#a"); hw[e1.From] != 4 {
		t.Errorf("HighWater after append = %d, want 4", hw[e1.From])
	}
	if n, err := db.sweep(); err != nil || n != 0 {
		t.Errorf("second sweep: %d deleted, err %v; want 0", n, err)
	}
}

// TestRetentionClockStepsBack: arrival times never decrease, so an envelope
// stored after the clock stepped back does not expire before older ones.
func TestRetentionClockStepsBack(t *testing.T) {
	c := newClock()
	db := openRetain(t, time.Hour, 0, c)
	k := newKey(t)
	appendAll(t, db, signed(t, k, "#a", 1, "first"))
	c.Advance(-3 * time.Hour)
	appendAll(t, db, signed(t, k, "#a", 2, "second"))
	c.Advance(3*time.Hour + 30*time.Minute)
	if n, err := db.sweep(); err != nil || n != 0 {
		t.Errorf("sweep: %d deleted, err %v; want 0", n, err)
	}
	c.Advance(time.Hour)
	if n, err := db.sweep(); err != nil || n != 2 {
		t.Errorf("sweep: %d deleted, err %v; want 2", n, err)
	}
}

func TestRetentionBySize(t *testing.T) {
	k := newKey(t)
	var envs []*mesh.Envelope
	for i := range 10 {
		envs = append(envs, signed(t, k, "#a", uint64(i+1), nth("fruit number ", i+10)))
	}
	size := int64(recordSize(envs[0].Marshal()))
	tests := []struct {
		name     string
		maxBytes int64
		keep     int
	}{
		{"keep three", 3 * size, 3},
		{"just under four", 4*size - 1, 3},
		{"everything fits", 10 * size, 10},
		{"smaller than one", size / 2, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := openRetain(t, 0, tt.maxBytes, nil)
			curs := appendAll(t, db, envs...)
			n, err := db.sweep()
			if err != nil || n != 10-tt.keep {
				t.Fatalf("sweep: %d deleted, err %v; want %d", n, err, 10-tt.keep)
			}
			got, _, err := db.After(ctx, "#a", "", 0)
			if err != nil {
				t.Fatal(err)
			}
			if want := ids(envs[10-tt.keep:]); !slices.Equal(ids(got), want) {
				t.Errorf("kept %q, want the newest %d", contents(got), tt.keep)
			}
			found, _, err := db.Search(ctx, "fruit", "#a", 0)
			if err != nil || len(found) != tt.keep {
				t.Errorf("Search found %d, err %v; want %d", len(found), err, tt.keep)
			}
			for i := range 10 - tt.keep {
				if r := refs(t, db, envs[i], curs[i]); len(r) != 0 {
					t.Errorf("keys of deleted envelope %d left: %q", i, r)
				}
			}
			st := db.Stats()
			if st.Trimmed != uint64(10-tt.keep) || st.StoredBytes != int64(tt.keep)*size || st.StoredBytes > tt.maxBytes {
				t.Errorf("stats %+v: want %d trimmed, %d bytes stored", st, 10-tt.keep, int64(tt.keep)*size)
			}
		})
	}
}

// TestRetentionManyBatches deletes more envelopes than one sweep transaction
// takes, and counts envelopes stored across a reopen.
func TestRetentionManyBatches(t *testing.T) {
	c := newClock()
	cfg := DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.Logger = quietLogger()
	cfg.MaxAge, cfg.RetentionInterval, cfg.Now = time.Hour, -1, c.Now
	db, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	k := newKey(t)
	var envs []*mesh.Envelope
	n := 2*sweepBatch + 17
	for i := range n {
		envs = append(envs, signed(t, k, "#a", uint64(i+1), "word "+nth("w", i)))
	}
	appendAll(t, db, envs...)
	db.Close()
	c.Advance(2 * time.Hour)
	db, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	keep := signed(t, k, "#a", uint64(n+1), "word fresh")
	appendAll(t, db, keep)
	if got, err := db.sweep(); err != nil || got != n {
		t.Fatalf("sweep: %d deleted, err %v; want %d", got, err, n)
	}
	found, _, err := db.Search(ctx, "word", "", 0)
	if err != nil || !slices.Equal(ids(found), []string{keep.ID}) {
		t.Errorf("Search(word) = %q, err %v; want the fresh one", contents(found), err)
	}
}

// TestRetentionBackground runs the sweeper goroutine and checks Close stops it.
func TestRetentionBackground(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	c := newClock()
	cfg := DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.Logger = quietLogger()
	cfg.MaxAge, cfg.RetentionInterval, cfg.Now = time.Minute, time.Millisecond, c.Now
	db, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	k := newKey(t)
	e := signed(t, k, "#a", 1, "ephemeral")
	appendAll(t, db, e)
	c.Advance(2 * time.Minute)
	deadline := time.Now().Add(20 * time.Second)
	for db.Stats().Expired == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // polling the condition
	}
	if _, err := db.Get(ctx, e.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after background expiry err = %v, want ErrNotFound", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestRetentionConfig(t *testing.T) {
	for _, cfg := range []Config{{InMemory: true, MaxAge: -1}, {InMemory: true, MaxBytes: -1}} {
		if db, err := New(cfg); err == nil {
			db.Close()
			t.Errorf("New(%+v) succeeded, want error", cfg)
		}
	}
}

// TestRetentionConcurrent appends, sweeps and searches at once: no search
// may see a half-deleted envelope (ErrCorrupt) and every result must still
// be readable by id in the same consistent view it came from.
func TestRetentionConcurrent(t *testing.T) {
	k := newKey(t)
	var envs []*mesh.Envelope
	for i := range 600 {
		envs = append(envs, signed(t, k, "#a", uint64(i+1), nth("shared word ", i)))
	}
	size := int64(recordSize(envs[len(envs)-1].Marshal())) // the newest 50 all have this size
	db := openRetain(t, 0, 50*size, nil)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for i := 0; i < len(envs); i += 20 {
			if _, err := db.Append(ctx, envs[i:i+20]); err != nil {
				t.Error(err)
			}
		}
		close(stop)
	})
	wg.Go(func() {
		for {
			if _, err := db.sweep(); err != nil {
				t.Error(err)
				return
			}
			select {
			case <-stop:
				return
			default:
			}
		}
	})
	wg.Go(func() {
		for {
			if _, _, err := db.Search(ctx, "shared word", "#a", 0); err != nil {
				t.Error(err)
				return
			}
			select {
			case <-stop:
				return
			default:
			}
		}
	})
	wg.Wait()
	if _, err := db.sweep(); err != nil {
		t.Fatal(err)
	}
	got, _, err := db.Search(ctx, "shared", "", MaxSearchLimit)
	if err != nil {
		t.Fatal(err)
	}
	if want := envs[len(envs)-50:]; len(got) != 50 || got[0].ID != want[49].ID || got[49].ID != want[0].ID {
		t.Errorf("after the last sweep: %d results, want the newest 50", len(got))
	}
	if st := db.Stats(); st.StoredCount != 50 || st.Trimmed != uint64(len(envs)-50) {
		t.Errorf("stats %+v: want 50 stored, %d trimmed", st, len(envs)-50)
	}
}
