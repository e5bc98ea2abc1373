package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/confabhq/confab/mesh"
)

// view runs fn in a read transaction unless the DB is closed.
func (db *DB) view(ctx context.Context, op string, fn func(txn *badger.Txn) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.closed {
		return fmt.Errorf("store: %s: %w", op, ErrClosed)
	}
	if err := db.bdb.View(fn); err != nil {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	return nil
}

// Get returns the envelope with id, or an error wrapping ErrNotFound.
func (db *DB) Get(ctx context.Context, id string) (*mesh.Envelope, error) {
	raw, ok := parseID(id)
	if !ok {
		return nil, fmt.Errorf("store: get %q: %w", trunc(id), ErrNotFound)
	}
	var env *mesh.Envelope
	err := db.view(ctx, "get "+id, func(txn *badger.Txn) error {
		var err error
		env, _, err = getMsg(txn, raw)
		return err
	})
	return env, err
}

// getMsg reads and decodes m/<id>.
func getMsg(txn *badger.Txn, id []byte) (*mesh.Envelope, uint64, error) {
	item, err := txn.Get(msgKey(id))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, err
	}
	var (
		env *mesh.Envelope
		off uint64
	)
	err = item.Value(func(v []byte) error {
		env, off, err = decodeMsg(id, v)
		return err
	})
	return env, off, err
}

// decodeMsg decodes an m/ value: version byte, offset, envelope binary.
func decodeMsg(id, v []byte) (*mesh.Envelope, uint64, error) {
	if len(v) < 9 || v[0] != msgVersion {
		return nil, 0, fmt.Errorf("%w: message %x: bad header", ErrCorrupt, id)
	}
	off := binary.BigEndian.Uint64(v[1:9])
	env, err := mesh.Unmarshal(v[9:])
	if err != nil {
		return nil, 0, fmt.Errorf("%w: message %x: %w", ErrCorrupt, id, err)
	}
	if env.ID != hex.EncodeToString(id) {
		return nil, 0, fmt.Errorf("%w: message %x: content hashes to %s", ErrCorrupt, id, env.ID)
	}
	return env, off, nil
}

func clamp(limit int) int {
	if limit <= 0 || limit > MaxLimit {
		return MaxLimit
	}
	return limit
}

func checkChannel(op, channel string) error {
	if !mesh.ValidChannel(channel) {
		return fmt.Errorf("store: %s %q: %w: channel", op, trunc(channel), ErrInvalid)
	}
	return nil
}

// After returns up to limit envelopes of channel with cursors strictly after
// cursor ("" = from the beginning), oldest first, and their cursors. limit
// <= 0 or > MaxLimit means MaxLimit. A cursor from any channel is a valid
// position. A malformed cursor gives an error wrapping ErrBadCursor.
func (db *DB) After(ctx context.Context, channel, cursor string, limit int) ([]*mesh.Envelope, []string, error) {
	if err := checkChannel("after", channel); err != nil {
		return nil, nil, err
	}
	off, _, err := parseCursor(cursor)
	if err != nil {
		return nil, nil, fmt.Errorf("store: after %s: %w", channel, err)
	}
	if off == ^uint64(0) {
		return nil, nil, nil
	}
	return db.page(ctx, "after "+channel, channel, logKey(channel, off+1), false, clamp(limit))
}

// Before returns the limit newest envelopes of channel with cursors strictly
// before cursor ("" = from the end), returned oldest first, and their
// cursors. limit and cursor are treated as in After.
func (db *DB) Before(ctx context.Context, channel, cursor string, limit int) ([]*mesh.Envelope, []string, error) {
	if err := checkChannel("before", channel); err != nil {
		return nil, nil, err
	}
	off, ok, err := parseCursor(cursor)
	if err != nil {
		return nil, nil, fmt.Errorf("store: before %s: %w", channel, err)
	}
	if !ok {
		off = ^uint64(0) // every offset ever assigned is smaller
	} else if off == 0 {
		return nil, nil, nil
	} else {
		off--
	}
	envs, curs, err := db.page(ctx, "before "+channel, channel, logKey(channel, off), true, clamp(limit))
	slices.Reverse(envs)
	slices.Reverse(curs)
	return envs, curs, err
}

// page walks channel's arrival log from seek (inclusive) in either direction.
func (db *DB) page(ctx context.Context, op, channel string, seek []byte, reverse bool, limit int) ([]*mesh.Envelope, []string, error) {
	var (
		envs []*mesh.Envelope
		curs []string
	)
	prefix := logPrefix(channel)
	err := db.view(ctx, op, func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, Reverse: reverse})
		defer it.Close()
		for it.Seek(seek); it.Valid() && len(envs) < limit; it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			item := it.Item()
			k := item.Key()
			if len(k) != len(prefix)+8 {
				return fmt.Errorf("%w: log key %q", ErrCorrupt, k)
			}
			off := be64(k[len(prefix):])
			id, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			env, err := envByIndex(txn, id, "log", off)
			if err != nil {
				return err
			}
			envs = append(envs, env)
			curs = append(curs, formatCursor(off))
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return envs, curs, nil
}

// envByIndex loads the envelope an index entry points to; a dangling or
// malformed entry is corruption.
func envByIndex(txn *badger.Txn, id []byte, index string, n uint64) (*mesh.Envelope, error) {
	if len(id) != 32 {
		return nil, fmt.Errorf("%w: %s entry %d: id is %d bytes", ErrCorrupt, index, n, len(id))
	}
	env, _, err := getMsg(txn, id)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%w: %s entry %d: message %x missing", ErrCorrupt, index, n, id)
	}
	return env, err
}

// HighWater returns, for each author with envelopes in channel, the highest
// seq S such that seqs 1..S are all stored. Authors whose seq 1 is missing
// are absent (their mark is 0).
func (db *DB) HighWater(ctx context.Context, channel string) (map[string]uint64, error) {
	if err := checkChannel("high-water", channel); err != nil {
		return nil, err
	}
	m := make(map[string]uint64)
	prefix := highPrefix(channel)
	err := db.view(ctx, "high-water "+channel, func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			item := it.Item()
			author := string(item.Key()[len(prefix):])
			err := item.Value(func(v []byte) error {
				st, ok := decodeHigh(v)
				if !ok {
					return fmt.Errorf("%w: high-water of %q", ErrCorrupt, author)
				}
				if st.hw > 0 {
					m[author] = st.hw
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// Since returns up to limit envelopes of author in channel with seq >
// afterSeq, in ascending seq order (gaps are skipped). limit is treated as in
// After.
func (db *DB) Since(ctx context.Context, channel, author string, afterSeq uint64, limit int) ([]*mesh.Envelope, error) {
	var envs []*mesh.Envelope
	err := db.walkAuthor(ctx, channel, author, afterSeq, limit, func(txn *badger.Txn, seq uint64, id []byte) error {
		env, err := envByIndex(txn, id, "author", seq)
		if err != nil {
			return err
		}
		envs = append(envs, env)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return envs, nil
}

// walkAuthor checks Since's arguments, then calls visit with the seq and id
// (valid during the call only) of author's envelopes in channel with seq >
// afterSeq, ascending, at most limit (clamped as in After), in one read
// transaction: Since and SinceRaw.
func (db *DB) walkAuthor(ctx context.Context, channel, author string, afterSeq uint64, limit int, visit func(txn *badger.Txn, seq uint64, id []byte) error) error {
	if err := checkChannel("since", channel); err != nil {
		return err
	}
	if author == "" || len(author) > 64 || strings.IndexByte(author, 0) >= 0 {
		return fmt.Errorf("store: since %s: %w: author %q", channel, ErrInvalid, trunc(author))
	}
	if afterSeq == ^uint64(0) {
		return nil
	}
	limit = clamp(limit)
	prefix := authorPrefix(channel, author)
	return db.view(ctx, "since "+channel+" "+author, func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		var id []byte
		n := 0
		for it.Seek(authorKey(channel, author, afterSeq+1)); it.Valid() && n < limit; it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			item := it.Item()
			k := item.Key()
			if len(k) != len(prefix)+8 {
				return fmt.Errorf("%w: author key %q", ErrCorrupt, k)
			}
			var err error
			if id, err = item.ValueCopy(id[:0]); err != nil {
				return err
			}
			if err := visit(txn, be64(k[len(prefix):]), id); err != nil {
				return err
			}
			n++
		}
		return nil
	})
}

// Channels returns every channel with at least one stored envelope, sorted.
func (db *DB) Channels(ctx context.Context) ([]string, error) {
	chans := []string{}
	err := db.view(ctx, "channels", func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixChannel)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			chans = append(chans, string(bytes.TrimPrefix(it.Item().Key(), []byte(prefixChannel))))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return chans, nil
}
