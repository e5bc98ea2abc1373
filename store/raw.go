package store

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/confabhq/confab/mesh"
)

// SinceRaw is Since for a caller that passes the envelopes on as they are
// (mesh's catch-up server): it returns the same envelopes, in the same order,
// each in the binary form it was stored in (mesh.Envelope.Marshal), and the
// seq of the last one (0 if none). It skips Since's decoding (field copies,
// hex id) and the caller's re-encoding, ~2 µs per envelope, but keeps its
// integrity check: every stored value must hash to the id it is stored
// under, or the read fails with an error wrapping ErrCorrupt. The bytes are
// otherwise not decoded, so whoever trusts them must still mesh.Unmarshal
// and Verify them (a catch-up requester does). The slices share one buffer
// owned by the caller. limit is treated as in After.
func (db *DB) SinceRaw(ctx context.Context, channel, author string, afterSeq uint64, limit int) ([][]byte, uint64, error) {
	var (
		buf  []byte
		ends []int
		last uint64
		mk   = make([]byte, len(prefixMsg)+32)
	)
	copy(mk, prefixMsg)
	err := db.walkAuthor(ctx, channel, author, afterSeq, limit, func(txn *badger.Txn, seq uint64, id []byte) error {
		if len(id) != 32 {
			return fmt.Errorf("%w: author entry %d: id is %d bytes", ErrCorrupt, seq, len(id))
		}
		copy(mk[len(prefixMsg):], id)
		var err error
		if buf, err = appendRawMsg(txn, mk, buf); err != nil {
			if errors.Is(err, ErrNotFound) {
				return fmt.Errorf("%w: author entry %d: message %x missing", ErrCorrupt, seq, id)
			}
			return err
		}
		ends = append(ends, len(buf))
		last = seq
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	bins := make([][]byte, len(ends))
	start := 0
	for i, end := range ends {
		bins[i] = buf[start:end:end]
		start = end
	}
	return bins, last, nil
}

// appendRawMsg appends to buf the envelope binary of the m/ value under mk
// (prefix and 32-byte id), after checking that it hashes to that id. It
// returns ErrNotFound (unwrapped) if there is no such value.
func appendRawMsg(txn *badger.Txn, mk, buf []byte) ([]byte, error) {
	item, err := txn.Get(mk)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return buf, ErrNotFound
	}
	if err != nil {
		return buf, err
	}
	id := mk[len(prefixMsg):]
	err = item.Value(func(v []byte) error {
		if len(v) < 9+ed25519.SignatureSize || v[0] != msgVersion || len(v)-9 > mesh.MaxEnvelopeLen {
			return fmt.Errorf("%w: message %x: bad header", ErrCorrupt, id)
		}
		bin := v[9:]
		if sum := sha256.Sum256(bin[:len(bin)-ed25519.SignatureSize]); string(sum[:]) != string(id) {
			return fmt.Errorf("%w: message %x: content hashes to %x", ErrCorrupt, id, sum)
		}
		buf = append(buf, bin...)
		return nil
	})
	return buf, err
}
