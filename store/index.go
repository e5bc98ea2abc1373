package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	badger "github.com/dgraph-io/badger/v4"
)

// Key prefixes of the search index and the global arrival log; doc.go
// describes the layout.
const (
	prefixPosting = "s/"
	prefixArrival = "g/"
)

// keyIndexVersion holds indexVersion once the s/ and g/ keys cover every
// stored envelope.
var keyIndexVersion = []byte("o/index")

// indexVersion is the version of the s/ and g/ keys and of the tokenizer
// rules. New rebuilds both when the stored version differs.
const indexVersion = 1

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

// indexEntries is how many keys and bytes writeIndex adds for p, for the
// writer's room check.
func indexEntries(p *prepared) (size, count int64) {
	size = int64(len(prefixArrival)+8+arrivalLen) + 16
	for _, t := range p.tokens {
		size += int64(len(prefixPosting)+len(t)+1+8) + 16
	}
	return size, int64(len(p.tokens)) + 1
}

// writeIndex adds the g/ entry and the postings of the envelope p stored at
// off, in the envelope's transaction. Committer only.
func (db *DB) writeIndex(w *writer, p *prepared, off uint64) error {
	if err := w.set(arrivalKey(off), encodeArrival(db.arrivalMS(), recordSize(p.bin), p.id)); err != nil {
		return err
	}
	for _, t := range p.tokens {
		if err := w.set(postingKey(t, off), nil); err != nil {
			return err
		}
	}
	return nil
}

// recoverIndex runs in New before the committer starts. If the stored index
// version is not indexVersion it drops the s/ and g/ keys and rebuilds them
// from every stored envelope (arrival time: now, since the real one is
// unknown). Then it loads the last arrival time.
func (db *DB) recoverIndex() error {
	var ver []byte
	err := db.bdb.View(func(txn *badger.Txn) error {
		item, err := txn.Get(keyIndexVersion)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		ver, err = item.ValueCopy(nil)
		return err
	})
	if err != nil {
		return fmt.Errorf("index version: %w", err)
	}
	if len(ver) != 1 || ver[0] != indexVersion {
		if err := db.rebuildIndex(); err != nil {
			return fmt.Errorf("rebuild index: %w", err)
		}
	}
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
				env, off, err := decodeMsg(id, v)
				if err != nil {
					return err
				}
				if err := wb.Set(arrivalKey(off), encodeArrival(now, len(v), id)); err != nil {
					return err
				}
				for _, t := range envelopeTokens(env) {
					if err := wb.Set(postingKey(t, off), nil); err != nil {
						return err
					}
				}
				return nil
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
	if err := wb.Set(keyIndexVersion, []byte{indexVersion}); err != nil {
		return err
	}
	if err := wb.Flush(); err != nil {
		return err
	}
	if n > 0 {
		db.log.Info("rebuilt search index", "envelopes", n)
	}
	return nil
}
