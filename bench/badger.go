package main

import (
	"context"
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
		Method: "badger v4.9.6 with default options on a fresh directory on disk (under $TMPDIR, or -dir), 200-byte values under " +
			"16-byte big-endian keys, one writer: (a) SyncWrites=true and one `Update` transaction per message; (b) SyncWrites=false, " +
			"one transaction of 1000 messages, Commit, then `DB.Sync()`. Each part is bounded by a message count and a time limit.",
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
	val := make([]byte, 200)
	for i := range val {
		val[i] = 'v'
	}

	// (a) one synced transaction per message.
	limit := pick(size, 2*time.Second, 5*time.Second)
	db, err := openBadger(filepath.Join(root, "a"), true)
	if err != nil {
		return res, err
	}
	n, start := 0, time.Now()
	for n < pick(size, 2000, 50000) && time.Since(start) < pick(size, time.Second, 5*time.Second) && ctx.Err() == nil {
		if err = db.Update(func(txn *badger.Txn) error { return txn.Set(badgerKey(n), val) }); err != nil {
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
			err = txn.Set(badgerKey(n+j), val)
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
	return res, nil
}
