package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/confabhq/confab/mesh"
)

// Search page sizes: a limit <= 0 means DefaultSearchLimit, one above
// MaxSearchLimit means MaxSearchLimit.
const (
	DefaultSearchLimit = 50
	MaxSearchLimit     = 200
)

func errInvalidQuery(format string, a ...any) error {
	return fmt.Errorf("%w: %w: %s", ErrInvalid, mesh.ErrBadQuery, fmt.Sprintf(format, a...))
}

// Search returns up to limit stored envelopes that contain every word of
// query in their Content or Name, newest first (descending arrival offset),
// and their cursors. channel "" searches every channel; otherwise it must be
// a valid channel name (else an error wrapping ErrInvalid). Envelopes of
// private channels ("~...") are never indexed, so searching one returns
// nothing.
//
// Words are runs of Unicode letters and digits, matched case-insensitively
// and whole: "go" does not match "gopher". A '*' right after the last word
// makes it a prefix ("goph*" matches "gopher"). Words of one letter are
// ignored. query is invalid (an error wrapping ErrInvalid) if it is longer
// than 256 bytes, not UTF-8, has no word left, or has more than 8 distinct
// words; a prefix that matches more than 128 indexed words is invalid unless
// the query also has an exact word. limit <= 0 means DefaultSearchLimit and
// is capped at MaxSearchLimit.
//
// The index is a posting list per word, intersected in offset order (see
// doc.go), so the cost grows with the shortest list, not with the store.
//
// The index is written in the background, just after the envelopes are
// acknowledged: Search first waits (at most 2 s, or until ctx ends) for it
// to cover everything committed before the call, then searches what is
// indexed.
func (db *DB) Search(ctx context.Context, query string, channel string, limit int) ([]*mesh.Envelope, []string, error) {
	envs, curs, err := db.search(ctx, query, channel, limit)
	if err != nil {
		db.idx.searchErrors.Add(1)
		return nil, nil, err
	}
	db.idx.searches.Add(1)
	db.idx.searchResults.Add(uint64(len(envs)))
	return envs, curs, nil
}

func (db *DB) search(ctx context.Context, query string, channel string, limit int) ([]*mesh.Envelope, []string, error) {
	q, err := parseQuery(query)
	if err != nil {
		return nil, nil, fmt.Errorf("store: search %q: %w", trunc(query), err)
	}
	if channel != "" {
		if err := checkChannel("search", channel); err != nil {
			return nil, nil, err
		}
		if !indexed(channel) {
			return nil, nil, nil
		}
	}
	// Read your writes: wait (briefly) until the index covers everything
	// committed before this call.
	db.waitIndexed(ctx, db.idx.committed.Load())
	switch {
	case limit <= 0:
		limit = DefaultSearchLimit
	case limit > MaxSearchLimit:
		limit = MaxSearchLimit
	}
	var (
		envs []*mesh.Envelope
		curs []string
	)
	err = db.view(ctx, "search "+trunc(query), func(txn *badger.Txn) error {
		var lists []postings
		defer func() {
			for _, l := range lists {
				l.close()
			}
		}()
		for _, t := range q.terms {
			lists = append(lists, newPostingList(txn, t))
		}
		verifyPrefix := false
		if q.prefix != "" {
			toks, err := expandPrefix(ctx, txn, q.prefix, maxPrefixExpanded)
			switch {
			case err != nil:
				return err
			case len(toks) == 0:
				return nil
			case len(toks) > maxPrefixExpanded && len(q.terms) == 0:
				return errInvalidQuery("prefix %q matches more than %d words; make it longer or add a word", q.prefix, maxPrefixExpanded)
			case len(toks) > maxPrefixExpanded:
				verifyPrefix = true // filter the exact words' matches instead
			default:
				u := &union{}
				for _, t := range toks {
					u.lists = append(u.lists, newPostingList(txn, t))
				}
				lists = append(lists, u)
			}
		}
		if channel != "" {
			lists = append(lists, newList(txn, logPrefix(channel)))
		}
		return intersect(ctx, lists, func(off uint64) (bool, error) {
			env, err := envAt(txn, off)
			if err != nil {
				return false, err
			}
			if verifyPrefix && !matchesPrefix(envelopeTokens(env), q.prefix) {
				return true, nil
			}
			envs = append(envs, env)
			curs = append(curs, formatCursor(off))
			return len(envs) < limit, nil
		})
	})
	if err != nil {
		return nil, nil, err
	}
	return envs, curs, nil
}

// envAt loads the envelope stored at offset off through its g/ entry.
func envAt(txn *badger.Txn, off uint64) (*mesh.Envelope, error) {
	k := arrivalKey(off)
	item, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("%w: index entry %d: no arrival entry", ErrCorrupt, off)
	}
	if err != nil {
		return nil, err
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return nil, err
	}
	a, err := decodeArrival(k, v)
	if err != nil {
		return nil, err
	}
	return envByIndex(txn, a.id, "search", off)
}

// expandPrefix returns the indexed words starting with prefix, at most
// max+1 of them (more than max means "too many").
func expandPrefix(ctx context.Context, txn *badger.Txn, prefix string, max int) ([]string, error) {
	p := append([]byte(prefixPosting), prefix...)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: p})
	defer it.Close()
	var toks []string
	for it.Seek(p); it.Valid() && len(toks) <= max; {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		k := it.Item().Key()[len(prefixPosting):]
		i := bytes.IndexByte(k, 0)
		if i < 0 {
			return nil, fmt.Errorf("%w: posting key %q", ErrCorrupt, k)
		}
		toks = append(toks, string(k[:i]))
		// Skip the rest of this word's postings.
		next := append([]byte(prefixPosting), k[:i]...)
		it.Seek(append(next, 1))
	}
	return toks, nil
}

// postings is a posting list walked from newest to oldest.
type postings interface {
	// seek moves to the greatest offset <= off and returns it; ok is false
	// when no offset <= off is left.
	seek(off uint64) (got uint64, ok bool, err error)
	close()
}

// list is one prefix|offset key range (s/<word> 0x00, or l/<channel> 0x00).
// It remembers its position: the leapfrog join asks for ever smaller
// offsets, so a list already at or below the target answers without
// touching badger, and one just above it steps instead of seeking.
type list struct {
	it      *badger.Iterator
	prefix  []byte
	key     []byte
	started bool
	done    bool   // no offset <= the last target is left
	cur     uint64 // current offset, when started && !done
}

// maxSteps is how many iterator steps list.seek tries before a seek: a step
// is cheaper than a seek when the next wanted offset is near.
const maxSteps = 4

func newList(txn *badger.Txn, prefix []byte) *list {
	return &list{
		it:     txn.NewIterator(badger.IteratorOptions{Prefix: prefix, Reverse: true}),
		prefix: prefix,
	}
}

func (l *list) seek(off uint64) (uint64, bool, error) {
	switch {
	case l.done:
		return 0, false, nil
	case l.started && l.cur <= off:
		return l.cur, true, nil
	case l.started:
		for range maxSteps {
			l.it.Next()
			if err := l.load(); err != nil || l.done || l.cur <= off {
				return l.cur, !l.done, err
			}
		}
	}
	l.started = true
	l.key = binary.BigEndian.AppendUint64(append(l.key[:0], l.prefix...), off)
	l.it.Seek(l.key)
	err := l.load()
	return l.cur, !l.done, err
}

// load reads the offset at the iterator's position.
func (l *list) load() error {
	if !l.it.Valid() {
		l.done = true
		return nil
	}
	k := l.it.Item().Key()
	if len(k) != len(l.prefix)+8 {
		l.done = true
		return fmt.Errorf("%w: index key %q", ErrCorrupt, k)
	}
	l.cur = be64(k[len(l.prefix):])
	return nil
}

func (l *list) close() { l.it.Close() }

// postingList is a word's posting lists (postings.go), walked from newest to
// oldest: the badger iterator moves from list to list, and the current
// list's offsets are decoded in memory. Like list, it remembers its
// position.
type postingList struct {
	it      *badger.Iterator
	prefix  []byte
	key     []byte
	offs    []uint64 // the current list, ascending
	i       int      // position of cur in offs
	started bool
	done    bool
	cur     uint64
}

func newPostingList(txn *badger.Txn, word string) *postingList {
	prefix := postingPrefix(word)
	return &postingList{
		it:     txn.NewIterator(badger.IteratorOptions{Prefix: prefix, Reverse: true}),
		prefix: prefix,
	}
}

func (l *postingList) seek(off uint64) (uint64, bool, error) {
	switch {
	case l.done:
		return 0, false, nil
	case l.started && l.cur <= off:
		return l.cur, true, nil
	case l.started:
		if l.pick(off, l.i) {
			return l.cur, true, nil
		}
		// Nothing <= off left in this list: the earlier lists hold smaller
		// offsets. Step to them, then seek.
		for range maxSteps {
			l.it.Next()
			if err := l.load(); err != nil || l.done {
				return 0, false, err
			}
			if l.pick(off, len(l.offs)) {
				return l.cur, true, nil
			}
		}
	}
	l.started = true
	l.key = binary.BigEndian.AppendUint64(append(l.key[:0], l.prefix...), off)
	l.it.Seek(l.key) // the last list whose first offset is <= off
	if err := l.load(); err != nil || l.done {
		return 0, false, err
	}
	if !l.pick(off, len(l.offs)) {
		l.done = true
		return 0, false, fmt.Errorf("%w: posting list %q starts after its key", ErrCorrupt, l.it.Item().Key())
	}
	return l.cur, true, nil
}

// pick moves to the greatest offset <= off among offs[:n]; it reports
// whether there is one.
func (l *postingList) pick(off uint64, n int) bool {
	j := sort.Search(n, func(j int) bool { return l.offs[j] > off })
	if j == 0 {
		return false
	}
	l.i, l.cur = j-1, l.offs[j-1]
	return true
}

// load decodes the list at the iterator's position.
func (l *postingList) load() error {
	if !l.it.Valid() {
		l.done = true
		return nil
	}
	item := l.it.Item()
	k := item.Key()
	if len(k) != len(l.prefix)+8 {
		l.done = true
		return fmt.Errorf("%w: index key %q", ErrCorrupt, k)
	}
	first := be64(k[len(l.prefix):])
	err := item.Value(func(v []byte) (err error) {
		l.offs, err = decodePostings(first, v, l.offs[:0])
		return err
	})
	if err != nil {
		l.done = true
	}
	return err
}

func (l *postingList) close() { l.it.Close() }

// union is the union of lists (the words a prefix expands to).
type union struct{ lists []postings }

func (u *union) seek(off uint64) (uint64, bool, error) {
	var best uint64
	found := false
	live := u.lists[:0]
	for _, l := range u.lists {
		o, ok, err := l.seek(off)
		if err != nil {
			return 0, false, err
		}
		if !ok {
			l.close() // exhausted for every later (smaller) off too
			continue
		}
		live = append(live, l)
		if !found || o > best {
			best, found = o, true
		}
	}
	clear(u.lists[len(live):])
	u.lists = live
	return best, found, nil
}

func (u *union) close() {
	for _, l := range u.lists {
		l.close()
	}
	u.lists = nil
}

// intersect calls emit with every offset present in all lists, in descending
// order, until emit returns false, a list is exhausted, or ctx ends. It is a
// leapfrog join: each list seeks to the current candidate, and a smaller
// answer becomes the new candidate, so long lists are skipped through by the
// short ones.
func intersect(ctx context.Context, lists []postings, emit func(off uint64) (bool, error)) error {
	n := len(lists)
	if n == 0 {
		return nil
	}
	target := ^uint64(0)
	for steps := 0; ; {
		agree := 0
		for i := 0; agree < n; i = (i + 1) % n {
			if steps++; steps%1024 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			o, ok, err := lists[i].seek(target)
			if err != nil || !ok {
				return err
			}
			if o == target {
				agree++
			} else {
				target, agree = o, 1
			}
		}
		more, err := emit(target)
		if err != nil || !more || target <= 1 {
			return err
		}
		target--
	}
}

// matchesPrefix reports whether any of toks starts with prefix.
func matchesPrefix(toks []string, prefix string) bool {
	for _, t := range toks {
		if strings.HasPrefix(t, prefix) {
			return true
		}
	}
	return false
}
