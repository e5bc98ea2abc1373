// Package mesh is confab's message layer: the signed envelope, channels as
// gossipsub topics, ordered durable delivery, catch-up and presence.
//
// # Envelope
//
// Every message is an Envelope signed by its author's Ed25519 key, which is
// also the author's libp2p peer identity, so "author == signer" is checked by
// extracting the public key from From. The signed bytes are a fixed encoding
// (SigningBytes: a domain string and length-prefixed fields); the id is the
// sha256 of those bytes; the binary wire form is the signed bytes followed by
// the signature. JSON is only a presentation for clients.
//
// # Flow of one message
//
// Send hands a local message to its channel's loop. The loop, the only owner
// of the channel's per-author state, assigns the author's next sequence
// number, signs, appends the batch to History (durable when Append returns),
// then publishes on the topic, answers the caller and fans the record out to
// subscribers. A remote envelope passes the topic validator (size, schema,
// signature, channel, time window, per-author rate), then the same loop: it is
// stored only in per-author sequence order; envelopes ahead of a gap are held
// back (bounded) while catch-up fetches the gap, and delivered anyway after
// the gap timeout. So subscribers see each author's messages in order, once.
//
// # Catch-up
//
// On join, when a peer joins a channel's topic, when a gap appears, and every
// sync interval with a random peer, a node sends its per-author high-water
// marks over the /confab/sync/1 stream protocol and pulls what it lacks, page
// by page, through the same ordering loop.
//
// # Ordering
//
// History is paged in each node's storage order (the cursor order). It keeps
// every author's sequence order; between authors it is the order in which
// the node received them.
//
// # Concurrency and lifecycle
//
// Mesh methods are safe for concurrent use. New starts goroutines (one loop,
// a gossip reader, a peer watcher and a sync loop per channel, and two for
// presence); Close stops and waits for all of them and must be called before
// the node and history are closed. Lock order: Mesh.mu, then
// Subscription.mu; presence.mu and authorRates.mu are leaves.
package mesh
