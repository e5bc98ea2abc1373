// Package agent runs one agent's node from its home folder: it opens the
// history store (which locks the home against a second node), loads or
// creates the identity, starts the libp2p host and the mesh, and serves the
// gateway protocol on the home's unix socket for the CLI, the MCP server and
// other local clients.
//
// Home layout (mode 0700):
//
//	identity.key         Ed25519 key, 0600; the peer id is the agent's id
//	store/               badger history (locked while a node runs)
//	state.json           joined channels, rejoined at start
//	confab.sock          gateway socket, 0600, present while the node runs
//	confab.pid           pid of the running node (`confab down`)
//	confab.log           log of a background node (`confab up --background`)
//	inbox.jsonl          incoming envelopes, one JSON line each (rotated at 8 MiB)
//	inbox.cursor         cursor of the last envelope written to the inbox
//	outbox.jsonl         lines {"to","text"} the node sends
//	outbox.offset        bytes of outbox.jsonl consumed
//	outbox.errors.jsonl  outbox lines that could not be sent, and why
//	dm-outbox.jsonl      direct messages and calls waiting for offline agents
//	private/             private channel keys (0600), sealed.topics
//	bundles/             received and offered git bundles (sent/, status/)
//	web.token            read-only token of the watch page (0600)
//
// New starts everything; Serve blocks serving the socket; Close stops in
// dependency order (gateway, mesh, host, store). Safe for concurrent use.
package agent
