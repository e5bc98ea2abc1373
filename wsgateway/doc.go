// Package wsgateway serves the gateway protocol — versioned JSON frames over
// WebSocket — and is its Go client. Every confab client (the CLI, the MCP
// server, the browser page, SDKs) speaks it; docs/protocol.md specifies it.
//
// A Server fronts a Backend (*mesh.Mesh). In local mode it is served on a
// 0600 unix socket in the agent's home: the operating system's permission
// check is the authentication, the connection acts as the node and the node
// signs what it sends. In remote mode (a rendezvous, on TCP) thin clients
// hold their own key: the welcome carries a fresh nonce, the client signs
// AuthBytes(nonce, gateway id, client id) in an auth frame, and may then only
// publish envelopes whose From is its own id; the gateway verifies them and
// hands them to the Backend unchanged, so it can never forge one. Remote mode
// adds per-IP connection caps, an auth timeout, a per-identity request rate,
// a per-connection join cap, an origin check and an optional join secret
// (RemoteConfig); a second connection of one identity displaces the first
// (close 4009, do not reconnect automatically).
//
// Lifecycle: New validates the Config; ServeUnix, Serve (any listener, e.g.
// TCP in remote mode) or an http.Server using Handler serves (only the first
// two count handshake timeouts); Close stops listeners, closes every
// hijacked connection with close code 1001 and waits for every goroutine. The Client is made by
// Dial and ended by Close, which also waits for its reader.
//
// Per connection the server runs one reader goroutine (it decodes frames
// and handles requests one after another, in order, so a client may
// pipeline publishes: Client.PublishAsync), one writer goroutine
// (the only writer of data frames: it drains the bounded send queue, owns
// write deadlines and pings, and sends every frame queued at once in one
// network write; it sleeps on one channel, woken by the queue, a kick, the
// ping timer or the connection's end) and, while a subscription replays history, one pump
// goroutine; once replayed, the subscription joins its live group:
// connections subscribed to the same channels share one backend
// subscription read by one goroutine that encodes each record once and
// queues it straight into every member's send queue (subscribe.go). The
// HTTP handler returns right after the upgrade; the reader runs on the
// connection's own goroutine and ties the others with an errgroup, and the
// connection ends when all have exited. Live events never block: a
// member whose send queue holds SendQueue+SubscriptionQueue frames (or
// whose replay holds back SubscriptionQueue live records) is sent a
// "resume" error with its last cursor and closed with code 4008, alone;
// the other members go on.
//
// Memory per idle connection is kept small on purpose (tens of thousands
// per rendezvous): the send queue is a slice that grows with use and is
// dropped when drained, the read buffer is 1 KiB, write buffers are lent
// from a pool for one message, and a live event is JSON-encoded once (and
// framed once) for every connection it fans out to (writer.go).
//
// A Client hands events to a buffered channel (Subscribe) or, without a
// hand-off to another goroutine, to a handler run by its reader goroutine
// (SubscribeFunc).
//
// Concurrency: Server and Client methods are safe for concurrent use.
// Locks: Server.mu guards the connection set, listeners, per-IP counts and
// the identity table, and is never held while doing I/O or taking another
// lock. Live fan-out locks in this order: eventCache.mu → liveGroup.mu →
// liveMember.mu → conn.qmu (eventCache.mu is not held while encoding).
// conn.qmu (the send queue) and batchConn.mu (the write batch; held while
// writing to the network) are leaf locks; frontConn.mu (knocks waiting for
// a thin host) is a leaf lock too. Client.mu guards pending requests
// and the subscription; Client.wmu serialises writes; wmu is never taken
// while mu is held.
package wsgateway
