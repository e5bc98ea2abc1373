package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/dgraph-io/badger/v4"
)

func init() {
	Register(Scenario{
		Name:     "badger",
		Compare:  CompareHistory,
		Baseline: true,
		Method: "badger v4.9.6 with default options on a fresh directory on disk (under $TMPDIR, or -dir), 200-byte random values under " +
			"16-byte big-endian keys, one writer: (a) SyncWrites=true and one `Update` transaction per message; (b) SyncWrites=false, " +
			"one transaction of 1000 messages, Commit, then `DB.Sync()`; (c) SyncWrites=true, 256 goroutines each running one `Update` per message " +
			"(badger joins concurrent commits into one write and sync); (d) reading the newest 100 of (c) with a reverse iterator, repeated; " +
			"(e) bytes on disk per message of (c) after Close. Each part is bounded by a message count and a time limit.",
		Run: runBadger,
	})
}

// benchDir is where disk-backed scenarios make their temp dirs ("" = $TMPDIR).
var benchDir = ""

func openBadger(dir string, sync bool) (*badger.DB, error) {
	db, err := badger.Open(badger.DefaultOptions(dir).WithSyncWrites(sync).WithLogger(nil))
	if err != nil {
		return nil, fmt.Errorf("bench: badger open %s: %w", dir, err)
	}
	return db, nil
}

func badgerKey(i int) []byte {
	k := make([]byte, 16)
	copy(k, "msg/")
	binary.BigEndian.PutUint64(k[8:], uint64(i))
	return k
}

func runBadger(ctx context.Context, size Size) (Result, error) {
	var res Result
	root, err := os.MkdirTemp(benchDir, "confab-bench-badger-")
	if err != nil {
		return res, fmt.Errorf("bench: badger temp dir: %w", err)
	}
	defer os.RemoveAll(root)
	// Random values, different per key: badger compresses its table blocks,
	// and repeated values would make bytes on disk meaningless.
	pool := make([]byte, 1<<20)
	rand.Read(pool)
	valOf := func(i int) []byte { o := (i * 211) % (len(pool) - 200); return pool[o : o+200] }

	// (a) one synced transaction per message.
	limit := pick(size, 2*time.Second, 5*time.Second)
	db, err := openBadger(filepath.Join(root, "a"), true)
	if err != nil {
		return res, err
	}
	n, start := 0, time.Now()
	for n < pick(size, 2000, 50000) && time.Since(start) < pick(size, time.Second, 5*time.Second) && ctx.Err() == nil {
		if err = db.Update(func(txn *badger.Txn) error { return txn.Set(badgerKey(n), valOf(n)) }); err != nil {
			break
		}
		n++
	}
	el := time.Since(start)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return res, fmt.Errorf("bench: badger synced txn %d: %w", n, err)
	}
	res.Add("synced writes, one txn per message", "writes/s", float64(n)/el.Seconds(), Higher)

	// (b) batches of 1000 in one transaction, then Sync.
	db, err = openBadger(filepath.Join(root, "b"), false)
	if err != nil {
		return res, err
	}
	const batch = 1000
	n, start = 0, time.Now()
	for b := 0; b < pick(size, 20, 300) && time.Since(start) < limit && ctx.Err() == nil; b++ {
		txn := db.NewTransaction(true)
		for j := 0; j < batch && err == nil; j++ {
			err = txn.Set(badgerKey(n+j), valOf(n+j))
		}
		if err == nil {
			err = txn.Commit()
		} else {
			txn.Discard()
		}
		if err == nil {
			err = db.Sync()
		}
		if err != nil {
			break
		}
		n += batch
	}
	el = time.Since(start)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return res, fmt.Errorf("bench: badger batch at %d: %w", n, err)
	}
	res.Add("synced writes, batches of 1000", "writes/s", float64(n)/el.Seconds(), Higher)

	// (c) concurrent synced writers, (d) newest 100, (e) bytes on disk.
	dirC := filepath.Join(root, "c")
	db, err = openBadger(dirC, true)
	if err != nil {
		return res, err
	}
	msgs := make([]struct{}, pick(size, 4000, 200000))
	stored, el, err := appendConcurrently(ctx, historyWriters, pick(size, time.Second, 5*time.Second), func(i int) error {
		return db.Update(func(txn *badger.Txn) error { return txn.Set(badgerKey(i), valOf(i)) })
	}, len(msgs))
	if err != nil {
		db.Close()
		return res, fmt.Errorf("bench: badger concurrent: %w", err)
	}
	res.Add(fmt.Sprintf("synced writes, %d concurrent writers", historyWriters), "writes/s", float64(stored)/el.Seconds(), Higher)
	lat := make([]float64, 0, 2000)
	for i := 0; i < pick(size, 200, 2000) && ctx.Err() == nil; i++ {
		t0 := time.Now()
		got := 0
		err = db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Reverse: true, PrefetchValues: true, PrefetchSize: 100, Prefix: []byte("msg/")})
			defer it.Close()
			for it.Seek(append([]byte("msg/"), 0xff)); it.Valid() && got < 100; it.Next() {
				if _, err := it.Item().ValueCopy(nil); err != nil {
					return err
				}
				got++
			}
			return nil
		})
		if err != nil || got != min(100, stored) {
			db.Close()
			return res, fmt.Errorf("bench: badger newest 100: got %d: %v", got, err)
		}
		lat = append(lat, us(time.Since(t0)))
	}
	res.Add("read latest 100, p50", "µs", percentile(lat, 50), Lower)
	if err := db.Close(); err != nil {
		return res, err
	}
	res.Add("bytes on disk per message", "B", float64(diskBytes(dirC))/float64(stored), Lower)
	return res, nil
}
