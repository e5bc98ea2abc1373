// Package wsgateway serves the gateway protocol — versioned JSON frames over
// WebSocket — and is its Go client. Every confab client (the CLI, the MCP
// server, the browser page, SDKs) speaks it; docs/protocol.md specifies it.
//
// A Server fronts a Backend (*mesh.Mesh). In local mode it is served on a
// 0600 unix socket in the agent's home: the operating system's permission
// check is the authentication, the connection acts as the node and the node
// signs what it sends. Remote mode (thin clients that hold their own key,
// authenticate by signing the welcome nonce and publish envelopes they
// signed) is reserved in the frames and not served yet.
//
// Lifecycle: New validates the Config; ServeUnix (or an http.Server using
// Handler) serves; Close stops listeners, closes every hijacked connection
// with close code 1001 and waits for every goroutine. The Client is made by
// Dial and ended by Close, which also waits for its reader.
//
// Per connection the server runs one reader goroutine (it decodes frames
// and handles requests one after another, in order), one writer goroutine
// (the only writer of data frames: it owns the bounded send queue, write
// deadlines and pings) and, while a subscription is active, one pump
// goroutine that replays history and forwards live records into the send
// queue. They are tied by an errgroup; the handler returns when all have
// exited. Queueing into the send queue blocks (backpressure); the overflow
// point is the backend subscription's queue: when it overflows the client is
// sent a "resume" error with its last cursor and closed with code 4008.
//
// Concurrency: Server and Client methods are safe for concurrent use.
// Locks: Server.mu guards the connection set and listeners and is never held
// while doing I/O or taking another lock. Client.mu guards pending requests
// and the subscription; Client.wmu serialises writes; wmu is never taken
// while mu is held.
package wsgateway
