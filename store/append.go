package store

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/confabhq/confab/mesh"
)

// prepared is an envelope checked and encoded by its caller's goroutine, so
// the committer only does key work.
type prepared struct {
	env *mesh.Envelope
	id  []byte // 32 raw bytes of env.ID
	bin []byte // env.Marshal()
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
	for i, e := range envs {
		if err := prepare(e, &p[i]); err != nil {
			db.rejected.Add(1)
			return nil, err
		}
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
	*p = prepared{env: e, id: id, bin: bin}
	return nil
}

// commitLoop is the only writer: it takes one waiting Append, then every
// other one already waiting (up to MaxBatch envelopes), writes and syncs them
// together, and answers them all.
func (db *DB) commitLoop() {
	defer db.wg.Done()
	var batch []*appendReq
	for {
		select {
		case <-db.closing:
			return
		case r := <-db.reqs:
			batch = append(batch[:0], r)
		}
		n := len(batch[0].envs)
	collect:
		for n < db.cfg.MaxBatch {
			select {
			case r := <-db.reqs:
				batch = append(batch, r)
				n += len(r.envs)
			default:
				break collect
			}
		}
		db.commit(batch)
		for _, r := range batch {
			close(r.done)
		}
		clear(batch)
	}
}

// writer splits one group commit into as few badger transactions as
// badger's per-transaction limits allow (normally one).
type writer struct {
	db                *DB
	txn               *badger.Txn
	size, count       int64
	maxSize, maxCount int64
	last              uint64 // highest offset written in txn
}

func (db *DB) newWriter() *writer {
	return &writer{
		db:  db,
		txn: db.bdb.NewTransaction(true),
		// Half of badger's limits leaves room for o/last and estimate slack.
		maxSize:  db.bdb.MaxBatchSize() / 2,
		maxCount: db.bdb.MaxBatchCount() / 2,
	}
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

// flush commits (and, with SyncWrites, syncs) the current transaction and
// starts a new one.
func (w *writer) flush() error {
	if w.count == 0 {
		return nil
	}
	if err := w.txn.Set(keyLastOffset, binary.BigEndian.AppendUint64(nil, w.last)); err != nil {
		return err
	}
	err := w.txn.Commit()
	w.db.syncs.Add(1)
	w.txn = w.db.bdb.NewTransaction(true)
	w.size, w.count = 0, 0
	return err
}

func (w *writer) exists(k []byte) (bool, error) {
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

// commit writes batch and sets every request's cursors and err.
func (db *DB) commit(batch []*appendReq) {
	db.batches.Add(1)
	w := db.newWriter()
	defer func() { w.txn.Discard() }()
	var stored, dups uint64
	seen := make(map[string]struct{})
	newChannels := make(map[string]bool)
	err := func() error {
		for _, r := range batch {
			r.cursors = make([]string, len(r.envs))
			for i := range r.envs {
				p := &r.envs[i]
				if _, ok := seen[string(p.id)]; ok {
					dups++
					continue
				}
				seen[string(p.id)] = struct{}{}
				off, err := db.write(w, p, newChannels)
				if err != nil {
					return fmt.Errorf("store: append %s: %w", p.env.ID, err)
				}
				if off == 0 {
					dups++
					continue
				}
				stored++
				r.cursors[i] = formatCursor(off)
			}
		}
		if err := w.flush(); err != nil {
			return fmt.Errorf("store: append: commit: %w", err)
		}
		return nil
	}()
	if err != nil {
		// Some transactions may have been committed; the caller retries and
		// idempotence makes that safe. Offsets handed out are never reused.
		for _, r := range batch {
			r.cursors, r.err = nil, err
		}
		clear(db.authors) // may be ahead of what was written
		db.log.Warn("append failed", "err", err)
		return
	}
	for ch := range newChannels {
		db.channels[ch] = true
	}
	db.appends.Add(stored)
	db.dups.Add(dups)
	if db.nextOffset > 1 {
		db.lastOffset.Store(db.nextOffset - 1)
	}
}

// write adds one envelope to w and returns its offset, or 0 if its id is
// already stored.
func (db *DB) write(w *writer, p *prepared, newChannels map[string]bool) (uint64, error) {
	e := p.env
	mk := msgKey(p.id)
	lk := logKey(e.Channel, db.nextOffset)
	ak := authorKey(e.Channel, e.From, e.Seq)
	hk := highKey(e.Channel, e.From)
	est := int64(len(mk)+9+len(p.bin)+len(lk)+len(ak)+2*len(p.id)+len(hk)+8+len(e.Channel)+8) + 6*16
	if err := w.room(est, 6); err != nil {
		return 0, err
	}
	if ok, err := w.exists(mk); err != nil || ok {
		return 0, err
	}
	off := db.nextOffset
	db.nextOffset++
	w.last = off

	v := make([]byte, 0, 9+len(p.bin))
	v = append(v, msgVersion)
	v = binary.BigEndian.AppendUint64(v, off)
	v = append(v, p.bin...)
	if err := w.set(mk, v); err != nil {
		return 0, err
	}
	if err := w.set(lk, p.id); err != nil {
		return 0, err
	}
	if !db.channels[e.Channel] && !newChannels[e.Channel] {
		if err := w.set(channelKey(e.Channel), nil); err != nil {
			return 0, err
		}
		newChannels[e.Channel] = true
	}

	// Author index and high-water mark. A second, different envelope with an
	// author's existing seq (the author equivocated) stays in the arrival log
	// but the index keeps the first.
	st, err := db.author(w, e.Channel, e.From)
	if err != nil {
		return 0, err
	}
	if e.Seq <= st.max {
		if taken, err := w.exists(ak); err != nil {
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
	st.max = max(st.max, e.Seq)
	if e.Seq == st.hw+1 {
		// Filling the gap at hw+1 may join a run of later seqs stored earlier.
		st.hw = e.Seq
		for st.hw < st.max {
			ok, err := w.exists(authorKey(e.Channel, e.From, st.hw+1))
			if err != nil {
				return 0, err
			}
			if !ok {
				break
			}
			st.hw++
		}
		if err := w.set(hk, binary.BigEndian.AppendUint64(nil, st.hw)); err != nil {
			return 0, err
		}
	}
	return off, nil
}

// authorState caches, per channel and author, the high-water mark and the
// highest seq in the author index, so an in-order append needs no index
// reads. Owned by the committer; cleared when a commit fails or it grows
// past maxAuthorCache.
type authorState struct{ hw, max uint64 }

const maxAuthorCache = 1 << 16

// author returns the cached state of (channel, from), loading it through w.
func (db *DB) author(w *writer, channel, from string) (*authorState, error) {
	ck := channel + "\x00" + from
	if st, ok := db.authors[ck]; ok {
		return st, nil
	}
	hw, err := w.highWater(highKey(channel, from))
	if err != nil {
		return nil, err
	}
	st := &authorState{hw: hw, max: hw}
	prefix := authorPrefix(channel, from)
	it := w.txn.NewIterator(badger.IteratorOptions{Prefix: prefix, Reverse: true})
	it.Seek(authorKey(channel, from, ^uint64(0)))
	if it.Valid() {
		k := it.Item().Key()
		if len(k) != len(prefix)+8 {
			it.Close()
			return nil, fmt.Errorf("%w: author key %q", ErrCorrupt, k)
		}
		st.max = max(st.max, be64(k[len(prefix):]))
	}
	it.Close()
	if len(db.authors) >= maxAuthorCache {
		clear(db.authors)
	}
	db.authors[ck] = st
	return st, nil
}

func (w *writer) highWater(hk []byte) (uint64, error) {
	item, err := w.txn.Get(hk)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var hw uint64
	err = item.Value(func(v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("high-water %q: %w", hk, ErrCorrupt)
		}
		hw = be64(v)
		return nil
	})
	return hw, err
}
