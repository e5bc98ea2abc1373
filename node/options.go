package node

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/crypto/pb"
	"github.com/libp2p/go-libp2p/core/peer"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	"github.com/multiformats/go-multiaddr"
)

// Protocol identifiers. They keep confab's overlay apart from public libp2p
// networks: a peer speaking the public /meshsub or /ipfs/kad protocols never
// joins our mesh or our DHT.
const (
	// GossipSubV12 is our gossipsub v1.2 (IDONTWANT) protocol id.
	GossipSubV12 = "/confab/meshsub/1.2.0"
	// GossipSubV11 is our gossipsub v1.1 (peer exchange) protocol id.
	GossipSubV11 = "/confab/meshsub/1.1.0"
	// GossipSubV10 is our gossipsub v1.0 protocol id.
	GossipSubV10 = "/confab/meshsub/1.0.0"
	// DHTPrefix is the Kademlia protocol prefix: the DHT speaks
	// DHTPrefix+"/kad/1.0.0".
	DHTPrefix = "/confab"
	// MDNSService is the mDNS service name confab nodes advertise and browse.
	MDNSService = "_confab._udp"
)

// Limits. MaxMessageSize must be the same on every peer: a peer with a
// smaller limit resets the stream of an RPC above it, and with it every
// message batched into that RPC.
const (
	MaxMessageSize        = 256 << 10 // gossipsub wire message (RPC) limit
	QueueSize             = 1024      // gossipsub validate queue and per-peer outbound queue
	DefaultConnLow        = 96        // connection manager low watermark
	DefaultConnHigh       = 192       // connection manager high watermark
	DefaultConnPerIP      = 8         // concurrent connections per IPv4 /32 or IPv6 /56 (libp2p default)
	DefaultResourceMemory = 1 << 30   // bytes the resource manager's limits are scaled for
	DefaultResourceFDs    = 4096      // file descriptors the resource manager's limits are scaled for
	// DefaultRelayBackoff is how long the relay client waits before asking a
	// relay again after a refused reservation (libp2p's default is an hour).
	// A rendezvous refuses a peer until it has proven it speaks confab,
	// which it does within seconds of connecting.
	DefaultRelayBackoff = 30 * time.Second
)

// ErrNoIdentity: New was called without WithIdentity.
var ErrNoIdentity = errors.New("node: no identity (use WithIdentity)")

// Option configures New. An option that returns an error makes New fail.
type Option func(*config) error

type config struct {
	key          crypto.PrivKey
	listen       []multiaddr.Multiaddr
	mdns         bool
	bootstrap    []peer.AddrInfo
	relayClient  *bool // nil: on iff bootstrap peers are set
	relayService *relayv2.Resources
	relayOpts    []relayv2.Option
	dhtServer    bool
	log          *slog.Logger
	connLow      int
	connHigh     int
	connPerIP    int
	rcMemory     int64
	rcFDs        int
}

func defaultConfig() config {
	return config{
		mdns:      true,
		log:       slog.New(slog.DiscardHandler),
		connLow:   DefaultConnLow,
		connHigh:  DefaultConnHigh,
		connPerIP: DefaultConnPerIP,
		rcMemory:  DefaultResourceMemory,
		rcFDs:     DefaultResourceFDs,
	}
}

// DefaultListen are the listen addresses used when WithListen is not given.
var DefaultListen = []string{"/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"}

// WithIdentity sets the host's private key (required). Only Ed25519 keys are
// accepted: the same key signs confab envelopes.
func WithIdentity(k crypto.PrivKey) Option {
	return func(c *config) error {
		if k == nil {
			return ErrNoIdentity
		}
		if k.Type() != pb.KeyType_Ed25519 {
			return fmt.Errorf("node: identity: %w", ErrKeyType)
		}
		c.key = k
		return nil
	}
}

// WithListen replaces the default listen addresses (DefaultListen). Each
// string must parse as a multiaddr.
func WithListen(addrs ...string) Option {
	return func(c *config) error {
		if len(addrs) == 0 {
			return errors.New("node: listen: no addresses")
		}
		c.listen = c.listen[:0]
		for _, s := range addrs {
			a, err := multiaddr.NewMultiaddr(s)
			if err != nil {
				return fmt.Errorf("node: listen %q: %w", s, err)
			}
			c.listen = append(c.listen, a)
		}
		return nil
	}
}

// WithMDNS turns LAN discovery by mDNS on or off (default on).
func WithMDNS(on bool) Option {
	return func(c *config) error {
		c.mdns = on
		return nil
	}
}

// WithBootstrap sets peers (full multiaddrs ending in /p2p/<id>, typically
// rendezvous nodes) that the host dials at start and redials with backoff
// whenever it is disconnected from them. Several addresses of one peer are
// merged. Their connections are protected from the connection manager.
func WithBootstrap(addrs ...string) Option {
	return func(c *config) error {
		mas := make([]multiaddr.Multiaddr, 0, len(addrs))
		for _, s := range addrs {
			a, err := multiaddr.NewMultiaddr(s)
			if err != nil {
				return fmt.Errorf("node: bootstrap %q: %w", s, err)
			}
			mas = append(mas, a)
		}
		infos, err := peer.AddrInfosFromP2pAddrs(mas...)
		if err != nil {
			return fmt.Errorf("node: bootstrap: %w", err)
		}
		c.bootstrap = append(c.bootstrap, infos...)
		return nil
	}
}

// WithRelayClient turns the relay client on or off: AutoRelay with the
// bootstrap peers as static relays, plus hole punching. Default: on when
// bootstrap peers are given. Turning it on without bootstrap peers is an
// error in New (there would be no relay to use).
func WithRelayClient(on bool) Option {
	return func(c *config) error {
		c.relayClient = &on
		return nil
	}
}

// WithRelayService makes this host a circuit relay v2 (the rendezvous): it
// runs the relay service with r, forces its reachability to public (the
// relay service only starts when the host believes it is public) and runs
// the AutoNAT service so agents learn whether they are reachable. opts are
// applied after r: relayv2.WithACL(filter) restricts who may reserve a slot
// and open circuits (without one, any peer may).
func WithRelayService(r relayv2.Resources, opts ...relayv2.Option) Option {
	return func(c *config) error {
		c.relayService = &r
		c.relayOpts = opts
		return nil
	}
}

// WithDHTServer puts the DHT in server mode (rendezvous). Default: agents
// run ModeAutoServer, which serves unless AutoNAT says we are private.
func WithDHTServer(on bool) Option {
	return func(c *config) error {
		c.dhtServer = on
		return nil
	}
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			return errors.New("node: nil logger")
		}
		c.log = l
		return nil
	}
}

// WithConnLimits sets the connection manager's watermarks: above high
// connections it trims down to low, sparing protected (bootstrap) peers and
// connections younger than the grace period. Defaults DefaultConnLow and
// DefaultConnHigh.
func WithConnLimits(low, high int) Option {
	return func(c *config) error {
		if low < 0 || high < 1 || low > high {
			return fmt.Errorf("node: conn limits low=%d high=%d: want 0 <= low <= high, high >= 1", low, high)
		}
		c.connLow, c.connHigh = low, high
		return nil
	}
}

// WithConnLimitPerIP sets how many concurrent connections the resource
// manager accepts from one IPv4 address (/32) or IPv6 /56 (/48 gets 8×),
// and scales the new-connection rate limit per address with it (burst 2n,
// n/40 per second; libp2p's default is n=8: burst 16, 0.2/s). Loopback is
// always unlimited. A rendezvous that serves many agents behind one NAT
// needs a larger n. Default DefaultConnPerIP.
func WithConnLimitPerIP(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("node: conn limit per IP %d: want >= 1", n)
		}
		c.connPerIP = n
		return nil
	}
}

// WithResourceScale sets the memory (bytes) and file descriptors the
// resource manager's default limits are scaled to. Defaults
// DefaultResourceMemory and DefaultResourceFDs.
func WithResourceScale(memory int64, fds int) Option {
	return func(c *config) error {
		if memory < 64<<20 || fds < 64 {
			return fmt.Errorf("node: resource scale memory=%d fds=%d: want memory >= 64 MiB, fds >= 64", memory, fds)
		}
		c.rcMemory, c.rcFDs = memory, fds
		return nil
	}
}
