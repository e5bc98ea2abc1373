// Package node is the libp2p stack of one confab peer: an agent, or (with
// WithRelayService and WithDHTServer) the rendezvous. It owns the libp2p
// host, the gossipsub router, the Kademlia DHT, mDNS discovery and the
// redialer that keeps bootstrap (rendezvous) peers connected. It knows
// nothing about envelopes, channels or history: mesh builds those on top
// of Host.PubSub, Host.DHT and Host.Host. node imports only libp2p and the
// standard library.
//
// # Identity
//
// LoadIdentity keeps one Ed25519 key per home in a 0600 file (parent
// directories 0700). The peer id, the bootstrap addresses others hold and
// the envelope author are all this key, so it is created once and never
// replaced: a file readable by group/others (ErrKeyPermissions) or holding
// another key type (ErrKeyType) is refused, not repaired.
//
// # Lifecycle
//
// New starts, in order: the libp2p host (TCP + QUIC, Noise/TLS, our
// resource and connection managers, relay client or relay service),
// gossipsub (with a context that Close cancels), the DHT, one redialer
// goroutine per bootstrap peer, and mDNS with a pool of mdnsWorkers dial
// workers. If any step fails, New undoes the earlier ones. Close, which the
// caller of New must call, stops them in reverse dependency order: mDNS and
// the dial workers and redialers, then pubsub (its context), the DHT (whose
// Close waits for its loops), and the host (which closes the resource and
// connection managers). Close is idempotent and waits; afterwards no
// goroutine started by this package is left (pubsub's loops end on their
// own right after the context is cancelled; pubsub offers nothing to wait
// on).
//
// # Gossipsub
//
// Every confab peer must use the same settings, so they are fixed here:
//
//   - Protocol ids GossipSubV12, GossipSubV11, GossipSubV10
//     (/confab/meshsub/...), with a feature table mirroring pubsub's default
//     one, so the mesh never mixes with public /meshsub networks.
//   - StrictNoSign + WithNoAuthor: messages carry no pubsub signature, From
//     or Seqno, and incoming ones that do are rejected. Every confab envelope
//     carries its own Ed25519 author signature. Therefore every topic MUST
//     have a validator registered (PubSub().RegisterTopicValidator) by mesh
//     that verifies the envelope before anything is delivered or forwarded;
//     a topic without one forwards anything. Our own publishes pass through
//     the validator too.
//   - Message id = sha256(data) (MessageID): without From/Seqno the default
//     id would be empty for every message, and a content id makes the same
//     envelope forwarded by two peers one message.
//   - Validation queue and per-peer outbound queue QueueSize (1024, default
//     32, silently dropping). The subscription buffer is per Subscribe call:
//     callers pass pubsub.WithBufferSize(QueueSize) and drain Next in their
//     own goroutine.
//   - Flood publishing, so a publish right after Join reaches connected
//     topic peers before the first heartbeat grafts a mesh.
//   - MaxMessageSize 256 KiB per RPC. It MUST match on every peer: a peer
//     with a smaller limit drops the whole RPC. Bulk data goes over streams.
//   - Peer scoring off. Scores are only useful with per-topic parameters
//     tuned to traffic; with quiet chat channels the mesh-delivery penalties
//     prune honest peers, and the abuse scoring guards against (invalid
//     messages) is already stopped by mesh's validators, which a rejecting
//     verdict makes pubsub drop. Revisit for open public rendezvous.
//
// # DHT
//
// Protocol prefix DHTPrefix (/confab), so it is a private DHT that does not
// need the public network's settings. Agents run ModeAutoServer (serve
// unless AutoNAT reports private; the default ModeAuto would leave LAN
// peers as clients and no DHT would form); the rendezvous runs ModeServer.
// After each successful connection to a bootstrap peer the redialer calls
// Bootstrap (which refreshes the routing table but dials nobody itself).
// node provides nothing; Provide/FindProviders belong to callers, always
// with a timeout.
//
// # Discovery and bootstrap
//
// mDNS advertises MDNSService (_confab._udp). The mdns package calls
// HandlePeerFound in a new goroutine per response, repeatedly and without
// waiting for them on Close, so the notifee only does bookkeeping and a
// non-blocking hand-off to mdnsWorkers (4) dialers via a queue of
// mdnsQueue (64); overflow is dropped because mDNS repeats. Per peer: skip
// if connected, queued or in backoff; a failed dial (logged at debug) backs
// off exponentially from 2 s to 5 min; dials time out after 10 s. Records
// without addresses are ignored.
//
// Bootstrap peers (WithBootstrap) are dialled in the background at start
// and whenever the host is not connected to them (connectedness events,
// plus a 30 s safety check), with backoff from 0.5 s to 1 min and a 15 s
// dial timeout. Their connections are protected from the connection
// manager. With bootstrap peers the relay client is on by default: AutoRelay
// with them as static relays, and hole punching.
//
// Multicast is often missing in containers and some networks; mDNS then
// finds nobody, or fails to start (logged as a warning, New still
// succeeds), and bootstrap peers are the fallback.
//
// # Limits
//
// Connection manager: DefaultConnLow 96 / DefaultConnHigh 192 (libp2p's
// default is 160/192; a lower low watermark trims harder when a host fills
// up). Resource manager: libp2p's default scaling limits (with its
// default service limits) scaled to DefaultResourceMemory (1 GiB) and
// DefaultResourceFDs (4096) explicitly, rather than auto-scaled to the
// machine, so two machines behave the same; WithResourceScale changes it.
// Per IP: DefaultConnPerIP (8) concurrent connections per IPv4 address or
// IPv6 /56 (64 per /48) and a new-connection rate of n/40 per second with
// burst 2n (libp2p's defaults for n=8); loopback is unlimited. A rendezvous
// serving many agents behind one NAT raises it with WithConnLimitPerIP (the
// relay's own MaxReservationsPerIP is in the relayv2.Resources it is
// given). The relay service's default per-circuit limit is 2 min / 128 KiB:
// give explicit Resources if bulk data may cross it.
//
// # Concurrency
//
// All Host methods are safe for concurrent use. Shared state: the
// discoverer's per-peer dial states are guarded by discoverer.mu (a leaf
// lock: nothing else is locked while it is held, and libp2p calls made
// under it - Connectedness - take only libp2p's own locks). Each redialer's
// state is owned by its goroutine. There is no other lock, so no lock
// order.
package node
