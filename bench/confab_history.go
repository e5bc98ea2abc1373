package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/store"
)

func init() {
	Register(Scenario{
		Name:    "confab-store",
		Compare: CompareHistory,
		Method: "store.DB with its defaults (badger SyncWrites=true, group commit of up to 1024 envelopes per synced transaction) on a fresh " +
			"directory on disk (under $TMPDIR, or -dir); envelopes are really signed (before the clock) by 16 authors in one channel, " +
			"200 bytes of random base64 text as content (~430 bytes in binary form). (a) 256 goroutines each Append one envelope at a time (the path of " +
			"many agents or gateway clients sending at once); (b) one caller appends batches of 1000; (c) Before(channel, \"\", 100) on the " +
			"store of (a), repeated; (d) bytes on disk per message: the store directory's allocated blocks after Close (badger flushes and " +
			"truncates on Close), divided by the messages of (a), indexes (search postings of the random words included) and badger's fixed files included; (e) catch-up: node A (node.Host, store on disk, mesh) holds " +
			"the channel's messages (indexed, and the process idle, before the clock starts), node B joins the channel empty and is then connected to A; the clock runs from the connect until B's store " +
			"holds every message (polled every 5 ms), all of it through /confab/sync/1 (responses of up to 10000 envelopes / 8 MiB, the next requested while the last is checked), each envelope verified and stored by B. Profile (full size; targets are 100000 appends/s and catch-up under 2 s): " +
			"an acknowledged append writes five keys (m/, l/, a/, g/, h/); the search index follows from a background indexer that writes one posting " +
			"list (one key) per word and indexer transaction. This content's words are random base64 fragments that never repeat, so that is still " +
			"~13 keys per envelope and about half of the CPU (store.BenchmarkHistoryCPU, 256 writers: ~47 µs per envelope in all, ~23 µs with " +
			"indexing off); English-like text, whose words repeat, costs ~36 µs per envelope with 256 writers and ~23 µs in batches of 1000 " +
			"(~110 µs before the lists were packed). Everything goes through badger's single write goroutine (skiplist inserts ~25% of CPU, " +
			"log writes ~8%, syncs ~3%), with flushes (~9%) and compaction (~6%) behind it, so two cores top out near 40k/s; group commit holds " +
			"~115 envelopes per sync with 256 writers. The CPU rows are the process's user+sys per envelope until the index covers everything " +
			"(for catch-up: both nodes, A's reads, B's verification and store). Catch-up verifies signatures on every core, each chunk as one " +
			"batch, chunks growing 256, 512, 1024 (ZIP-215, curve25519-voi: ~16 µs per signature in a batch of 256, ~14 in one of 1024, ~37 alone, ~52 with crypto/ed25519 before) before storing in batches of up to 4096; " +
			"A serves the envelopes as stored (store.SinceRaw, each still hashed against its id: ~7 µs per envelope, most of it badger's lookup of m/<id>, against ~9 decoding and re-encoding them; store.BenchmarkSinceRaw).",
		Run: runConfabStore,
	})
}

// historyWriters is how many goroutines append at once in the concurrent
// parts of the history comparison.
const historyWriters = 256

// signedEnvelopes returns n signed envelopes of channel by `authors` authors,
// each author's seqs 1, 2, ... in order, interleaved round-robin.
func signedEnvelopes(channel string, authors, n int) ([]*mesh.Envelope, error) {
	keys := make([]crypto.PrivKey, authors)
	for i := range keys {
		k, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			return nil, err
		}
		keys[i] = k
	}
	envs := make([]*mesh.Envelope, n)
	// Random text (base64 of random bytes): badger compresses its tables.
	raw := make([]byte, payloadLen*3/4)
	now := time.Now().UnixMilli()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for w := range 2 {
		wg.Go(func() {
			for i := w; i < n; i += 2 {
				r := append([]byte(nil), raw...)
				rand.Read(r)
				e := &mesh.Envelope{Channel: channel, Name: "bench", Seq: uint64(i/authors + 1), TS: now, Kind: "msg", Content: base64.StdEncoding.EncodeToString(r)}
				if err := e.Sign(keys[i%authors]); err != nil {
					errs[w] = err
					return
				}
				envs[i] = e
			}
		})
	}
	wg.Wait()
	return envs, errors.Join(errs...)
}

// appendConcurrently calls appendOne(i) for i in 0..count-1 from `writers`
// goroutines until all are done or limit passes; it returns how many were
// done and how long it took.
func appendConcurrently(ctx context.Context, writers int, limit time.Duration, appendOne func(i int) error, count int) (int, time.Duration, error) {
	var next, done atomic.Int64
	deadline := time.Now().Add(limit)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	start := time.Now()
	for range writers {
		wg.Go(func() {
			for ctx.Err() == nil && time.Now().Before(deadline) {
				i := int(next.Add(1) - 1)
				if i >= count {
					return
				}
				if err := appendOne(i); err != nil {
					mu.Lock()
					firstErr = errors.Join(firstErr, err)
					mu.Unlock()
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	return int(done.Load()), time.Since(start), errors.Join(firstErr, ctx.Err())
}

// diskBytes is the space the files under dir occupy (allocated blocks).
func diskBytes(dir string) int64 {
	var total int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				total += st.Blocks * 512 // badger's DISCARD file is sparse
			}
		}
		return nil
	})
	return total
}

func openStore(dir string) (*store.DB, error) {
	cfg := store.DefaultConfig()
	cfg.Dir = dir
	cfg.Logger = discard
	db, err := store.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("bench: store %s: %w", dir, err)
	}
	return db, nil
}

func runConfabStore(ctx context.Context, size Size) (res Result, err error) {
	root, err := os.MkdirTemp(benchDir, "confab-bench-history-")
	if err != nil {
		return res, fmt.Errorf("bench: history temp dir: %w", err)
	}
	defer os.RemoveAll(root)
	n := pick(size, 4000, 200000)
	envs, err := signedEnvelopes(confabBenchChannel, 16, n)
	if err != nil {
		return res, fmt.Errorf("bench: sign: %w", err)
	}

	// (a) concurrent appenders, one envelope per call.
	dirA := filepath.Join(root, "a")
	db, err := openStore(dirA)
	if err != nil {
		return res, err
	}
	cpu0 := cpuTime()
	stored, el, err := appendConcurrently(ctx, historyWriters, pick(size, time.Second, 5*time.Second), func(i int) error {
		_, err := db.Append(ctx, envs[i:i+1])
		return err
	}, len(envs))
	t1 := time.Now()
	if err == nil {
		err = waitIndexed(ctx, db)
	}
	lagA := time.Since(t1)
	cpu := cpuTime() - cpu0
	if err != nil {
		db.Close()
		return res, fmt.Errorf("bench: concurrent appends: %w", err)
	}
	res.Add(fmt.Sprintf("synced writes, %d concurrent writers", historyWriters), "writes/s", float64(stored)/el.Seconds(), Higher)
	st := db.Stats()
	res.Metrics[len(res.Metrics)-1].Note = fmt.Sprintf("%d envelopes in %d synced commits (%.0f per commit)", st.Appends, st.Syncs, float64(st.Appends)/max(1, float64(st.Syncs)))
	res.Add(fmt.Sprintf("CPU per append, %d concurrent writers", historyWriters), "µs", us(cpu)/float64(max(1, stored)), Lower)
	res.Metrics[len(res.Metrics)-1].Note = "process user+sys from the first append until the search index covered every envelope"
	res.Add(fmt.Sprintf("search index complete after the last append, %d concurrent writers", historyWriters), "s", lagA.Seconds(), Lower)
	res.Metrics[len(res.Metrics)-1].Note = indexLagNote

	// (c) latest 100 of the channel.
	lat := make([]float64, 0, 2000)
	for i := 0; i < pick(size, 200, 2000) && ctx.Err() == nil; i++ {
		t0 := time.Now()
		got, _, err := db.Before(ctx, confabBenchChannel, "", 100)
		if err != nil || len(got) != min(100, stored) {
			db.Close()
			return res, fmt.Errorf("bench: latest 100: got %d: %v", len(got), err)
		}
		lat = append(lat, us(time.Since(t0)))
	}
	res.Add("read latest 100, p50", "µs", percentile(lat, 50), Lower)
	if err := db.Close(); err != nil {
		return res, err
	}
	res.Add("bytes on disk per message", "B", float64(diskBytes(dirA))/float64(stored), Lower)
	res.Metrics[len(res.Metrics)-1].Note = fmt.Sprintf("%d messages", stored)

	// (b) batches of 1000 from one caller.
	db, err = openStore(filepath.Join(root, "b"))
	if err != nil {
		return res, err
	}
	const batch = 1000
	stored, start, cpu0 := 0, time.Now(), cpuTime()
	for stored+batch <= len(envs) && time.Since(start) < pick(size, time.Second, 5*time.Second) && ctx.Err() == nil {
		if _, err = db.Append(ctx, envs[stored:stored+batch]); err != nil {
			break
		}
		stored += batch
	}
	el = time.Since(start)
	if err == nil {
		err = waitIndexed(ctx, db)
	}
	lagB := time.Since(start) - el
	cpu = cpuTime() - cpu0
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return res, fmt.Errorf("bench: batched appends: %w", err)
	}
	res.Add("synced writes, batches of 1000", "writes/s", float64(stored)/el.Seconds(), Higher)
	res.Add("CPU per append, batches of 1000", "µs", us(cpu)/float64(max(1, stored)), Lower)
	res.Metrics[len(res.Metrics)-1].Note = "process user+sys from the first append until the search index covered every envelope"
	res.Add("search index complete after the last append, batches of 1000", "s", lagB.Seconds(), Lower)
	res.Metrics[len(res.Metrics)-1].Note = indexLagNote

	// (e) catch-up of a node that joins empty.
	cn := pick(size, 4000, 100000)
	d, cpu, err := measureCatchUp(ctx, envs[:cn])
	if err != nil {
		return res, err
	}
	res.Add(fmt.Sprintf("catch-up of %d messages", cn), "s", d.Seconds(), Lower)
	res.Add("catch-up CPU per message", "µs", us(cpu)/float64(cn), Lower)
	res.Metrics[len(res.Metrics)-1].Note = "process user+sys during the catch-up (both nodes run in this process: A's reads, B's verification and store)"
	return res, nil
}

// waitIndexed waits until db's search index covers every stored envelope,
// so CPU figures include the indexer's work.
// indexLagNote explains the index-lag rows.
const indexLagNote = "the store's search indexer waits for appends to pause (100 ms; at most 10 s behind the oldest envelope waiting), " +
	"so during a burst the appends rows count stored, acknowledged envelopes and the index follows; this is how long after the last " +
	"acknowledgement it covered everything (Search itself never misses an acknowledged envelope: it makes the indexer start and waits for it)"

func waitIndexed(ctx context.Context, db *store.DB) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		st := db.Stats()
		if st.Indexed >= st.LastOffset {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("bench: search index at %d of %d: %w", st.Indexed, st.LastOffset, ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
}

// waitQuiet waits until this process used less than a tenth of a core over
// a window (background flushes and compactions done), or until limit.
func waitQuiet(ctx context.Context, window, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		c0, t0 := cpuTime(), time.Now()
		select {
		case <-ctx.Done():
		case <-time.After(window):
		}
		if cpuTime()-c0 < time.Since(t0)/10 {
			return
		}
	}
}

// measureCatchUp returns how long node B took to catch up on envs from node
// A, and the process CPU time it took.
func measureCatchUp(ctx context.Context, envs []*mesh.Envelope) (time.Duration, time.Duration, error) {
	a, err := newConfabNode(confabOpts{disk: true})
	if err != nil {
		return 0, 0, err
	}
	defer a.Close()
	for i := 0; i < len(envs); i += 1000 {
		if _, err := a.db.Append(ctx, envs[i:min(i+1000, len(envs))]); err != nil {
			return 0, 0, fmt.Errorf("bench: catch-up fill: %w", err)
		}
	}
	if err := a.m.Join(ctx, confabBenchChannel); err != nil {
		return 0, 0, fmt.Errorf("bench: catch-up join a: %w", err)
	}
	// A has held these messages for a while: its indexing of the fill and
	// the flushes and compactions behind it are not part of the catch-up.
	if err := waitIndexed(ctx, a.db); err != nil {
		return 0, 0, fmt.Errorf("bench: catch-up fill: %w", err)
	}
	b, err := newConfabNode(confabOpts{disk: true})
	if err != nil {
		return 0, 0, err
	}
	defer b.Close()
	if err := b.m.Join(ctx, confabBenchChannel); err != nil {
		return 0, 0, fmt.Errorf("bench: catch-up join b: %w", err)
	}
	want := uint64(len(envs))
	waitQuiet(ctx, 100*time.Millisecond, 30*time.Second)
	start, cpu0 := time.Now(), cpuTime()
	if err := connectConfab(ctx, b, a); err != nil {
		return 0, 0, err
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		hw, err := b.db.HighWater(wctx, confabBenchChannel)
		if err != nil {
			return 0, 0, fmt.Errorf("bench: catch-up: %w", err)
		}
		var have uint64
		for _, s := range hw {
			have += s
		}
		if have >= want {
			return time.Since(start), cpuTime() - cpu0, nil
		}
		select {
		case <-wctx.Done():
			return 0, 0, fmt.Errorf("bench: catch-up: B holds %d of %d: %w", have, want, wctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}
