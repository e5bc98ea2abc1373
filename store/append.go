package store

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/confabhq/confab/mesh"
)

// prepared is an envelope checked and encoded by its caller's goroutine, so
// the committer only does key work.
type prepared struct {
	env *mesh.Envelope
	id  []byte // 32 raw bytes of env.ID
	// rec is the m/ value: msgVersion, 8 bytes for the offset (filled in by
	// the committer), env.Marshal(). Built by the caller so the committer
	// does not copy the envelope.
	rec []byte
}

// appendReq is one Append call waiting for the committer.
type appendReq struct {
	envs    []prepared
	cursors []string      // set by the committer before done is closed
	err     error         // likewise
	done    chan struct{} // closed by the committer
}

// Append stores envs and returns one cursor per envelope, "" for an envelope
// whose id is already stored (or repeated earlier in envs). When it returns
// nil every envelope of envs is on disk (fsynced) and visible to readers.
//
// Envelopes are assumed verified (mesh.Envelope.Verify) by the caller; Append
// does not check signatures, but it rejects the whole call, writing nothing,
// with an error wrapping ErrInvalid if any envelope is nil, fails
// mesh.Envelope.Validate, has an id that is not 64 lowercase hex or not the
// hash of its content, or a signature of the wrong length.
//
// Concurrent calls are grouped into one badger write and one sync (group
// commit). Each envelope is written atomically; a call with more envelopes
// than fit in one badger transaction may be written in several. If ctx ends
// while the call waits, Append returns ctx's error but the envelopes may
// still be written; retrying is safe because Append is idempotent. After
// Close, Append returns ErrClosed.
func (db *DB) Append(ctx context.Context, envs []*mesh.Envelope) ([]string, error) {
	p := make([]prepared, len(envs))
	if err := prepareAll(envs, p); err != nil {
		db.rejected.Add(1)
		return nil, err
	}
	r := &appendReq{envs: p, done: make(chan struct{})}
	select {
	case <-db.closing:
		return nil, fmt.Errorf("store: append: %w", ErrClosed)
	default:
	}
	if len(envs) == 0 {
		return []string{}, nil
	}
	select {
	case db.reqs <- r:
	case <-db.closing:
		return nil, fmt.Errorf("store: append: %w", ErrClosed)
	case <-ctx.Done():
		return nil, fmt.Errorf("store: append: %w", ctx.Err())
	}
	select {
	case <-r.done:
		return r.cursors, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("store: append: %w (the envelopes may still be stored)", ctx.Err())
	}
}

// parallelPrepare is the call size from which Append checks and encodes its
// envelopes on every core (a catch-up page arrives as one large call).
const parallelPrepare = 256

// prepareAll prepares envs into p, spread over GOMAXPROCS goroutines for a
// large call; it returns the error of the first invalid envelope.
func prepareAll(envs []*mesh.Envelope, p []prepared) error {
	workers := runtime.GOMAXPROCS(0)
	if len(envs) < parallelPrepare || workers < 2 {
		for i, e := range envs {
			if err := prepare(e, &p[i]); err != nil {
				return err
			}
		}
		return nil
	}
	errs := make([]error, len(envs))
	chunk := (len(envs) + workers - 1) / workers
	var wg sync.WaitGroup
	for lo := 0; lo < len(envs); lo += chunk {
		hi := min(lo+chunk, len(envs))
		wg.Go(func() {
			for i := lo; i < hi; i++ {
				if errs[i] = prepare(envs[i], &p[i]); errs[i] != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func prepare(e *mesh.Envelope, p *prepared) error {
	if e == nil {
		return fmt.Errorf("store: append: %w: nil envelope", ErrInvalid)
	}
	id, ok := parseID(e.ID)
	if !ok {
		return fmt.Errorf("store: append %q: %w: id is not 64 lowercase hex", trunc(e.ID), ErrInvalid)
	}
	if err := e.Validate(); err != nil {
		return fmt.Errorf("store: append %s: %w: %w", e.ID, ErrInvalid, err)
	}
	if len(e.Sig) != ed25519.SignatureSize {
		return fmt.Errorf("store: append %s: %w: signature is %d bytes", e.ID, ErrInvalid, len(e.Sig))
	}
	bin := e.Marshal()
	if len(bin) > mesh.MaxEnvelopeLen {
		return fmt.Errorf("store: append %s: %w: %w", e.ID, ErrInvalid, mesh.ErrTooLarge)
	}
	sum := sha256.Sum256(bin[:len(bin)-ed25519.SignatureSize])
	if string(sum[:]) != string(id) {
		return fmt.Errorf("store: append %s: %w: id does not match content", e.ID, ErrInvalid)
	}
	rec := make([]byte, 9+len(bin))
	rec[0] = msgVersion
	copy(rec[9:], bin)
	*p = prepared{env: e, id: id, rec: rec}
	return nil
}

// commitLoop is the only writer. It takes one waiting Append, then every
// other one already waiting (up to MaxBatch envelopes), and writes them as
// one batch. Batches are pipelined one deep: while badger writes and syncs
// batch N, the loop collects and prepares batch N+1 in a transaction opened
// before N was committed, consulting N's in-flight keys where that
// transaction cannot see them. It waits for N before committing N+1, so
// commits (and offsets) stay in order and N+1 is never acknowledged if N
// failed. Callers are answered from badger's commit callback, after the sync.
func (db *DB) commitLoop() {
	defer db.wg.Done()
	var (
		reqs []*appendReq
		prev *batch // committed, maybe not yet synced
		txn  = db.bdb.NewTransaction(true)
		last = 0 // requests in the previous batch
	)
	defer func() {
		if prev != nil {
			<-prev.done
		}
		txn.Discard()
	}()
	for {
		select {
		case <-db.closing:
			return
		case r := <-db.reqs:
			reqs = append(reqs[:0], r)
		}
		n := len(reqs[0].envs)
		if last > 1 {
			// The callers answered last round are runnable; let them
			// resubmit so they join this batch instead of the next one
			// (otherwise concurrent callers split into two alternating
			// halves, each waiting two syncs).
			runtime.Gosched()
		}
	collect:
		for n < db.cfg.MaxBatch {
			select {
			case r := <-db.reqs:
				reqs = append(reqs, r)
				n += len(r.envs)
			default:
				break collect
			}
		}
		last = len(reqs)
		// txn was opened before prev committed, so the writer consults
		// prev's in-flight keys even if prev is settled below.
		w := db.newWriter(txn, prev)
		var prevErr error
		if len(db.authors) >= maxAuthorCache {
			// Only clear with nothing in flight, and then read through a
			// transaction that sees prev: the cache must hold every author
			// the transaction cannot see.
			prevErr = db.settle(prev)
			prev = nil
			clear(db.authors)
			txn.Discard()
			txn = db.bdb.NewTransaction(true)
			w = db.newWriter(txn, nil)
		}
		b := &batch{reqs: slices.Clone(reqs), done: make(chan struct{})}
		clear(reqs)
		err := db.checkSpace()
		if err == nil {
			err = db.build(w, b)
		}
		if e := db.settle(prev); e != nil {
			prevErr = e
		}
		if prevErr != nil && err == nil {
			err = fmt.Errorf("store: append: earlier batch failed: %w", prevErr)
		}
		prev = nil
		// Opened now, after prev is done but before b commits, so that
		// NewTransaction (which waits for every earlier commit) does not
		// wait for b.
		txn = db.bdb.NewTransaction(true)
		if err != nil {
			w.txn.Discard()
			db.fail(b, err)
			continue
		}
		db.batches.Add(1)
		if w.count == 0 { // only duplicates: nothing to write
			w.txn.Discard()
			db.finish(b, nil)
			continue
		}
		if err := w.finalize(); err != nil {
			w.txn.Discard()
			db.fail(b, err)
			continue
		}
		w.txn.CommitWith(func(err error) { db.finish(b, err) })
		prev = b
	}
}

// batch is one group commit.
type batch struct {
	reqs        []*appendReq
	stored      uint64
	dups        uint64
	last        uint64      // highest offset the batch stores
	written     []indexItem // what it stores, for the indexer
	newChannels map[string]bool
	// ids and a/ keys this batch writes, for the next batch, whose
	// transaction cannot see them until this one is done.
	ids, akeys map[string]struct{}
	done       chan struct{} // closed after the requests are answered
	err        error         // set before done is closed
}

// finish answers b's callers; it runs on badger's callback goroutine (or the
// committer) once b is durable or has failed.
func (db *DB) finish(b *batch, err error) {
	if err != nil {
		err = fmt.Errorf("store: append: commit: %w", err)
		db.log.Warn("append failed", "err", err)
		for _, r := range b.reqs {
			r.cursors, r.err = nil, err
		}
	} else {
		db.syncs.Add(1)
		db.appends.Add(b.stored)
		db.dups.Add(b.dups)
		if b.stored > 0 {
			db.committedBatch(b)
		}
	}
	b.err = err
	for _, r := range b.reqs {
		close(r.done)
	}
	close(b.done)
}

// fail answers b's callers with err without writing (more of) it.
func (db *DB) fail(b *batch, err error) {
	clear(db.authors) // may be ahead of what was written
	db.finish(b, err)
	<-b.done
}

// settle waits for the in-flight batch b (nil is fine) and folds its outcome
// into the committer's state. It returns b's error.
func (db *DB) settle(b *batch) error {
	if b == nil {
		return nil
	}
	<-b.done
	if b.err != nil {
		clear(db.authors) // may be ahead of what was written
		return b.err
	}
	for ch := range b.newChannels {
		db.channels[ch] = true
	}
	return nil
}

// writer collects one batch in a badger transaction, committing early (and
// synchronously) only if badger's per-transaction limits demand it.
type writer struct {
	db                *DB
	txn               *badger.Txn
	prev              *batch // in flight while txn was opened; may be nil
	size, count       int64
	maxSize, maxCount int64
	last              uint64 // highest offset written in txn
}

func (db *DB) newWriter(txn *badger.Txn, prev *batch) *writer {
	w := &writer{
		db:   db,
		txn:  txn,
		prev: prev,
	}
	w.maxCount, w.maxSize = db.txnLimits()
	return w
}

// txnLimits are the entries and bytes the committer and the indexer put in
// one badger transaction: 90% of badger's limits, which count each Set as
// its key, value and 12 bytes, where the writers count 16 and over-estimate
// an envelope before writing it; the rest is room for o/last (or
// o/indexed). (Half, as before, split a batch of 1000 envelopes in two
// synced commits.)
func (db *DB) txnLimits() (count, size int64) {
	return db.bdb.MaxBatchCount() * 9 / 10, db.bdb.MaxBatchSize() * 9 / 10
}

// room commits the current transaction first if size bytes in count more
// entries might not fit in it.
func (w *writer) room(size, count int64) error {
	if w.count > 0 && (w.size+size > w.maxSize || w.count+count > w.maxCount) {
		return w.flush()
	}
	return nil
}

func (w *writer) set(k, v []byte) error {
	w.size += int64(len(k)+len(v)) + 16
	w.count++
	return w.txn.Set(k, v)
}

// finalize records the last offset in the transaction about to commit.
func (w *writer) finalize() error {
	return w.txn.Set(keyLastOffset, binary.BigEndian.AppendUint64(nil, w.last))
}

// flush commits (and syncs) the current transaction now and starts a new
// one. Only a batch too big for one transaction needs it.
func (w *writer) flush() error {
	if err := w.finalize(); err != nil {
		return err
	}
	err := w.txn.Commit() // ordered after prev's commit by badger
	w.db.syncs.Add(1)
	w.txn = w.db.bdb.NewTransaction(true) // waits for prev; sees everything
	w.size, w.count = 0, 0
	return err
}

// exists reports whether k is stored or in inflight (the a/ keys of the
// in-flight batch).
func (w *writer) exists(k []byte, inflight map[string]struct{}) (bool, error) {
	if _, ok := inflight[string(k)]; ok {
		return true, nil
	}
	_, err := w.txn.Get(k)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, badger.ErrKeyNotFound):
		return false, nil
	default:
		return false, err
	}
}

// build adds b's envelopes to w and sets every request's cursors.
func (db *DB) build(w *writer, b *batch) error {
	b.newChannels = make(map[string]bool)
	b.ids = make(map[string]struct{})
	b.akeys = make(map[string]struct{})
	for _, r := range b.reqs {
		r.cursors = make([]string, len(r.envs))
		for i := range r.envs {
			p := &r.envs[i]
			if _, ok := b.ids[string(p.id)]; ok {
				b.dups++
				continue
			}
			off, err := db.write(w, b, p)
			if err != nil {
				return fmt.Errorf("store: append %s: %w", p.env.ID, err)
			}
			if off == 0 {
				b.dups++
				continue
			}
			b.stored++
			r.cursors[i] = formatCursor(off)
			b.written = append(b.written, indexItem{off: off, env: p.env})
		}
	}
	if db.nextOffset > 1 {
		db.lastOffset.Store(db.nextOffset - 1)
		b.last = db.nextOffset - 1
	}
	return nil
}

// write adds one envelope to w and returns its offset, or 0 if its id is
// already stored (or being stored by the in-flight batch).
func (db *DB) write(w *writer, b *batch, p *prepared) (uint64, error) {
	var prevIDs, prevAkeys map[string]struct{}
	var prevChannels map[string]bool
	if w.prev != nil {
		prevIDs, prevAkeys, prevChannels = w.prev.ids, w.prev.akeys, w.prev.newChannels
	}
	e := p.env
	mk := msgKey(p.id)
	lk := logKey(e.Channel, db.nextOffset)
	ak := authorKey(e.Channel, e.From, e.Seq)
	hk := highKey(e.Channel, e.From)
	est := int64(len(mk)+len(p.rec)+len(lk)+len(ak)+2*len(p.id)+len(hk)+16+len(e.Channel)+8) + 6*16
	if err := w.room(est+arrivalEntry(), 7); err != nil {
		return 0, err
	}
	// Duplicate check. The id hashes channel, author and seq, so an
	// envelope whose seq is above the highest seq ever stored for its author
	// in its channel (st.max, persisted in h/ with every append and kept by
	// retention) cannot be stored yet: the in-order case, live or catch-up,
	// skips the m/ read. The cache holds every author the in-flight batch
	// wrote, so st.max covers it too.
	st, err := db.author(w, hk)
	if err != nil {
		return 0, err
	}
	if e.Seq <= st.max {
		if _, ok := prevIDs[string(p.id)]; ok {
			return 0, nil
		}
		if ok, err := w.exists(mk, nil); err != nil || ok {
			return 0, err
		}
	}
	off := db.nextOffset
	db.nextOffset++
	w.last = off
	b.ids[string(p.id)] = struct{}{}

	binary.BigEndian.PutUint64(p.rec[1:9], off)
	if err := w.set(mk, p.rec); err != nil {
		return 0, err
	}
	if err := w.set(lk, p.id); err != nil {
		return 0, err
	}
	if err := db.writeArrival(w, p, off); err != nil {
		return 0, err
	}
	if !db.channels[e.Channel] && !b.newChannels[e.Channel] && !prevChannels[e.Channel] {
		if err := w.set(channelKey(e.Channel), nil); err != nil {
			return 0, err
		}
		b.newChannels[e.Channel] = true
	}

	// Author index and high-water mark. A second, different envelope with an
	// author's existing seq (the author equivocated) stays in the arrival log
	// but the index keeps the first.
	if e.Seq <= st.max {
		if taken, err := w.exists(ak, prevAkeys); err != nil {
			return 0, err
		} else if taken {
			db.log.Warn("author reused a seq; keeping the first in the author index",
				"channel", e.Channel, "from", e.From, "seq", e.Seq, "id", e.ID)
			return off, nil
		}
	}
	if err := w.set(ak, p.id); err != nil {
		return 0, err
	}
	b.akeys[string(ak)] = struct{}{}
	st.max = max(st.max, e.Seq)
	if e.Seq == st.hw+1 {
		// Filling the gap at hw+1 may join a run of later seqs stored earlier.
		st.hw = e.Seq
		for st.hw < st.max {
			ok, err := w.exists(authorKey(e.Channel, e.From, st.hw+1), prevAkeys)
			if err != nil {
				return 0, err
			}
			if !ok {
				break
			}
			st.hw++
		}
	}
	return off, w.set(hk, encodeHigh(*st))
}

// authorState is the h/ value of an author in a channel: the contiguous
// high-water mark and the highest seq in the author index. The committer
// caches it so an in-order append needs no index reads. Owned by the
// committer; cleared when a commit fails, and between batches (with nothing
// in flight) when it has grown past maxAuthorCache. So it always holds every
// author the in-flight batch wrote, whose h/ the next batch's transaction
// cannot see yet.
type authorState struct{ hw, max uint64 }

// maxAuthorCache bounds the cache; a variable so a test can lower it.
var maxAuthorCache = 1 << 16

func encodeHigh(st authorState) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(make([]byte, 0, 16), st.hw), st.max)
}

func decodeHigh(v []byte) (authorState, bool) {
	if len(v) != 16 {
		return authorState{}, false
	}
	return authorState{hw: be64(v), max: be64(v[8:])}, true
}

// author returns the cached state under h/ key hk, loading it through w.
func (db *DB) author(w *writer, hk []byte) (*authorState, error) {
	if st, ok := db.authors[string(hk)]; ok {
		return st, nil
	}
	st := &authorState{}
	item, err := w.txn.Get(hk)
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
	case err != nil:
		return nil, err
	default:
		err = item.Value(func(v []byte) error {
			var ok bool
			if *st, ok = decodeHigh(v); !ok {
				return fmt.Errorf("%w: high-water %q", ErrCorrupt, hk)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	db.authors[string(hk)] = st
	return st, nil
}
