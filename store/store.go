package store

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"github.com/confabhq/confab/mesh"
)

// Errors returned by DB methods; match them with errors.Is.
var (
	// ErrNotFound: Get found no envelope with that id.
	ErrNotFound = errors.New("store: not found")
	// ErrLocked: another process (or another DB in this process) holds the directory.
	ErrLocked = errors.New("store: directory locked")
	// ErrClosed: the DB was closed.
	ErrClosed = errors.New("store: closed")
	// ErrBadCursor: a cursor is not 16 lowercase hex characters.
	ErrBadCursor = fmt.Errorf("store: %w", mesh.ErrBadCursor)
	// ErrInvalid: an argument (envelope, channel, author) is malformed; nothing was written.
	ErrInvalid = errors.New("store: invalid argument")
	// ErrCorrupt: bytes read back from disk do not decode.
	ErrCorrupt = errors.New("store: corrupt record")
)

// MaxLimit caps the page size of After, Before and Since; a limit <= 0 or
// above it means MaxLimit.
const MaxLimit = 1000

// Config configures a DB. Start from DefaultConfig.
type Config struct {
	// Dir holds the badger files and the lock file. Required unless InMemory;
	// created (0700) if missing.
	Dir string
	// InMemory keeps everything in memory (tests, benchmarks where the disk is
	// not the point). Nothing is durable and Dir is ignored. Default false.
	InMemory bool
	// MaxBatch caps how many envelopes one group commit writes and syncs.
	// Default 1024.
	MaxBatch int
	// Logger receives store and badger warnings and errors. Default
	// slog.Default().
	Logger *slog.Logger
	// GCInterval is how often the value-log GC runs. Default 10 minutes;
	// negative disables it. Ignored when InMemory.
	GCInterval time.Duration
	// GCDiscardRatio is passed to badger's RunValueLogGC: a value-log file is
	// rewritten when at least this fraction of it is stale. Default 0.5.
	GCDiscardRatio float64
	// MaxAge deletes envelopes that arrived at this store longer ago than
	// this (by the arrival time the store records, not the author's ts).
	// Default 0: keep forever.
	MaxAge time.Duration
	// MaxBytes deletes the oldest envelopes while the stored envelope records
	// (binary envelope plus 9 bytes each; indexes and badger's overhead are
	// not counted) total more than this. Default 0: unlimited.
	MaxBytes int64
	// RetentionInterval is how often the retention sweeper runs when MaxAge
	// or MaxBytes is set. Default 1 minute; negative disables the sweeper.
	RetentionInterval time.Duration
	// Now is the clock for arrival times and MaxAge. Default time.Now.
	Now func() time.Time
	// MinFreeBytes is the free space the store's filesystem must keep: below
	// it Append fails with ErrDiskFull and writes nothing, and the search
	// indexer waits (retrying every second) instead of writing. Badger's memtable
	// log is a memory-mapped file, so running out of space inside it kills
	// the process (SIGBUS) instead of failing a write; the reserve covers
	// what one memtable can still take. Default DefaultMinFreeBytes; ignored
	// in memory.
	MinFreeBytes int64
}

// DefaultConfig returns the defaults listed on Config's fields; set Dir (or
// InMemory) before calling New.
func DefaultConfig() Config {
	return Config{
		MaxBatch:          1024,
		Logger:            slog.Default(),
		GCInterval:        10 * time.Minute,
		GCDiscardRatio:    0.5,
		RetentionInterval: time.Minute,
		Now:               time.Now,
		MinFreeBytes:      DefaultMinFreeBytes,
	}
}

// Stats are counters since New, for metrics.
type Stats struct {
	Appends    uint64 // envelopes stored
	Duplicates uint64 // envelopes skipped because their id was already stored
	Rejected   uint64 // Append calls refused for invalid input
	Batches    uint64 // group commits (one badger write + sync each, usually)
	DiskFull   uint64 // group commits refused for lack of disk space (ErrDiskFull)
	Syncs      uint64 // synced badger transaction commits
	LastOffset uint64 // highest arrival offset assigned
	LSMBytes   int64  // badger LSM size on disk (updated by badger about once a minute)
	VlogBytes  int64  // badger value-log size on disk

	Searches      uint64 // Search calls that succeeded
	SearchErrors  uint64 // Search calls that failed (invalid query included)
	SearchResults uint64 // envelopes returned by Search
	Expired       uint64 // envelopes deleted for MaxAge
	Trimmed       uint64 // envelopes deleted for MaxBytes
	Sweeps        uint64 // completed retention passes
	StoredBytes   int64  // envelope record bytes stored, as of the last pass (0 before one)
	StoredCount   int64  // envelopes stored, as of the last pass

	Indexed      uint64 // the search index covers every envelope with an offset up to this
	IndexBatches uint64 // indexer transactions
}

// DB is confab's message history. All methods are safe for concurrent use.
type DB struct {
	cfg     Config
	log     *slog.Logger
	bdb     *badger.DB
	unlock  func() error
	reqs    chan *appendReq // unbuffered: a send succeeds only while the committer runs
	closing chan struct{}
	wg      sync.WaitGroup
	once    sync.Once

	// mu guards closed. Readers hold it shared for the whole read so Close
	// (which takes it exclusively) never closes badger under them.
	mu     sync.RWMutex
	closed bool

	// Only touched by the committer goroutine (and by New before it starts).
	nextOffset uint64          // next arrival offset to assign; offsets start at 1
	channels   map[string]bool // channels with a c/ key
	authors    map[string]*authorState

	appends, dups, rejected, batches, syncs, lastOffset atomic.Uint64
	diskFull                                            atomic.Uint64

	idx indexState // search and retention; see index.go
}

// New opens (creating if needed) the store described by cfg. Defaults for
// zero fields: MaxBatch 1024, Logger slog.Default(), GCInterval 10 minutes,
// GCDiscardRatio 0.5, MaxAge and MaxBytes 0 (keep everything),
// RetentionInterval 1 minute, Now time.Now. Dir is required unless InMemory.
// If another process (or another DB in this process) uses Dir, New fails
// with an error wrapping ErrLocked. If the search index is missing (a store written before search
// existed), New rebuilds the arrival log before returning and the indexer
// rebuilds the postings in the background. New starts a committer goroutine,
// a search indexer goroutine, on disk a value-log GC
// goroutine, and with MaxAge or MaxBytes set a retention sweeper; the caller
// must call Close.
func New(cfg Config) (*DB, error) {
	def := DefaultConfig()
	if cfg.MaxBatch == 0 {
		cfg.MaxBatch = def.MaxBatch
	}
	if cfg.Logger == nil {
		cfg.Logger = def.Logger
	}
	if cfg.GCInterval == 0 {
		cfg.GCInterval = def.GCInterval
	}
	if cfg.GCDiscardRatio == 0 {
		cfg.GCDiscardRatio = def.GCDiscardRatio
	}
	if cfg.RetentionInterval == 0 {
		cfg.RetentionInterval = def.RetentionInterval
	}
	if cfg.Now == nil {
		cfg.Now = def.Now
	}
	switch {
	case cfg.MaxBatch < 0:
		return nil, fmt.Errorf("store: config: MaxBatch %d is negative", cfg.MaxBatch)
	case cfg.GCDiscardRatio <= 0 || cfg.GCDiscardRatio >= 1:
		return nil, fmt.Errorf("store: config: GCDiscardRatio %v not in (0,1)", cfg.GCDiscardRatio)
	case cfg.MaxAge < 0:
		return nil, fmt.Errorf("store: config: MaxAge %v is negative", cfg.MaxAge)
	case cfg.MinFreeBytes < 0:
		return nil, fmt.Errorf("store: config: MinFreeBytes %d is negative", cfg.MinFreeBytes)
	case cfg.MaxBytes < 0:
		return nil, fmt.Errorf("store: config: MaxBytes %d is negative", cfg.MaxBytes)
	case !cfg.InMemory && cfg.Dir == "":
		return nil, errors.New("store: config: Dir is required unless InMemory")
	}
	log := cfg.Logger.With("component", "store")

	var opts badger.Options
	unlock := func() error { return nil }
	if cfg.InMemory {
		opts = badger.DefaultOptions("").WithInMemory(true)
	} else {
		if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("store: open %s: %w", cfg.Dir, err)
		}
		var err error
		if unlock, err = lockDir(cfg.Dir); err != nil {
			return nil, err
		}
		opts = badger.DefaultOptions(cfg.Dir)
	}
	// SyncWrites: a commit returns (and becomes visible) only after the WAL
	// is synced; see doc.go. Conflict detection is useless with one writer.
	// Small memtables keep the disk reserve (MinFreeBytes) small.
	//
	// ValueThreshold: every envelope (at most mesh.MaxEnvelopeLen) stays in
	// the LSM tree with its keys, never in the value log: one read per Get,
	// and no value-log GC to keep up with. (badger's default, set on purpose.)
	// Snappy compression stays (badger's default, set on purpose): it costs
	// ~4% of the CPU of the history benchmark (flushes and compactions), and
	// without it the bytes on disk per message grew 23% there (787 -> 967 B,
	// mostly the keys' shared prefixes), even with incompressible content.
	opts = opts.WithSyncWrites(true).
		WithValueThreshold(1 << 20).
		WithCompression(options.Snappy).
		// With 8 MiB memtables a burst of appends makes many small L0
		// tables, and merging them into L1 every 5 (badger's default) was
		// the largest CPU cost of a synced append burst (~30% in
		// compaction). Merging every 10 cut the CPU of 150000 synced
		// appends by ~20% (10.4-12.2 s -> 8.8-9.3 s user+sys), and in one
		// run of the history benchmark raised synced appends 20.4k -> 26.0k/s
		// and cut catch-up of 100k from 7.7 to 6.3 s. The price is on reads,
		// which merge more tables: latest 100 p50 356 -> 443 µs there.
		WithNumLevelZeroTables(10).
		WithNumLevelZeroTablesStall(20).
		WithMemTableSize(MemTableSize).
		// Two compactors (badger's minimum; its default is 4): each one
		// wakes every 50 ms even when idle, which was most of an idle
		// store's CPU (~1.2 -> ~1.0 ms per second per store; it adds up
		// with a thousand agents in one process), and two cores gain
		// nothing from four.
		WithNumCompactors(2).
		WithDetectConflicts(false).
		WithLogger(badgerLogger{log.With("component", "badger")}).
		WithMetricsEnabled(false)
	bdb, err := badger.Open(opts)
	if err != nil {
		unlock()
		if strings.Contains(err.Error(), "Cannot acquire directory lock") {
			return nil, lockedErr(cfg.Dir)
		}
		return nil, fmt.Errorf("store: open %s: %w", cfg.Dir, err)
	}
	db := &DB{
		cfg:      cfg,
		log:      log,
		bdb:      bdb,
		unlock:   unlock,
		reqs:     make(chan *appendReq),
		closing:  make(chan struct{}),
		channels: make(map[string]bool),
		authors:  make(map[string]*authorState),
	}
	db.idx.kick = make(chan struct{}, 1)
	db.idx.hurry = make(chan struct{}, 1)
	db.idx.progress = make(chan struct{})
	err = db.recover()
	if err == nil {
		err = db.recoverIndex()
	}
	if err != nil {
		bdb.Close()
		unlock()
		return nil, fmt.Errorf("store: open %s: %w", cfg.Dir, err)
	}
	db.wg.Add(2)
	go db.commitLoop()
	go db.indexLoop(testIndexGate)
	db.kickIndexer() // resume from the watermark
	if !cfg.InMemory && cfg.GCInterval > 0 {
		db.wg.Add(1)
		go db.gcLoop()
	}
	if (cfg.MaxAge > 0 || cfg.MaxBytes > 0) && cfg.RetentionInterval > 0 {
		db.wg.Add(1)
		go db.retainLoop()
	}
	return db, nil
}

func lockedErr(dir string) error {
	return fmt.Errorf("store: open %s: another confab process is using this directory (stop it or use another home): %w", dir, ErrLocked)
}

// recover loads the last assigned offset and the known channels.
func (db *DB) recover() error {
	return db.bdb.View(func(txn *badger.Txn) error {
		item, err := txn.Get(keyLastOffset)
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
			db.nextOffset = 1
		case err != nil:
			return err
		default:
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			if len(v) != 8 {
				return fmt.Errorf("last offset: %w", ErrCorrupt)
			}
			last := be64(v)
			db.nextOffset = last + 1
			db.lastOffset.Store(last)
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixChannel)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			db.channels[string(it.Item().Key()[len(prefixChannel):])] = true
		}
		return nil
	})
}

// Close stops the committer and GC goroutines, waits for them and for
// in-flight reads, and closes badger. Appends waiting to be committed get
// ErrClosed. Close is idempotent; later calls return nil.
func (db *DB) Close() error {
	var err error
	db.once.Do(func() {
		close(db.closing)
		db.wg.Wait()
		db.mu.Lock()
		db.closed = true
		db.mu.Unlock()
		err = db.bdb.Close()
		if uerr := db.unlock(); err == nil {
			err = uerr
		}
		if err != nil {
			err = fmt.Errorf("store: close: %w", err)
		}
	})
	return err
}

// Stats returns a snapshot of the counters.
func (db *DB) Stats() Stats {
	s := Stats{
		Appends:    db.appends.Load(),
		Duplicates: db.dups.Load(),
		Rejected:   db.rejected.Load(),
		Batches:    db.batches.Load(),
		DiskFull:   db.diskFull.Load(),
		Syncs:      db.syncs.Load(),
		LastOffset: db.lastOffset.Load(),

		Searches:      db.idx.searches.Load(),
		SearchErrors:  db.idx.searchErrors.Load(),
		SearchResults: db.idx.searchResults.Load(),
		Expired:       db.idx.expired.Load(),
		Trimmed:       db.idx.trimmed.Load(),
		Sweeps:        db.idx.sweeps.Load(),
		StoredBytes:   db.idx.storedBytes.Load(),
		StoredCount:   db.idx.storedCount.Load(),
		Indexed:       db.idx.indexed.Load(),
		IndexBatches:  db.idx.indexBatches.Load(),
	}
	db.mu.RLock()
	defer db.mu.RUnlock()
	if !db.closed {
		s.LSMBytes, s.VlogBytes = db.bdb.Size()
	}
	return s
}

// gcLoop runs the value-log GC every GCInterval until Close.
func (db *DB) gcLoop() {
	defer db.wg.Done()
	t := time.NewTicker(db.cfg.GCInterval)
	defer t.Stop()
	for {
		select {
		case <-db.closing:
			return
		case <-t.C:
		}
		db.runValueLogGC()
	}
}

// badgerLogger sends badger's warnings and errors to slog and drops its
// info and debug chatter, so badger never prints to stdout or stderr itself.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) {
	b.l.Error(strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (b badgerLogger) Warningf(f string, a ...any) {
	b.l.Warn(strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (badgerLogger) Infof(string, ...any)  {}
func (badgerLogger) Debugf(string, ...any) {}
