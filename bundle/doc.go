// Package bundle hands code between agents as the exact git commits: a git
// bundle, stored content-addressed, offered in a signed message, pulled over
// a direct libp2p stream and imported into a quarantine ref namespace.
//
// # Role
//
// The sender runs Create (git bundle create of branches, tags or ranges;
// default the current branch), which stores the bundle as
// <store>/<sha256> and returns an Offer: hash, size, refs, repository name,
// note, creation time. The caller signs the offer's JSON (Offer.Marshal) as
// the content of a mesh envelope of kind OfferType, sends it as a direct
// message, and calls Server.Offer(hash, receiver). The receiver parses it with
// ParseOffer, pulls the bytes with Fetch, and runs Import, later Apply. Record,
// Load and List keep the receiver's index of bundles (<store>/received/).
// This package sends no messages and does not import node, store or
// wsgateway; it uses libp2p's host interfaces only.
//
// # Protocol
//
// ProtocolID "/confab/bundle/1", one stream per request, opened by the
// receiver (with network.WithAllowLimitedConn, so it may cross a relay):
//
//	receiver -> sender  frame {"type":"bundle-get","v":1,"hash":H,"offset":N}
//	sender -> receiver  frame {"type":"bundle-data","v":1,"size":S,"offset":N}
//	                    then exactly S-N raw bytes of the file, then EOF
//	               or   frame {"type":"bundle-data","v":1,"error":CODE}, EOF
//
// A frame is a 4-byte big-endian length (1..MaxFrameLen) and that much JSON.
// CODE is "unavailable" (not offered to this peer, or gone: the receiver
// stops), "busy" (the per-peer budget is spent: the receiver backs off and
// retries) or "bad-request". The sender serves only hashes it offered to the
// requesting peer; an unknown hash and a hash offered to someone else get the
// same answer. The receiver appends to <store>/incoming/<hash>.part and, after
// a broken stream or a restart, asks again from the .part's size (cut back to
// a multiple of 4 KiB, see below); it hashes
// the existing prefix from disk first, so the final check covers every byte.
// Only when size and sha256 equal the offer, and the file is fsynced, is it
// renamed to <store>/<hash> and the store directory fsynced: when Fetch
// returns, the bundle is durable under its final name (Create and Record
// sync their directory after their renames too).
//
// # Limits
//
//   - MaxBundleSize 2 GiB per bundle; MaxRefs 256 refs per offer; ref names
//     at most MaxRefLen (200) bytes; repo name MaxRepoLen (128) and note
//     MaxNoteLen (4096) bytes; an offer's JSON at most MaxOfferLen (64 KiB,
//     the envelope content limit).
//   - Frames at most MaxFrameLen (1 KiB). The sender writes the file to the
//     stream in ChunkSize (1 MiB) writes straight from a read-only mapping,
//     32 MiB of the file mapped at a time (Linux; mmap_linux.go): one copy
//     less than reading it, and a fault from a file truncated under it is an
//     error, not a crash. Each chunk's pages are mapped in one call
//     (MADV_POPULATE_READ) rather than faulted in 64 KiB at a time. Where it
//     cannot map the file it reads it ahead on a second goroutine through a
//     ring of 3 ChunkSize buffers.
//   - The receiver runs three stages in order over a ring of 8 ChunkSize
//     buffers (one goroutine reads the stream, one hashes, Fetch's own
//     writes the file, four chunks per write), so the disk and the hash
//     overlap the transfer and each other. It writes with O_DIRECT where the
//     file system allows it (Linux; partwriter.go): the kernel copies
//     nothing into the page cache, the disk works while the stream runs,
//     and the final fsync has only metadata and the device cache left. Unaligned writes (the last
//     chunk's tail) and file systems that refuse O_DIRECT go through the
//     page cache with writeback started every 8 MiB. To keep resumed
//     transfers aligned, a stream that breaks mid-chunk keeps only whole
//     4 KiB blocks of that chunk, and a .part from an earlier process is cut
//     back to a multiple of 4 KiB before it is hashed.
//   - The libp2p muxer adds its own bounded window (yamux: at most 16 MiB
//     per stream). Neither side holds more of a bundle than these.
//   - Per peer, the server runs at most DefaultMaxPerPeer (2) transfers at once
//     and at most DefaultMaxPeerBytes (4 GiB) still to send over them
//     (WithMaxPerPeer, WithMaxPeerBytes).
//   - A stream on which no chunk moves for IdleTimeout (30 s) is dropped (the
//     receiver pushes its deadline out at most once a second, so it may go
//     a second early); the request/response exchange has 10 s. Fetch
//     retries with backoff (200 ms doubling to 5 s) and gives up after 5
//     consecutive attempts that moved no byte.
//   - A relayed connection with the default relay limits (2 min, 128 KiB per
//     direction) is reset long before a real bundle is through; Fetch then
//     resumes on the next connection. The rendezvous must set relay
//     resources for bulk data.
//
// # Safety rules
//
//   - Hash first: Import checks the file's size and sha256 against the signed
//     offer before git reads a byte of it; Fetch checks them before the file
//     gets its final name.
//   - Then `git bundle verify`, then the bundle's heads must equal the
//     offer's refs exactly, then `git index-pack --strict` of the pack into a
//     throwaway object directory (the repository's objects as alternate),
//     because git before 2.46 does not fsck objects fetched from a bundle
//     even with fetch.fsckObjects. Only then one atomic `git fetch` with
//     transfer.fsckObjects and fetch.fsckObjects, --no-tags and
//     --no-write-fetch-head writes refs, and only under
//     refs/confab/<sender peer id>/<first 12 hex of the hash>/ (QuarantineRef).
//     On a failed fetch the quarantine refs it may have created are deleted.
//   - Hooks are off (core.hooksPath=/dev/null) on every git command; nothing
//     is ever checked out or merged. Apply only creates a new branch that
//     does not exist yet, with update-ref.
//   - No sender-supplied string becomes a path or a git option: ref names are
//     limited to refs/heads/* and refs/tags/* with check-ref-format rules
//     (ValidRefName); the sender is a canonical base58 peer id; files are
//     named by validated hashes. Revisions given to Create may not start with
//     '-', and `--` ends them.
//
// # Lifecycle and concurrency
//
// NewServer registers the stream handler; Close (idempotent) removes it,
// resets in-flight transfers and waits for their handlers. Close the Server
// before its host. Server methods are safe for concurrent use; Server.mu
// guards the allowlist, per-peer use and the stream set and is never held
// while doing I/O (it is the only lock). Fetch, Create, Import, Apply,
// Record, Load and List are safe to call concurrently; two Fetches of one
// bundle into one store in one process are refused with ErrInProgress (two
// processes sharing a store directory are not guarded). Concurrent Apply or
// Import into one repository rely on git's own ref locking.
package bundle
