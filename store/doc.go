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
//	g/<offset>                        -> arrival ms | size u32 | id  global arrival log (retention, search)
//	s/<word> 0x00 <first offset>      -> gaps  search postings: a list per word and indexer transaction
//	o/index                           -> index version (g/ covers every envelope)
//	o/indexed                         -> offset W: s/ covers every envelope up to W
//
// The keys an envelope is acknowledged with (m/, l/, a/, h/, g/, and c/ for
// a new channel) and o/last are written in one badger transaction: five keys
// per envelope. Its s/ postings follow, written by the background indexer
// with o/indexed in a transaction of their own (see Search). Retention
// deletes all of an envelope's keys in one transaction. The high-water mark hw (highest S with 1..S all stored) is
// maintained on append: when seq is hw+1, hw advances over every following
// seq already in the author index (at most up to max, the highest seq seen),
// so gaps filled out of order close at once, and an in-order append reads no
// index key. If an author signs two
// different envelopes with one seq, both are stored and logged, and the
// author index keeps the first.
//
// # Search
//
// Search finds envelopes containing every word of a query (AND), newest
// first. Words are maximal runs of Unicode letters and digits
// (unicode.IsLetter, unicode.IsDigit), lowercased with unicode.ToLower, of at
// least 2 runes and at most 64 bytes (longer runs, such as hashes and keys,
// are dropped, not truncated); there is no stemming or accent folding. An
// envelope's words are those of its Name and Content, distinct, at most 512
// (the first ones). Envelopes of private channels ("~...") are not indexed at
// all: their content is ciphertext, and who speaks in them is not for search.
// The index is not written on the acknowledgement path. A background indexer
// follows the arrival log from its watermark o/indexed: after each commit
// the committer hands it the batch's envelopes (in memory, in offset order),
// and it tokenizes them and writes, per word, one posting list of the
// offsets of that transaction's envelopes containing it: key s/<word> 0x00
// <first offset>, value the later offsets as uvarint gaps (empty for a list
// of one). It writes up to 4096 envelopes per transaction, together with the
// new watermark. A word's lists cover disjoint offset ranges, so the list
// holding the greatest offset <= x is the one under the greatest key <= x.
// Packing matters for real text, where words repeat: English prose (the
// project's docs cut into 200-byte messages) has ~26 distinct words per
// message, which took 26 keys per message one posting per key, and takes
// ~9 lists per message in transactions of 100 messages, ~3 in transactions
// of 1000. Words that occur once (random strings, ids) still take a key
// each. The indexer is paced: before each transaction it waits for the
// appends to pause for 100 ms, so a burst (a catch-up, many writers at once)
// is stored without the indexer competing for the CPU and is indexed right
// after, in fewer, larger transactions; it does not wait once the oldest
// envelope waiting for it committed 10 s ago (under appends that never pause
// the index stays about 10 s behind), when a Search or a retention pass waits
// for it, or while it reads from disk. So the index lags the store by at
// most about 10 s (100 ms after chat-rate appends). A crash loses no index
// entry for good: postings and watermark are written together, and New
// restarts the indexer from the watermark, reading g/ and m/ from disk until
// it has caught up (likewise for what comes after the first 131072
// envelopes waiting, which is all the in-memory hand-off holds: about
// 100 MB of 200-byte messages). Search
// covers what is indexed, and first waits (up to 2 s, or its ctx) until the
// index covers everything committed before the call, so a client finds what
// it was just acknowledged; past that wait it answers from what is indexed.
// Stats.Indexed is the watermark.
//
// A query is at most 256 bytes and 8 distinct words; a '*' after the last
// word makes it a prefix, expanded to at most 128 indexed words (a broader
// prefix is allowed only beside an exact word, and then checked against each
// match's words). Each word is a posting list of offsets; a prefix is the
// union of its words' lists; a channel filter is one more list, the
// channel's arrival log l/<channel>. The lists are intersected by a leapfrog
// join walking offsets downwards (reverse badger iterators): each list seeks
// to the current candidate offset, and a smaller answer becomes the new
// candidate, so the join skips through long lists at the pace of the
// shortest. A word's list seeks its key range in reverse to the list whose
// first offset is at most the candidate, decodes it and binary-searches it.
// A list already at or below the candidate does not move, and one just above
// it moves within the decoded list or steps to the previous list instead of
// seeking. Matching offsets resolve to ids
// through g/, then to envelopes through m/. Everything runs in one read
// transaction, so a result is never an envelope deleted before the search
// began. BenchmarkSearch measures it on 100k envelopes.
//
// Stores written before search existed have no o/index key: New then drops
// any s/ and g/ keys, rebuilds g/ from m/ before it returns (cost: one pass
// over the stored envelopes; arrival times of the rebuilt entries are the
// time of the rebuild), and sets o/indexed to 0, so the indexer rebuilds the
// postings in the background. The same happens for an unknown indexVersion.
// Version 1 stores (postings written with every envelope, no o/indexed) are
// fully indexed: New records o/last as the watermark. Versions 1 and 2 wrote
// one posting per key with an empty value, which is a list of one in
// version 3 (packed lists), so New just records version 3.
//
// # Retention
//
// With Config.MaxAge or Config.MaxBytes set, a sweeper goroutine runs every
// RetentionInterval. Age is measured from the arrival time the store records
// in g/ (Config.Now at commit, never decreasing with offset even if the clock
// steps back), not from the author's ts, so authors' clock skew cannot expire
// or keep envelopes. Size is the sum of the stored m/ values (the binary
// envelope plus 9 bytes); indexes and badger's own overhead are not counted,
// so the disk holds more than MaxBytes. The sweeper counts the g/ entries
// added since its last pass (a full count after a restart), then deletes
// from the oldest offset up while an envelope is older than MaxAge or the
// total is over MaxBytes, up to 256 envelopes per synced transaction, with
// every key that refers to the envelope (only envelopes the index covers:
// a pass first waits, like Search, for the indexer, and leaves anything past
// the watermark to the next pass, so the indexer never writes postings for a
// deleted envelope): m/, l/, its a/ entry (if it points
// to that id), g/, and its offset in the posting list of each of its words
// (found by tokenizing it again; each list touched is rewritten once per
// transaction, under its new first offset if that one went, or deleted when
// empty). Then it runs the value-log GC. Badger reclaims the space of deleted keys as it
// compacts.
//
// h/ and c/ keys are kept: HighWater never drops after a deletion, so peers
// comparing high-water marks in catch-up do not fetch the deleted prefix
// again and again, and Channels still lists a channel whose envelopes have
// all expired. Since and After skip deleted envelopes (they are gaps). An
// envelope that arrives again after its deletion (a replay from a peer) is
// stored again as new, with a new offset and arrival time.
//
// Stored bytes are decoded with mesh.Unmarshal and the id rechecked; a record
// that does not decode gives an error wrapping ErrCorrupt, never a panic.
// SinceRaw (catch-up serving) returns the stored binary form without
// decoding it, but still hashes each record against its id: a mismatch, a
// missing or short record is ErrCorrupt too.
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
// demands: we fill 90% of it, about 1200 envelopes of 430 bytes with 8 MiB
// memtables), syncs once, and answers them all from badger's commit callback.
// Being the only writer, it checks duplicates and updates high-water marks
// without conflicts, and assigns offsets in commit order. The duplicate check
// reads m/<id> only when the envelope's seq is at most the highest seq
// stored for its author in its channel (h/'s max, cached): the id hashes
// channel, author and seq, so a higher seq is new, and an in-order append
// (live or catch-up) reads no key but the author's h/ once. h/ is written
// with every envelope and kept by retention, so this holds across restarts.
// Append checks and encodes a call of 256 envelopes or more on every core.
//
// Batches are pipelined one deep: while badger writes and syncs batch N, the
// committer prepares batch N+1 in a transaction opened before N committed,
// consulting N's in-flight ids and author keys (and its per-author cache)
// where that transaction cannot see N. It waits for N before committing N+1,
// so commits stay in offset order, and if N fails N+1 fails too rather than
// report as duplicates envelopes that were never written. Reads run in
// badger read transactions (consistent snapshots) in the caller's goroutine.
//
// The retention sweeper writes too (deletions), in its own transactions,
// concurrently with the committer. They never write the same key: the
// sweeper deletes keys of committed envelopes and never touches h/, c/ or
// o/ keys, and the committer never rewrites an envelope's keys. The committer
// may judge an envelope a duplicate from a snapshot taken just before the
// sweeper deleted it; that envelope was expiring anyway.
//
// The indexer goroutine is a third writer (postings and o/indexed only);
// it never writes a key the committer or the sweeper writes: it only adds
// new posting lists, whose first offsets are above its watermark, and the
// sweeper rewrites lists only under offsets at or below it.
//
// Lock order: DB.mu (read-held by readers, write-held once by Close),
// indexState.sweepMu (held by a retention pass, guarding its running totals),
// indexState.pendMu (the committer-to-indexer hand-off) and
// indexState.waitMu (the indexer's progress signal) are the package's
// mutexes; no two are ever held together. badger's locks
// are internal to it and never held across our calls. Committer-owned state (next offset, known channels, the
// per-author cache) is touched only by the committer goroutine after New
// returns; badger's callback goroutine touches only the finished batch, its
// requests and atomic counters.
//
// # Lifecycle
//
// New validates the Config, takes an exclusive flock on Dir/confab.lock (a
// second New on the same directory, from this process or another, fails with
// ErrLocked), opens badger, recovers the last offset, checks (and if needed
// rebuilds) the search index, and starts the committer, the indexer, (on disk) the
// value-log GC goroutine, which runs every GCInterval, and (with MaxAge or
// MaxBytes) the retention sweeper. Badger logs warnings and errors through
// the injected slog logger; its info and debug output is dropped. Close stops
// every goroutine (a sweep in progress stops between transactions),
// waits for them and for in-flight reads, closes badger and releases the
// lock; it is idempotent. Appends that were waiting return ErrClosed, and
// every method returns ErrClosed afterwards.
package store
