package store

import (
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/confabhq/confab/mesh"
)

func TestPostingsEncoding(t *testing.T) {
	for _, offs := range [][]uint64{{1}, {7, 8}, {1, 2, 300, 301, 1 << 40, 1<<40 + 1}, {^uint64(0) - 1, ^uint64(0)}} {
		v := encodePostings(offs)
		got, err := decodePostings(offs[0], v, nil)
		if err != nil || !slices.Equal(got, offs) {
			t.Errorf("round trip of %v: %v, %v", offs, got, err)
		}
	}
	if v := encodePostings([]uint64{5}); v != nil {
		t.Errorf("a list of one encodes as %x, want nothing (the version 2 posting)", v)
	}
	for _, tt := range []struct {
		name  string
		first uint64
		v     []byte
	}{
		{"gap of zero", 1, []byte{0}},
		{"truncated varint", 1, []byte{0x80}},
		{"overflow", ^uint64(0), []byte{1}},
		{"varint too long", 1, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
	} {
		if _, err := decodePostings(tt.first, tt.v, nil); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err %v, want ErrCorrupt", tt.name, err)
		}
	}
}

// FuzzDecodePostings: stored posting values never panic the decoder, and
// what decodes is strictly increasing and encodes back to the same bytes.
func FuzzDecodePostings(f *testing.F) {
	f.Add(uint64(1), []byte(nil))
	f.Add(uint64(3), encodePostings([]uint64{3, 4, 1000, 1 << 33}))
	f.Add(uint64(1), []byte{0})
	f.Fuzz(func(t *testing.T, first uint64, v []byte) {
		offs, err := decodePostings(first, v, nil)
		if err != nil {
			return
		}
		for i := 1; i < len(offs); i++ {
			if offs[i] <= offs[i-1] {
				t.Fatalf("not increasing: %v", offs)
			}
		}
		if got := encodePostings(offs); string(got) != string(v) && len(v) > 0 {
			// Uvarint accepts non-minimal encodings; those decode fine but
			// encode shorter. Only a minimal input must come back as is.
			if again, err := decodePostings(first, got, nil); err != nil || !slices.Equal(again, offs) {
				t.Fatalf("re-encoding %v: %v, %v", offs, again, err)
			}
		}
	})
}

// model is what a store holds, for brute-force search answers.
type model struct {
	envs []*mesh.Envelope
	curs []string
	gone int // the oldest gone envelopes were deleted
}

func (m *model) search(q query, channel string) []string {
	var out []string
	for i := len(m.envs) - 1; i >= m.gone && len(out) < MaxSearchLimit; i-- {
		e := m.envs[i]
		if channel != "" && e.Channel != channel {
			continue
		}
		toks := envelopeTokens(e)
		ok := true
		for _, w := range q.terms {
			ok = ok && slices.Contains(toks, w)
		}
		if q.prefix != "" {
			ok = ok && matchesPrefix(toks, q.prefix)
		}
		if ok {
			out = append(out, e.ID)
		}
	}
	return out
}

// checkSearches compares Search with the model for every query.
func checkSearches(t *testing.T, db *DB, m *model, stage string) {
	t.Helper()
	queries := []string{"apple", "banana", "cherry", "fig", "grape", "apple banana", "cherry fig grape", "wor*", "apple wor*", "worth", "worse date", "elder"}
	for _, qs := range queries {
		q, err := parseQuery(qs)
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range []string{"", "#a", "#b"} {
			got, _, err := db.Search(ctx, qs, ch, MaxSearchLimit)
			if err != nil {
				t.Fatalf("%s: Search(%q, %q): %v", stage, qs, ch, err)
			}
			if want := m.search(q, ch); !slices.Equal(ids(got), want) {
				t.Errorf("%s: Search(%q, %q): %d results, want %d", stage, qs, ch, len(got), len(want))
			}
		}
	}
}

// TestPostingsMatchBruteForce: search over packed posting lists (many
// indexer transactions of different sizes, lists cut by retention, version 2
// lists of one after an upgrade) answers exactly what a brute-force scan of
// the stored envelopes does.
func TestPostingsMatchBruteForce(t *testing.T) {
	gate := holdIndexer(t, 10*time.Second)
	rng := rand.New(rand.NewPCG(1, 2))
	vocab := strings.Fields("apple banana cherry date elder fig grape wordy worse worth")
	keys := map[string]*struct {
		seq uint64
	}{"#a": {}, "#b": {}}
	k := newKey(t)
	next := func() *mesh.Envelope {
		ch := []string{"#a", "#b"}[rng.IntN(2)]
		keys[ch].seq++
		var words []string
		for range 1 + rng.IntN(5) {
			words = append(words, vocab[rng.IntN(len(vocab))])
		}
		return signed(t, k, ch, keys[ch].seq, strings.Join(words, " "))
	}
	dir := t.TempDir()
	openAt := func(maxBytes int64) *DB {
		cfg := DefaultConfig()
		cfg.Dir = dir
		cfg.Logger = quietLogger()
		cfg.MaxBytes = maxBytes
		cfg.RetentionInterval = -1
		db, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	m := &model{}
	add := func(db *DB, n int, gated bool) {
		var chunk []*mesh.Envelope
		for range n {
			chunk = append(chunk, next())
		}
		m.curs = append(m.curs, appendAll(t, db, chunk...)...)
		m.envs = append(m.envs, chunk...)
		if gated {
			gate <- struct{}{} // one indexer transaction for the chunk
		}
		waitForIndex(t, db)
	}
	db := openAt(1 << 40)
	for range 30 {
		add(db, 1+rng.IntN(40), true)
	}
	checkSearches(t, db, m, "packed")
	if offs, keys := len(postingOffsets(t, db, "apple")), countKeys(t, db, postingPrefix("apple")); offs == 0 || keys >= offs {
		t.Fatalf("apple: %d postings in %d keys, want lists of several", offs, keys)
	}

	// Retention cuts lists at their start, middle and end.
	cut := func(keep int) {
		t.Helper()
		var total int64
		for _, e := range m.envs[len(m.envs)-keep:] {
			total += int64(recordSize(e.Marshal()))
		}
		db.cfg.MaxBytes = total
		if n, err := db.sweep(); err != nil || n != len(m.envs)-keep-m.gone {
			t.Fatalf("sweep deleted %d, err %v; want %d", n, err, len(m.envs)-keep-m.gone)
		}
		m.gone = len(m.envs) - keep
	}
	cut(len(m.envs) * 2 / 3)
	checkSearches(t, db, m, "after retention")
	add(db, 50, true)
	checkSearches(t, db, m, "appended after retention")

	// A version 2 store: every posting a key of its own.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	close(gate)
	raw, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	err = raw.Update(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixPosting)})
		var lists [][2][]byte
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			lists = append(lists, [2][]byte{it.Item().KeyCopy(nil), v})
		}
		it.Close()
		for _, l := range lists {
			prefix := l[0][:len(l[0])-8]
			offs, err := decodePostings(be64(l[0][len(prefix):]), l[1], nil)
			if err != nil {
				return err
			}
			for _, off := range offs {
				if err := txn.Set(binaryKey(prefix, off), nil); err != nil {
					return err
				}
			}
		}
		return txn.Set(keyIndexVersion, []byte{2})
	})
	if err == nil {
		err = raw.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	db = openAt(1 << 40)
	if offs, keys := len(postingOffsets(t, db, "apple")), countKeys(t, db, postingPrefix("apple")); offs != keys {
		t.Fatalf("apple in the version 2 store: %d postings in %d keys, want one each", offs, keys)
	}
	err = db.bdb.View(func(txn *badger.Txn) error {
		item, err := txn.Get(keyIndexVersion)
		if err != nil {
			return err
		}
		v, err := item.ValueCopy(nil)
		if len(v) != 1 || v[0] != indexVersion {
			t.Errorf("index version %v after opening a version 2 store, want %d", v, indexVersion)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	checkSearches(t, db, m, "upgraded from version 2")
	add(db, 30, false)
	checkSearches(t, db, m, "appended after the upgrade")
	cut((len(m.envs) - m.gone) / 2)
	checkSearches(t, db, m, "retention after the upgrade")
}

func binaryKey(prefix []byte, off uint64) []byte {
	return append(slices.Clone(prefix), byte(off>>56), byte(off>>48), byte(off>>40), byte(off>>32), byte(off>>24), byte(off>>16), byte(off>>8), byte(off))
}

func countKeys(t *testing.T, db *DB, prefix []byte) int {
	t.Helper()
	n := 0
	err := db.bdb.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
