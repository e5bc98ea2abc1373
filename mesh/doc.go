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
// the signature. JSON is only a presentation for clients. Signatures are
// checked by the ZIP-215 rule (verify.go), under which one envelope passes
// alone exactly when it passes in a batch (VerifyBatch), so every node
// agrees on what is valid however it checked it.
//
// # Flow of one message
//
// Send hands a local message to its channel's loop and waits for it;
// SendAsync returns once it is queued (the loop's bounded queue is the
// caller's window) and calls back after. The loop, the only owner of the
// channel's per-author state, assigns the author's next sequence number,
// signs, appends the batch to History (durable when Append returns), then
// publishes on the topic, answers the caller and fans the record out to
// subscribers. A remote envelope passes the topic validator (size, schema,
// signature, channel, time window, per-author rate; concurrent validations
// verify their signatures together as one batch, validate.go; the node's
// own publishes are not verified again), then the same loop: it is stored
// only in per-author sequence order; envelopes ahead of a gap are held back
// (bounded). Most gaps close by themselves (concurrent validation and
// multi-hop gossip reorder), so catch-up is asked for only after a gap has
// seen nothing in order from its author for 1 s, and held envelopes are
// delivered anyway after the gap timeout. So subscribers see each author's
// messages in order, once.
//
// # Catch-up
//
// On join, when a peer joins a channel's topic, when a gap appears, and every
// sync interval with a random peer, a node sends its per-author high-water
// marks over the /confab/sync/1 stream protocol and pulls what it lacks,
// stream by stream (up to 10000 envelopes or 8 MiB each; older peers answer
// 1000), through the same ordering loop. Envelopes are verified in chunks,
// each chunk as one signature batch, by GOMAXPROCS workers while the stream
// is read and the next one requested (a chunk that fails is checked one by
// one to find the forged envelope), and reach the loop in stream order,
// only once verified; a forged envelope ends the catch-up. The loop stores catch-up envelopes in batches of up to
// 4096 (one durable append each).
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
// a gossip reader, a peer watcher and a sync loop per channel, and three
// for presence: reader, beacon and greeter); Close stops and waits for all of
// them and must be called before the node and history are closed. Lock
// order: Mesh.mu, then Subscription.mu; presence.mu, then direct.mu
// (presence tells the outbox a peer appeared); authorRates.mu, cards.mu and
// verifyOnce.mu are leaves; direct.sendMu is held across a DM's seq
// allocation and durable append, and takes no mesh lock.
//
// # Cards, discovery, direct messages and calls
//
// card.go: an agent's signed card over /confab/card/1, cached CardTTL.
// discovery.go: one DHT provider record per capability (CapKey), Find
// confirms every candidate with its signed card. direct.go: DMs over
// /confab/dm/1, acknowledged after the recipient stored them, with an
// in-memory outbox (lost on restart; the sent copy stays in history) for
// unreachable recipients; no end-to-end encryption yet, since no third party
// holds a copy. calls.go: call, accept, reject and match on top of DMs.
package mesh
