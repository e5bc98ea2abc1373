package store

import (
	"encoding/binary"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/confabhq/confab/mesh"
)

// holdIndexer makes the indexer of every DB opened from now on wait for a
// value on the returned channel before each batch, and Search wait at most
// wait for it. Closing the channel lets it run freely.
func holdIndexer(t *testing.T, wait time.Duration) chan struct{} {
	t.Helper()
	gate := make(chan struct{})
	oldGate, oldWait := testIndexGate, indexWait
	testIndexGate, indexWait = gate, wait
	t.Cleanup(func() { testIndexGate, indexWait = oldGate, oldWait })
	return gate
}

// waitForIndex polls until db's index covers its last offset.
func waitForIndex(t *testing.T, db *DB) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := db.Stats()
		if st.Indexed >= st.LastOffset {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("index stuck at %d of %d", st.Indexed, st.LastOffset)
		}
		time.Sleep(time.Millisecond)
	}
}

func searchIDs(t *testing.T, db *DB, q string) []string {
	t.Helper()
	got, _, err := db.Search(ctx, q, "", MaxSearchLimit)
	if err != nil {
		t.Fatal(err)
	}
	return ids(got)
}

// TestIndexLags: appends are acknowledged before they are indexed; Search
// answers from what is indexed once its wait runs out, and finds everything
// when the indexer catches up.
func TestIndexLags(t *testing.T) {
	gate := holdIndexer(t, 20*time.Millisecond)
	db := open(t, "")
	k := newKey(t)
	e1, e2 := signed(t, k, "#a", 1, "lagging walrus"), signed(t, k, "#a", 2, "lagging narwhal")
	appendAll(t, db, e1, e2)
	if got := searchIDs(t, db, "lagging"); len(got) != 0 {
		t.Errorf("search before indexing = %q, want nothing", got)
	}
	if st := db.Stats(); st.Indexed != 0 || st.LastOffset != 2 {
		t.Errorf("stats: indexed %d, last %d; want 0 and 2", st.Indexed, st.LastOffset)
	}
	// Readers other than Search do not wait for the index.
	if page, _, err := db.After(ctx, "#a", "", 0); err != nil || len(page) != 2 {
		t.Errorf("After = %d envelopes, err %v; want 2", len(page), err)
	}
	close(gate)
	waitForIndex(t, db)
	if got, want := searchIDs(t, db, "lagging"), []string{e2.ID, e1.ID}; !slices.Equal(got, want) {
		t.Errorf("search after indexing = %q, want %q", got, want)
	}
}

// TestSearchReadsItsWrites: with the indexer free, a Search right after an
// acknowledged Append finds it (Search waits for the index to cover what was
// committed before it).
func TestSearchReadsItsWrites(t *testing.T) {
	db := open(t, "")
	k := newKey(t)
	for seq := uint64(1); seq <= 50; seq++ {
		e := signed(t, k, "#a", seq, nth("word", int(seq))+" common")
		appendAll(t, db, e)
		if got := searchIDs(t, db, nth("word", int(seq))); !slices.Equal(got, []string{e.ID}) {
			t.Fatalf("search right after append %d = %q, want it", seq, got)
		}
	}
}

// paceIndexer sets the indexer's pacing for DBs opened from now on.
func paceIndexer(t *testing.T, quiet, maxLag time.Duration) {
	t.Helper()
	oldQuiet, oldLag := indexQuiet, indexMaxLag
	indexQuiet, indexMaxLag = quiet, maxLag
	t.Cleanup(func() { indexQuiet, indexMaxLag = oldQuiet, oldLag })
}

// TestSearchHurriesPacedIndexer: an indexer waiting for the appends to
// pause (here: an hour) starts at once when Search waits for it, so Search
// still reads its writes.
func TestSearchHurriesPacedIndexer(t *testing.T) {
	paceIndexer(t, time.Hour, time.Hour)
	oldWait := indexWait
	indexWait = 10 * time.Second // longer than the hurried indexer needs; it must not be what ends the wait
	t.Cleanup(func() { indexWait = oldWait })
	db := open(t, "")
	e := signed(t, newKey(t), "#c", 1, "hurried words")
	if _, err := db.Append(ctx, []*mesh.Envelope{e}); err != nil {
		t.Fatal(err)
	}
	if got, want := searchIDs(t, db, "hurried"), []string{e.ID}; !slices.Equal(got, want) {
		t.Fatalf("search: got %v, want %v", got, want)
	}
}

// TestPacedIndexerMaxLag: with appends that never pause (here: a pause must
// last an hour), the indexer still covers every commit within indexMaxLag.
func TestPacedIndexerMaxLag(t *testing.T) {
	paceIndexer(t, time.Hour, 50*time.Millisecond)
	db := open(t, "")
	if _, err := db.Append(ctx, []*mesh.Envelope{signed(t, newKey(t), "#c", 1, "lagging")}); err != nil {
		t.Fatal(err)
	}
	waitForIndex(t, db)
}

// TestIndexResumesAfterReopen: envelopes acknowledged but not yet indexed
// when the store stopped (as after a crash: the postings and the watermark
// are written together) are indexed after reopening, from the watermark.
func TestIndexResumesAfterReopen(t *testing.T) {
	dir := t.TempDir()
	k := newKey(t)
	holdIndexer(t, 20*time.Millisecond)
	db := open(t, dir)
	var want []string
	for seq := uint64(1); seq <= 300; seq++ {
		e := signed(t, k, "#a", seq, "resume test")
		appendAll(t, db, e)
		want = append(want, e.ID)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	testIndexGate = nil
	db = open(t, dir)
	waitForIndex(t, db)
	slices.Reverse(want)
	if got := searchIDs(t, db, "resume"); !slices.Equal(got, want[:MaxSearchLimit]) {
		t.Errorf("after reopen: %d results, want the newest %d", len(got), MaxSearchLimit)
	}
	if got := searchIDs(t, db, "resume test"); len(got) != MaxSearchLimit {
		t.Errorf("after reopen: %d results for two words, want %d", len(got), MaxSearchLimit)
	}
	// Postings exist exactly once per word and envelope.
	if got := postingOffsets(t, db, "resume"); len(got) != 300 || !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != 300 {
		t.Errorf("%d postings of resume, want 300 distinct", len(got))
	}
}

// TestIndexUpgradeFromV1: a store written when postings went with every
// envelope (version 1, no watermark) is taken as fully indexed.
func TestIndexUpgradeFromV1(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir)
	cur := searchFixture(t, db)
	waitForIndex(t, db)
	err := db.bdb.Update(func(txn *badger.Txn) error {
		if err := txn.Delete(keyIndexed); err != nil {
			return err
		}
		return txn.Set(keyIndexVersion, []byte{1})
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	holdIndexer(t, 20*time.Millisecond) // the upgrade must not need the indexer
	db = open(t, dir)
	if st := db.Stats(); st.Indexed != st.LastOffset || st.LastOffset != uint64(len(cur)) {
		t.Errorf("after upgrade: indexed %d, last %d; want both %d", st.Indexed, st.LastOffset, len(cur))
	}
	if got := searchIDs(t, db, "hello"); len(got) != 3 {
		t.Errorf("search after upgrade: %d results, want 3", len(got))
	}
	var mark []byte
	db.bdb.View(func(txn *badger.Txn) error {
		item, err := txn.Get(keyIndexed)
		if err == nil {
			mark, _ = item.ValueCopy(nil)
		}
		return err
	})
	if !slices.Equal(mark, binary.BigEndian.AppendUint64(nil, uint64(len(cur)))) {
		t.Errorf("watermark %x, want %d", mark, len(cur))
	}
}

// TestRetentionWaitsForIndex: a retention pass deletes only indexed
// envelopes, so no posting of a deleted envelope can be written after it.
func TestRetentionWaitsForIndex(t *testing.T) {
	gate := holdIndexer(t, 20*time.Millisecond)
	c := newClock()
	db := openRetain(t, time.Hour, 0, c)
	k := newKey(t)
	e1, e2 := signed(t, k, "#a", 1, "expiring apple"), signed(t, k, "#a", 2, "expiring pear")
	curs := appendAll(t, db, e1, e2)
	c.Advance(2 * time.Hour)
	if n, err := db.sweep(); err != nil || n != 0 {
		t.Fatalf("sweep with nothing indexed: %d deleted, err %v; want 0", n, err)
	}
	close(gate)
	waitForIndex(t, db)
	if n, err := db.sweep(); err != nil || n != 2 {
		t.Fatalf("sweep after indexing: %d deleted, err %v; want 2", n, err)
	}
	for i, e := range []*mesh.Envelope{e1, e2} {
		if r := refs(t, db, e, curs[i]); len(r) != 0 {
			t.Errorf("keys of deleted e%d left: %q", i+1, r)
		}
	}
	if got := searchIDs(t, db, "expiring"); len(got) != 0 {
		t.Errorf("search after deletion = %q", got)
	}
}

// TestDuplicateAcrossReopen: the in-order fast path (no m/ read when the seq
// is above the author's highest) still refuses duplicates after a restart,
// including an equivocating envelope and a replay of the author's latest.
func TestDuplicateAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	k := newKey(t)
	db := open(t, dir)
	e1, e2, e3 := signed(t, k, "#a", 1, "one"), signed(t, k, "#a", 2, "two"), signed(t, k, "#a", 3, "three")
	appendAll(t, db, e1, e3) // a gap at 2
	db.Close()
	db = open(t, dir)
	other := signed(t, k, "#a", 3, "three, said again differently")
	curs, err := db.Append(ctx, []*mesh.Envelope{e3, e1, e2, e2, other})
	if err != nil {
		t.Fatal(err)
	}
	got := []bool{}
	for _, c := range curs {
		got = append(got, c != "")
	}
	if want := []bool{false, false, true, false, true}; !slices.Equal(got, want) {
		t.Errorf("stored = %v, want %v", got, want)
	}
	if hw, _ := db.HighWater(ctx, "#a"); hw[e1.From] != 3 {
		t.Errorf("high water %d, want 3", hw[e1.From])
	}
	if st := db.Stats(); st.Appends != 2 || st.Duplicates != 3 {
		t.Errorf("stats: %d appends, %d duplicates; want 2 and 3", st.Appends, st.Duplicates)
	}
}

// TestIndexHandOffOverflow: when the indexer falls further behind than the
// in-memory hand-off holds, it reads from disk, catches up, and then takes
// the hand-off again.
func TestIndexHandOffOverflow(t *testing.T) {
	old := maxPend
	maxPend = 8
	t.Cleanup(func() { maxPend = old })
	gate := holdIndexer(t, 20*time.Millisecond)
	db := open(t, "")
	k := newKey(t)
	var want []string
	for seq := uint64(1); seq <= 40; seq++ {
		e := signed(t, k, "#a", seq, "overflow "+nth("w", int(seq)))
		appendAll(t, db, e)
		want = append(want, e.ID)
	}
	db.idx.pendMu.Lock()
	ok, held := db.idx.pendOK, len(db.idx.pend)
	db.idx.pendMu.Unlock()
	if ok {
		t.Error("hand-off still on after overflowing")
	}
	if held != maxPend {
		t.Errorf("hand-off holds %d envelopes after overflowing, want the first %d (kept, not read back)", held, maxPend)
	}
	close(gate)
	waitForIndex(t, db)
	slices.Reverse(want)
	if got := searchIDs(t, db, "overflow"); !slices.Equal(got, want) {
		t.Errorf("after catching up: %d results, want %d", len(got), len(want))
	}
	e := signed(t, k, "#a", 41, "overflow after")
	appendAll(t, db, e)
	if got := searchIDs(t, db, "after"); !slices.Equal(got, []string{e.ID}) {
		t.Errorf("after the hand-off resumed: %q", got)
	}
	db.idx.pendMu.Lock()
	ok = db.idx.pendOK
	db.idx.pendMu.Unlock()
	if !ok {
		t.Error("hand-off did not resume")
	}
}

// TestIndexSplitsLargeBatches: a hand-off holding more postings than one
// badger transaction takes is written in several, without falling back.
func TestIndexSplitsLargeBatches(t *testing.T) {
	gate := holdIndexer(t, 20*time.Millisecond)
	var logs strings.Builder
	cfg := DefaultConfig()
	cfg.InMemory = true
	cfg.Logger = slog.New(slog.NewTextHandler(&syncWriter{w: &logs}, nil))
	db, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	k := newKey(t)
	words := " alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike"
	const n = 1500
	var envs []*mesh.Envelope
	for seq := uint64(1); seq <= n; seq++ {
		// 14 words of its own: a list each, so the postings outgrow a
		// transaction.
		own := nth("w", int(seq))
		for c := 'a'; c < 'n'; c++ {
			own += " " + nth(string(c), int(seq))
		}
		envs = append(envs, signed(t, k, "#a", seq, own+words))
	}
	appendAll(t, db, envs...)
	close(gate)
	waitForIndex(t, db)
	if got := searchIDs(t, db, "w1"); !slices.Equal(got, []string{envs[0].ID}) {
		t.Errorf("first envelope: %q", got)
	}
	if got := searchIDs(t, db, nth("w", n)+" mike"); !slices.Equal(got, []string{envs[n-1].ID}) {
		t.Errorf("last envelope: %q", got)
	}
	if st := db.Stats(); st.IndexBatches < 2 {
		t.Errorf("%d index transactions, want several", st.IndexBatches)
	}
	db.Close()
	if strings.Contains(logs.String(), "indexer") {
		t.Errorf("indexer logged: %s", logs.String())
	}
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}

// postingOffsets returns every offset in word's posting lists, in key
// order.
func postingOffsets(t *testing.T, db *DB, word string) []uint64 {
	t.Helper()
	var offs []uint64
	prefix := postingPrefix(word)
	err := db.bdb.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			err := it.Item().Value(func(v []byte) (err error) {
				offs, err = decodePostings(be64(it.Item().Key()[len(prefix):]), v, offs)
				return err
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return offs
}
