// Package store is confab's message history: every envelope a node or
// rendezvous accepted, in badger (github.com/dgraph-io/badger/v4), readable by
// arrival order per channel, by id, and by author sequence for catch-up. It
// satisfies mesh's history interface and imports mesh only for the envelope.
//
// # Cursors and order
//
// Each stored envelope gets an arrival offset: a store-global uint64 assigned
// in commit order, starting at 1, never reused (the last one is persisted with
// every write and recovered on open). A cursor is the offset as 16 lowercase
// hex characters, so cursors compare as strings. Offsets are global across
// channels: per-channel paging skips the others', and a cursor from one
// channel is a valid position in any other. History order is arrival order at
// this store; other stores may order the same envelopes differently.
//
// # Key layout
//
// Numbers are 8-byte big-endian so byte order is numeric order; channel names
// and peer ids never contain 0x00, which ends variable-length parts. ids are
// stored as their 32 raw bytes.
//
//	m/<id>                            -> 0x01 | offset | mesh.Envelope.Marshal()
//	l/<channel> 0x00 <offset>         -> id   arrival log (After, Before)
//	a/<channel> 0x00 <from> 0x00 <seq> -> id   author index (Since)
//	h/<channel> 0x00 <from>           -> hw | max  high-water mark (HighWater), highest seq
//	c/<channel>                       -> ""   channel list (Channels)
//	o/last                            -> offset of the last envelope written
//
// All keys of one envelope, and o/last, are written in one badger
// transaction. The high-water mark hw (highest S with 1..S all stored) is
// maintained on append: when seq is hw+1, hw advances over every following
// seq already in the author index (at most up to max, the highest seq seen),
// so gaps filled out of order close at once, and an in-order append reads no
// index key. If an author signs two
// different envelopes with one seq, both are stored and logged, and the
// author index keeps the first.
//
// Stored bytes are decoded with mesh.Unmarshal and the id rechecked; a record
// that does not decode gives an error wrapping ErrCorrupt, never a panic.
//
// # Durability
//
// When Append returns nil, its envelopes are fsynced. The DB is opened with
// badger's SyncWrites=true rather than calling db.Sync() after the write: with
// SyncWrites, badger syncs the write-ahead log inside the commit, before the
// write becomes visible to readers. So a reader (and through it a client)
// never sees an envelope or cursor that a power loss could take back, and an
// offset handed to anyone is never handed out again. db.Sync() after a
// non-synced commit would leave a window where an unsynced envelope is
// readable. The cost is nothing extra: the committer already makes one
// transaction per batch, so one sync per batch either way.
//
// What survives: after kill -9, everything Append acknowledged, and possibly
// envelopes whose Append had not yet returned (they are in the OS page cache);
// those are complete, never partial, and a retry deduplicates them. After a
// power loss or kernel crash, everything Append acknowledged, provided the
// disk honours fsync; unacknowledged envelopes may be lost. Stats values other
// than LastOffset start from zero after a restart.
//
// # Concurrency
//
// Every method is safe for concurrent use. One committer goroutine is the
// only writer (group commit): Append validates and encodes in the caller's
// goroutine, then hands the request to the committer, which takes it and
// every other request already waiting, up to MaxBatch envelopes, writes them
// in one badger transaction (more only if badger's transaction size limit
// demands), syncs once, and answers them all from badger's commit callback.
// Being the only writer, it checks duplicates and updates high-water marks
// without conflicts, and assigns offsets in commit order.
//
// Batches are pipelined one deep: while badger writes and syncs batch N, the
// committer prepares batch N+1 in a transaction opened before N committed,
// consulting N's in-flight ids and author keys (and its per-author cache)
// where that transaction cannot see N. It waits for N before committing N+1,
// so commits stay in offset order, and if N fails N+1 fails too rather than
// report as duplicates envelopes that were never written. Reads run in
// badger read transactions (consistent snapshots) in the caller's goroutine.
//
// Lock order: DB.mu (read-held by readers, write-held once by Close) is the
// only mutex of the package; badger's locks are internal to it and never held
// across our calls. Committer-owned state (next offset, known channels, the
// per-author cache) is touched only by the committer goroutine after New
// returns; badger's callback goroutine touches only the finished batch, its
// requests and atomic counters.
//
// # Lifecycle
//
// New validates the Config, takes an exclusive flock on Dir/confab.lock (a
// second New on the same directory, from this process or another, fails with
// ErrLocked), opens badger, recovers the last offset, and starts the
// committer and (on disk) the value-log GC goroutine, which runs every
// GCInterval. Badger logs warnings and errors through the injected slog
// logger; its info and debug output is dropped. Close stops both goroutines,
// waits for them and for in-flight reads, closes badger and releases the
// lock; it is idempotent. Appends that were waiting return ErrClosed, and
// every method returns ErrClosed afterwards.
package store
