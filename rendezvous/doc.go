// Package rendezvous is confab's always-on peer: agents on different
// networks meet through it, and thin clients that cannot run a peer take part
// through its WebSocket gateway.
//
// A Rendezvous runs, from one data directory:
//
//   - a libp2p node (node.Host) with a persisted identity (identity.key), the
//     DHT in server mode under confab's prefix, the circuit relay v2 service
//     with explicit resources (DefaultRelayResources), for mesh members only
//     (relay.go: a peer that sent a follow request or a signed presence
//     beacon within MemberWindow), and the AutoNAT service;
//   - a badger history (store.DB in store/), synced before anything is
//     acknowledged;
//   - a mesh.Mesh over both: the archive. It is a full gossipsub member, so
//     gossip between two agents that can only reach the rendezvous flows
//     agent → rendezvous → agent, and it stores every valid envelope of the
//     channels it follows;
//   - the follow protocol (/confab/follow/1): an agent started with
//     --rendezvous asks the rendezvous to follow its channels (bounded per
//     peer and in total), so the archive learns the channels in use. Joins
//     from gateway clients count too. Followed channels are kept in
//     state.json and rejoined after a restart;
//   - optionally the gateway protocol in remote mode on its own TCP
//     listener (never libp2p's), for thin clients holding their own keys;
//   - optionally an operations HTTP listener with /healthz and Prometheus
//     /metrics.
//
// # Lifecycle
//
// New validates the Config, opens everything and binds every listener, so the
// addresses are known when it returns (Addrs, WSAddr, MetricsAddr); serving
// runs in goroutines owned by the Rendezvous. Close, which the caller of New
// must call, stops in dependency order: the operations listener, the gateway
// (which closes every WebSocket with 1001), the follow handler, the lag
// watcher, the mesh, the host, then the store. It is idempotent and waits for
// every goroutine it started.
//
// # Concurrency
//
// Rendezvous methods are safe for concurrent use. follower.mu guards the
// per-peer follow bookkeeping and is a leaf lock (mesh calls are made
// without it held, except Join which takes only mesh's own locks).
// members.mu (the relay ACL) is a leaf too: under it the ACL only reads the
// mesh's presence table (mesh.Who, which takes mesh locks only).
package rendezvous
