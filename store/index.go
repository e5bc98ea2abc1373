package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/confabhq/confab/mesh"
)

// Key prefixes of the search index and the global arrival log; doc.go
// describes the layout.
const (
	prefixPosting = "s/"
	prefixArrival = "g/"
)

// keyIndexVersion holds indexVersion once g/ covers every stored envelope
// and keyIndexed says how far s/ does.
var keyIndexVersion = []byte("o/index")

// keyIndexed holds the indexer's watermark W (8 bytes big-endian): every
// stored envelope with offset <= W has its s/ postings. Written by the
// indexer only, in the transaction that writes the postings up to W.
var keyIndexed = []byte("o/indexed")

// indexVersion is the version of the s/ and g/ keys, of the tokenizer rules
// and of the index's bookkeeping. 1: postings written with the envelope (no
// o/indexed). 2: postings written by the background indexer up to
// o/indexed. 3: postings packed, one list per word and indexer transaction
// (postings.go); version 1 and 2 postings are lists of one, so New upgrades
// those stores in place. New rebuilds on any other version (see
// recoverIndex).
const indexVersion = 3

// arrivalLen is the length of a g/ value: arrival unix ms, record size, id.
const arrivalLen = 8 + 4 + 32

// indexState is the search and retention state of a DB.
type indexState struct {
	// lastArrival is the highest arrival time written (unix ms), so arrival
	// times never decrease with offset even if the clock steps back. Owned
	// by the committer (and by New before it starts).
	lastArrival int64

	searches, searchErrors, searchResults atomic.Uint64
	expired, trimmed, sweeps              atomic.Uint64
	storedBytes, storedCount              atomic.Int64 // as of the last sweep

	// committed is the highest offset of a committed (durable, visible)
	// batch; set from the commit callback. indexed is the indexer's
	// watermark as committed to badger (o/indexed). Search waits for
	// indexed >= committed as of its start; retention deletes only offsets
	// <= indexed, so it never races the indexer's postings.
	committed, indexed atomic.Uint64
	indexBatches       atomic.Uint64
	// kick wakes the indexer (capacity 1, sent without blocking).
	kick chan struct{}
	// lastCommit is when the last batch committed (unix ns), so the
	// indexer can wait for a pause in the appends.
	lastCommit atomic.Int64
	// hurry tells a pacing indexer to start now (capacity 1, sent without
	// blocking by anyone waiting for the index: Search, retention).
	hurry chan struct{}

	// pendMu guards the fields under it: the hand-off from commits to the
	// indexer, so the indexer need not read back what was just written.
	// While pendOK, pend holds every committed envelope after the indexer's
	// watermark, in offset order. When it would grow past maxPend (the
	// indexer is far behind) it stops growing: the indexer indexes what it
	// holds, then reads the rest (g/ and m/) from disk until it catches up.
	// After an index write failed it is dropped and the indexer reads
	// everything after the watermark from disk. Never held with another
	// lock.
	pendMu sync.Mutex
	pend   []indexItem
	pendOK bool

	// waitMu guards progress, closed and replaced by the indexer after every
	// watermark advance, so Search can wait for it. Never held with another
	// lock.
	waitMu   sync.Mutex
	progress chan struct{}

	// sweepMu serializes retention passes (the background loop and tests)
	// and guards the fields under it. Never held with DB.mu.
	sweepMu sync.Mutex
	scanned uint64 // highest g/ offset counted into total
	total   int64  // bytes of the records at offsets <= scanned still stored
	count   int64  // their number
	floor   uint64 // highest offset a pass deleted; every g/ entry <= it is gone
}

func postingPrefix(tok string) []byte {
	b := make([]byte, 0, len(prefixPosting)+len(tok)+1+8)
	b = append(b, prefixPosting...)
	b = append(b, tok...)
	return append(b, 0)
}

func postingKey(tok string, off uint64) []byte {
	return binary.BigEndian.AppendUint64(postingPrefix(tok), off)
}

func arrivalKey(off uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte(prefixArrival), off)
}

func encodeArrival(ms int64, size int, id []byte) []byte {
	v := make([]byte, 0, arrivalLen)
	v = binary.BigEndian.AppendUint64(v, uint64(ms))
	v = binary.BigEndian.AppendUint32(v, uint32(size))
	return append(v, id...)
}

// arrival is a decoded g/ entry.
type arrival struct {
	off  uint64
	ms   int64
	size int64
	id   []byte
}

func decodeArrival(k, v []byte) (arrival, error) {
	if len(k) != len(prefixArrival)+8 || len(v) != arrivalLen {
		return arrival{}, fmt.Errorf("%w: arrival entry %x", ErrCorrupt, k)
	}
	return arrival{
		off:  be64(k[len(prefixArrival):]),
		ms:   int64(be64(v)),
		size: int64(binary.BigEndian.Uint32(v[8:])),
		id:   append([]byte(nil), v[12:]...),
	}, nil
}

// recordSize is the size of an m/ value, the unit of Config.MaxBytes.
func recordSize(bin []byte) int { return 9 + len(bin) }

// arrivalMS returns the arrival time for the next envelope: Config.Now, but
// never earlier than the previous one. Committer only.
func (db *DB) arrivalMS() int64 {
	ms := db.cfg.Now().UnixMilli()
	if ms < db.idx.lastArrival {
		ms = db.idx.lastArrival
	}
	db.idx.lastArrival = ms
	return ms
}

// indexItem is a committed envelope waiting for its postings.
type indexItem struct {
	off uint64
	env *mesh.Envelope
	at  int64 // when its batch committed (unix ns), for the indexer's pacing
}

// maxPend bounds the envelopes held for the indexer in memory; a variable
// so a test can lower it.
var maxPend = 1 << 17

// committedBatch records that b is durable: it advances the committed
// offset, hands b's envelopes to the indexer and wakes it. Runs on badger's
// callback goroutine, in commit order.
func (db *DB) committedBatch(b *batch) {
	x := &db.idx
	x.pendMu.Lock()
	x.committed.Store(b.last)
	now := time.Now().UnixNano()
	x.lastCommit.Store(now)
	for i := range b.written {
		b.written[i].at = now
	}
	if x.pendOK {
		if len(x.pend)+len(b.written) > maxPend {
			x.pendOK = false // keep what it holds; the rest is read from disk
		} else {
			x.pend = append(x.pend, b.written...)
		}
	}
	x.pendMu.Unlock()
	db.kickIndexer()
}

// arrivalEntry is the size of the g/ entry write adds for p, for the
// writer's room check.
func arrivalEntry() int64 { return int64(len(prefixArrival)+8+arrivalLen) + 16 }

// writeArrival adds the g/ entry of the envelope p stored at off, in the
// envelope's transaction. Its postings come later, from the indexer.
// Committer only.
func (db *DB) writeArrival(w *writer, p *prepared, off uint64) error {
	return w.set(arrivalKey(off), encodeArrival(db.arrivalMS(), len(p.rec), p.id))
}

// recoverIndex runs in New before the committer starts. By stored version:
// 3 or 2, the indexer resumes from o/indexed; 1 (postings were written with
// every envelope), everything stored is indexed (1 and 2 are upgraded to 3
// in place: their postings are packed lists of one); anything else (a store from before
// search, or an unknown version), it drops the s/ and g/ keys, rebuilds g/
// from every stored envelope (arrival time: now, since the real one is
// unknown) and leaves the postings to the indexer, from 0. Then it loads the
// last arrival time.
func (db *DB) recoverIndex() error {
	var ver, mark []byte
	err := db.bdb.View(func(txn *badger.Txn) error {
		for _, kv := range []struct {
			k []byte
			v *[]byte
		}{{keyIndexVersion, &ver}, {keyIndexed, &mark}} {
			item, err := txn.Get(kv.k)
			if errors.Is(err, badger.ErrKeyNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if *kv.v, err = item.ValueCopy(nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("index version: %w", err)
	}
	last := db.nextOffset - 1
	switch {
	case len(ver) == 1 && (ver[0] == indexVersion || ver[0] == 2):
		if len(mark) != 8 {
			return fmt.Errorf("index watermark: %w", ErrCorrupt)
		}
		if ver[0] != indexVersion { // 2: its postings are lists of one
			if err := db.bdb.Update(func(txn *badger.Txn) error {
				return txn.Set(keyIndexVersion, []byte{indexVersion})
			}); err != nil {
				return fmt.Errorf("upgrade index: %w", err)
			}
		}
		db.idx.indexed.Store(be64(mark))
	case len(ver) == 1 && ver[0] == 1:
		err := db.bdb.Update(func(txn *badger.Txn) error {
			if err := txn.Set(keyIndexed, binary.BigEndian.AppendUint64(nil, last)); err != nil {
				return err
			}
			return txn.Set(keyIndexVersion, []byte{indexVersion})
		})
		if err != nil {
			return fmt.Errorf("upgrade index: %w", err)
		}
		db.idx.indexed.Store(last)
	default:
		if err := db.rebuildIndex(); err != nil {
			return fmt.Errorf("rebuild index: %w", err)
		}
		db.idx.indexed.Store(0)
	}
	db.idx.committed.Store(last)
	db.idx.pendOK = db.idx.indexed.Load() == last
	return db.bdb.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixArrival), Reverse: true})
		defer it.Close()
		it.Seek(arrivalKey(^uint64(0)))
		if !it.Valid() {
			return nil
		}
		item := it.Item()
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		a, err := decodeArrival(item.Key(), v)
		if err != nil {
			return err
		}
		db.idx.lastArrival = a.ms
		return nil
	})
}

// rebuildIndex drops the index and rebuilds g/ from m/; the indexer rebuilds
// the postings from watermark 0.
func (db *DB) rebuildIndex() error {
	if err := db.bdb.DropPrefix([]byte(prefixPosting), []byte(prefixArrival)); err != nil {
		return err
	}
	now := db.cfg.Now().UnixMilli()
	wb := db.bdb.NewWriteBatch()
	defer wb.Cancel()
	n := 0
	err := db.bdb.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixMsg)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			id := item.KeyCopy(nil)[len(prefixMsg):]
			err := item.Value(func(v []byte) error {
				_, off, err := decodeMsg(id, v)
				if err != nil {
					return err
				}
				return wb.Set(arrivalKey(off), encodeArrival(now, len(v), id))
			})
			if err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := wb.Set(keyIndexed, binary.BigEndian.AppendUint64(nil, 0)); err != nil {
		return err
	}
	if err := wb.Set(keyIndexVersion, []byte{indexVersion}); err != nil {
		return err
	}
	if err := wb.Flush(); err != nil {
		return err
	}
	if n > 0 {
		db.log.Info("rebuilt arrival log; the search index follows in the background", "envelopes", n)
	}
	return nil
}

// Indexer batch bounds: envelopes per transaction, and how often at most a
// failing indexer retries.
const (
	indexBatchMax = 4096
	indexRetry    = time.Second
)

// Indexer pacing: before each transaction the indexer waits until no batch
// has committed for indexQuiet, so a burst of appends (a catch-up, many
// writers) is stored without the indexer competing for the CPU and is
// indexed right after it, in larger (fewer, cheaper) transactions, and
// steady appends more often than indexQuiet (a gateway's publishes every
// 20 ms) do not each pay for an index commit (a second synced commit, queued
// in badger's writer ahead of the next append when it came one interval
// later). It does not wait when the oldest envelope waiting for it committed
// indexMaxLag ago (so under appends that never pause the index stays about
// indexMaxLag behind), when Search or retention waits for it (so both still
// read what was committed before them), or when it is reading from disk
// (after a restart, or a burst longer than the hand-off holds: maxPend).
// Variables so tests can change them.
var (
	indexQuiet  = 100 * time.Millisecond
	indexMaxLag = 10 * time.Second
)

// indexWait bounds how long Search waits for the indexer to cover what was
// committed before the call; a variable so tests can shorten it.
var indexWait = 2 * time.Second

// testIndexGate, when not nil, is received from before every indexer batch
// (tests hold the indexer back with it).
var testIndexGate chan struct{}

// kickIndexer wakes the indexer without blocking.
func (db *DB) kickIndexer() {
	select {
	case db.idx.kick <- struct{}{}:
	default:
	}
}

// indexLoop is the background indexer: on every kick it indexes the
// committed envelopes past the watermark, in batches of indexBatchMax, until
// it has caught up. It runs until Close.
func (db *DB) indexLoop(gate chan struct{}) {
	defer db.wg.Done()
	for {
		select {
		case <-db.closing:
			return
		case <-db.idx.kick:
		}
		for {
			if !db.awaitPause() {
				return
			}
			if gate != nil {
				select {
				case <-db.closing:
					return
				case <-gate:
				}
			}
			more, err := db.indexBatch()
			if err != nil {
				db.log.Warn("search indexer", "err", err)
				select {
				case <-db.closing:
					return
				case <-time.After(indexRetry):
				}
				continue
			}
			if !more {
				break
			}
			select {
			case <-db.closing:
				return
			default:
			}
		}
	}
}

// awaitPause waits until the appends pause (indexQuiet without a commit),
// the oldest envelope waiting for the index committed indexMaxLag ago, or
// someone waits for the index (hurry). It returns false when the DB is
// closing.
func (db *DB) awaitPause() bool {
	x := &db.idx
	for {
		now := time.Now()
		wait := indexQuiet - now.Sub(time.Unix(0, x.lastCommit.Load()))
		lag := indexMaxLag - now.Sub(db.oldestPending())
		if wait <= 0 || lag <= 0 {
			return true
		}
		t := time.NewTimer(min(wait, lag))
		select {
		case <-db.closing:
			t.Stop()
			return false
		case <-x.hurry:
			t.Stop()
			return true
		case <-t.C:
		}
	}
}

// oldestPending is when the oldest envelope in the hand-off committed; the
// zero time when the indexer reads from disk or nothing waits (so it does
// not wait).
func (db *DB) oldestPending() time.Time {
	x := &db.idx
	x.pendMu.Lock()
	defer x.pendMu.Unlock()
	if len(x.pend) == 0 {
		return time.Time{}
	}
	return time.Unix(0, x.pend[0].at)
}

// indexBatch writes the postings of the committed envelopes after the
// watermark (at most indexBatchMax, and what fits one transaction) and the
// new watermark, in one transaction. It reports whether more are waiting.
func (db *DB) indexBatch() (bool, error) {
	x := &db.idx
	x.pendMu.Lock()
	if len(x.pend) > 0 || x.pendOK {
		n := min(len(x.pend), indexBatchMax)
		items := slices.Clone(x.pend[:n])
		x.pend = slices.Delete(x.pend, 0, n) // shifts; n is most of it when busy
		more := len(x.pend) > 0 || !x.pendOK
		x.pendMu.Unlock()
		if n == 0 {
			return false, nil
		}
		return more, db.indexItems(items)
	}
	x.pendMu.Unlock()
	return db.indexFromDisk()
}

// indexItems writes the postings of items, which follow the watermark with
// nothing committed in between, and moves the watermark to the last one.
// It writes as many transactions as badger's size limits demand, each with
// its own posting lists and the watermark of its last envelope.
func (db *DB) indexItems(items []indexItem) error {
	x := &db.idx
	maxCount, maxSize := db.txnLimits()
	var (
		pb   = newPostingBatch()
		toks []string
		seen = make(map[string]struct{})
	)
	for i := 0; i <= len(items); i++ {
		toks = toks[:0]
		if i < len(items) {
			toks = appendEnvelopeTokens(toks, items[i].env, seen)
		}
		if i == len(items) || !pb.empty() && !pb.fits(len(toks), maxCount, maxSize) {
			if err := db.writePostings(pb, items[i-1].off); err != nil {
				x.pendMu.Lock()
				x.pendOK, x.pend = false, nil // redo from the watermark, from disk
				x.pendMu.Unlock()
				return fmt.Errorf("index %d..%d: %w", items[0].off, items[i-1].off, err)
			}
			pb.reset()
		}
		for _, t := range toks {
			pb.add(t, items[i].off)
		}
	}
	return nil
}

// indexFromDisk indexes committed envelopes after the watermark by reading
// their g/ and m/ entries (after a restart, or when the hand-off
// overflowed). Once it has caught up with what is committed, the hand-off
// takes over again.
func (db *DB) indexFromDisk() (bool, error) {
	x := &db.idx
	from := x.indexed.Load()
	upto := x.committed.Load() // a snapshot taken after this sees it all
	if upto <= from {
		x.pendMu.Lock()
		if x.indexed.Load() == x.committed.Load() {
			x.pendOK, x.pend = true, nil
		}
		x.pendMu.Unlock()
		return false, nil
	}
	maxCount, maxSize := db.txnLimits()
	var (
		pb    = newPostingBatch()
		mark  = upto
		count int
		toks  []string
		seen  = make(map[string]struct{})
	)
	err := db.bdb.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixArrival)})
		defer it.Close()
		for it.Seek(arrivalKey(from + 1)); it.Valid(); it.Next() {
			item := it.Item()
			off := be64(item.Key()[len(prefixArrival):])
			if off > upto {
				break
			}
			if count > 0 && (count == indexBatchMax || !pb.fits(maxTokensPerEnv, maxCount, maxSize)) {
				mark = off - 1
				break
			}
			var a arrival
			err := item.Value(func(v []byte) (err error) {
				a, err = decodeArrival(item.Key(), v)
				return err
			})
			if err != nil {
				return err
			}
			env, moff, err := getMsg(txn, a.id)
			if errors.Is(err, ErrNotFound) {
				continue // inconsistent; nothing to index
			}
			if err != nil {
				return err
			}
			if moff != off {
				continue // m/ belongs to another offset
			}
			toks = appendEnvelopeTokens(toks[:0], env, seen)
			for _, t := range toks {
				pb.add(t, off)
			}
			count++
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("index %d..%d: %w", from+1, upto, err)
	}
	if err := db.writePostings(pb, mark); err != nil {
		return false, fmt.Errorf("index %d..%d: %w", from+1, mark, err)
	}
	// Loop (through indexBatch) until caught up, which re-enables the
	// hand-off.
	return true, nil
}

// writePostings writes the lists of pb and the new watermark mark in one
// transaction and publishes the watermark.
func (db *DB) writePostings(pb *postingBatch, mark uint64) error {
	x := &db.idx
	// Like the committer, never write into the last MinFreeBytes: badger's
	// mapped log would take the process down (SIGBUS) where the disk has no
	// room left. The indexer retries, from disk, once there is room.
	if err := db.checkSpace(); err != nil {
		return err
	}
	txn := db.bdb.NewTransaction(true)
	defer txn.Discard()
	if err := pb.set(txn.Set); err != nil {
		return err
	}
	if err := txn.Set(keyIndexed, binary.BigEndian.AppendUint64(nil, mark)); err != nil {
		return err
	}
	if err := txn.Commit(); err != nil {
		return err
	}
	x.indexBatches.Add(1)
	x.indexed.Store(mark)
	x.waitMu.Lock()
	close(x.progress)
	x.progress = make(chan struct{})
	x.waitMu.Unlock()
	return nil
}

// waitIndexed waits until the index covers offset target, for at most
// indexWait; past that (or when ctx ends or the DB closes) it returns and the
// caller searches what is indexed.
func (db *DB) waitIndexed(ctx context.Context, target uint64) {
	x := &db.idx
	var timer <-chan time.Time
	for {
		x.waitMu.Lock()
		ch := x.progress
		x.waitMu.Unlock()
		if x.indexed.Load() >= target {
			return
		}
		select { // let a pacing indexer start now
		case x.hurry <- struct{}{}:
		default:
		}
		if timer == nil {
			t := time.NewTimer(indexWait)
			defer t.Stop()
			timer = t.C
		}
		select {
		case <-ch:
		case <-timer:
			return
		case <-ctx.Done():
			return
		case <-db.closing:
			return
		}
	}
}
