package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// sweepBatch caps how many envelopes one retention transaction deletes.
const sweepBatch = 256

// retainLoop runs a retention pass every RetentionInterval until Close.
func (db *DB) retainLoop() {
	defer db.wg.Done()
	t := time.NewTicker(db.cfg.RetentionInterval)
	defer t.Stop()
	for {
		select {
		case <-db.closing:
			return
		case <-t.C:
		}
		if _, err := db.sweep(); err != nil && !errors.Is(err, ErrClosed) {
			db.log.Warn("retention sweep", "err", err)
		}
	}
}

// sweep runs one retention pass: it counts the envelopes stored since the
// last pass, deletes the oldest (by offset) while they are older than MaxAge
// or the total is over MaxBytes, then runs the value-log GC if it deleted
// anything. It returns how many envelopes it deleted. It stops early, with
// ErrClosed, when Close starts.
func (db *DB) sweep() (int, error) {
	x := &db.idx
	// Only indexed offsets are deleted (see sweepBatch): let the indexer
	// catch up with what is committed first.
	db.waitIndexed(context.Background(), x.committed.Load())
	x.sweepMu.Lock()
	defer x.sweepMu.Unlock()
	if err := db.countNew(); err != nil {
		return 0, fmt.Errorf("store: sweep: %w", err)
	}
	cutoff := int64(math.MinInt64)
	if db.cfg.MaxAge > 0 {
		cutoff = db.cfg.Now().Add(-db.cfg.MaxAge).UnixMilli()
	}
	deleted := 0
	for {
		select {
		case <-db.closing:
			return deleted, fmt.Errorf("store: sweep: %w", ErrClosed)
		default:
		}
		n, more, err := db.sweepBatch(cutoff)
		deleted += n
		if err != nil {
			return deleted, fmt.Errorf("store: sweep: %w", err)
		}
		if !more {
			break
		}
	}
	x.sweeps.Add(1)
	x.storedBytes.Store(x.total)
	x.storedCount.Store(x.count)
	if deleted > 0 && !db.cfg.InMemory {
		db.runValueLogGC()
	}
	return deleted, nil
}

// countNew adds the g/ entries after x.scanned to the running total.
func (db *DB) countNew() error {
	x := &db.idx
	return db.bdb.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixArrival)})
		defer it.Close()
		for it.Seek(arrivalKey(x.scanned + 1)); it.Valid(); it.Next() {
			item := it.Item()
			var a arrival
			err := item.Value(func(v []byte) (err error) {
				a, err = decodeArrival(item.Key(), v)
				return err
			})
			if err != nil {
				return err
			}
			x.total += a.size
			x.count++
			x.scanned = a.off
		}
		return nil
	})
}

// sweepBatch deletes, in one transaction, up to sweepBatch of the oldest
// envelopes that are older than cutoff (unix ms) or that keep the total over
// MaxBytes. It returns how many it deleted and whether more may qualify.
func (db *DB) sweepBatch(cutoff int64) (int, bool, error) {
	x := &db.idx
	txn := db.bdb.NewTransaction(true)
	defer txn.Discard()
	var (
		victims []arrival
		more    bool
		total   = x.total
	)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixArrival)})
	// Seek past what earlier passes deleted: their tombstones stay until
	// badger compacts them, and walking them every pass would cost more and
	// more.
	for it.Seek(arrivalKey(x.floor + 1)); it.Valid(); it.Next() {
		item := it.Item()
		var a arrival
		err := item.Value(func(v []byte) (err error) {
			a, err = decodeArrival(item.Key(), v)
			return err
		})
		if err != nil {
			it.Close()
			return 0, false, err
		}
		if a.off > x.scanned || (a.ms >= cutoff && (db.cfg.MaxBytes <= 0 || total <= db.cfg.MaxBytes)) {
			break
		}
		if a.off > x.indexed.Load() {
			// Its postings may not be written yet: deleting now would race
			// the indexer (which could add postings for a deleted offset).
			// The next pass takes it.
			break
		}
		if len(victims) == sweepBatch {
			more = true
			break
		}
		victims = append(victims, a)
		total -= a.size
	}
	it.Close() // an update transaction allows one iterator at a time

	maxCount, maxSize := db.bdb.MaxBatchCount()/2, db.bdb.MaxBatchSize()/2
	var entries, size int64
	done := 0
	// The posting lists the victims' offsets are removed from, rewritten
	// once at the end. Found through one reverse iterator (an update
	// transaction allows one at a time); nothing under s/ is written before
	// the last lookup.
	lists := make(map[string]*sweptList)
	pit := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixPosting), Reverse: true})
	for _, a := range victims {
		keys, toks, err := envelopeKeys(txn, a)
		if err != nil {
			pit.Close()
			return 0, false, err
		}
		var sz, n int64
		for _, k := range keys {
			sz += int64(len(k)) + 16
		}
		n = int64(len(keys))
		found := make([]*sweptList, 0, len(toks))
		for _, t := range toks {
			l, err := findList(pit, lists, t, a.off)
			if err != nil {
				pit.Close()
				return 0, false, err
			}
			if l == nil {
				continue // inconsistent: no list holds it
			}
			if _, ok := lists[string(l.key)]; !ok {
				// Deleted and written again: two entries, the list's bytes.
				n += 2
				sz += 2*(int64(len(l.key))+16) + int64(len(l.offs))*binaryMaxGap
			}
			found = append(found, l)
		}
		if done > 0 && (entries+n > maxCount || size+sz > maxSize) {
			more = true // the rest goes to the next transaction
			break
		}
		for _, k := range keys {
			if err := txn.Delete(k); err != nil {
				pit.Close()
				return 0, false, err
			}
		}
		for _, l := range found {
			lists[string(l.key)] = l
			l.offs, _ = removeOffset(l.offs, a.off)
		}
		entries += n
		size += sz
		done++
	}
	pit.Close()
	for _, l := range lists {
		if err := l.write(txn); err != nil {
			return 0, false, err
		}
	}
	if done == 0 {
		return 0, false, nil
	}
	if err := txn.Commit(); err != nil {
		return 0, false, err
	}
	for _, a := range victims[:done] {
		if a.ms < cutoff {
			x.expired.Add(1)
		} else {
			x.trimmed.Add(1)
		}
		x.total -= a.size
		x.count--
		x.floor = a.off
	}
	return done, more, nil
}

// binaryMaxGap bounds the bytes of one offset in a posting list value.
const binaryMaxGap = 10

// sweptList is a posting list some of whose offsets a retention transaction
// removes.
type sweptList struct {
	word  string
	key   []byte   // as stored
	offs  []uint64 // what is left
	first uint64   // offs[0] as stored
}

// findList returns the posting list of word that holds off, from lists if a
// victim already touched it, else read through the reverse iterator pit (a
// new sweptList, not yet in lists); nil if there is none.
func findList(pit *badger.Iterator, lists map[string]*sweptList, word string, off uint64) (*sweptList, error) {
	k := postingKey(word, off)
	pit.Seek(k)
	if !pit.Valid() {
		return nil, nil
	}
	item := pit.Item()
	prefix := k[:len(k)-8]
	got := item.Key()
	if len(got) != len(k) || !bytes.HasPrefix(got, prefix) {
		return nil, nil
	}
	if l, ok := lists[string(got)]; ok {
		return l, nil
	}
	l := &sweptList{word: word, key: item.KeyCopy(nil), first: be64(got[len(prefix):])}
	err := item.Value(func(v []byte) (err error) {
		l.offs, err = decodePostings(l.first, v, nil)
		return err
	})
	if err != nil {
		return nil, err
	}
	if _, ok := slices.BinarySearch(l.offs, off); !ok {
		return nil, nil
	}
	return l, nil
}

// write stores what is left of l: nothing, or the list under the key of
// its (maybe new) first offset.
func (l *sweptList) write(txn *badger.Txn) error {
	if len(l.offs) == 0 || l.offs[0] != l.first {
		if err := txn.Delete(l.key); err != nil {
			return err
		}
	}
	if len(l.offs) == 0 {
		return nil
	}
	return txn.Set(postingKey(l.word, l.offs[0]), encodePostings(l.offs))
}

// envelopeKeys returns every key that refers to the envelope of arrival
// entry a but its postings: its g/ entry, its arrival-log entry, its message
// and its author-index entry (if that points to it: an equivocating
// author's second envelope is not in the author index); and the envelope's
// words, whose posting lists hold a.off. h/ and c/ keys stay, so HighWater
// never drops and Channels still lists the channel.
func envelopeKeys(txn *badger.Txn, a arrival) ([][]byte, []string, error) {
	keys := [][]byte{arrivalKey(a.off)}
	env, off, err := getMsg(txn, a.id)
	if errors.Is(err, ErrNotFound) {
		return keys, nil, nil // inconsistent, but nothing else can be found
	}
	if err != nil {
		return nil, nil, err
	}
	toks := envelopeTokens(env)
	keys = append(keys, logKey(env.Channel, a.off))
	if off != a.off {
		return keys, toks, nil // m/ belongs to another offset: keep it
	}
	keys = append(keys, msgKey(a.id))
	ak := authorKey(env.Channel, env.From, env.Seq)
	item, err := txn.Get(ak)
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
	case err != nil:
		return nil, nil, err
	default:
		err := item.Value(func(v []byte) error {
			if bytes.Equal(v, a.id) {
				keys = append(keys, ak)
			}
			return nil
		})
		if err != nil {
			return nil, nil, err
		}
	}
	return keys, toks, nil
}

// runValueLogGC rewrites value-log files until none is worth it.
func (db *DB) runValueLogGC() {
	for n := 0; ; n++ {
		select {
		case <-db.closing:
			return
		default:
		}
		err := db.bdb.RunValueLogGC(db.cfg.GCDiscardRatio)
		if err != nil {
			if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
				db.log.Warn("value-log gc", "err", err)
			}
			return
		}
		db.log.Debug("value-log gc rewrote a file", "round", n)
	}
}
