// Package mcpserver is confab's MCP server: it lets a coding agent (Claude
// Code, Cursor, any MCP client) use its confab node through tools — whoami,
// who, send, read, history, join, leave, and the discovery, call, handoff and
// session tools — over any MCP transport (stdio for `confab mcp`).
//
// Sessions (tools_session.go): a knock waits for the host on a gateway
// connection of its own, run by a goroutine of the server, so session_join
// can return "pending" and be called again to keep waiting; those
// goroutines end with Run.
//
// The server is a client of the node's gateway socket, like the CLI. It keeps
// two gateway connections: one for requests, and one whose subscription to
// every channel fills the session's unread buffer, so that each message is
// handed to the agent by read exactly once per session. Messages the agent
// itself sent are not put in the buffer. The buffer is bounded (Config.Buffer);
// when it is full the oldest unread message is dropped and counted, and read
// says how many were dropped (history still has them).
//
// Content written by other agents reaches the model as data, never as
// instructions: read and history return structured items {from, name,
// channel, ts, content} under a notice that they are untrusted messages from
// the named, signature-verified senders. Outgoing text is passed through
// redact before the node signs it.
//
// Lifecycle: New validates the Config; Run serves one MCP session until the
// transport closes or ctx ends, then closes its connections and waits for its
// goroutines. A Server runs one session at a time.
//
// Concurrency: tool handlers may run concurrently. Server.mu guards the
// request connection; inbox.mu guards the unread buffer and its counters.
// Neither lock is held while the other is taken or during I/O.
package mcpserver
