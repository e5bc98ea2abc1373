package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/host/autorelay"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	"github.com/libp2p/go-libp2p/x/rate"
	"github.com/multiformats/go-multiaddr"
)

// Host is one confab node's libp2p stack: the host, gossipsub, the Kademlia
// DHT, mDNS discovery and the bootstrap redialer. Its methods are safe for
// concurrent use.
type Host struct {
	h    host.Host
	key  crypto.PrivKey
	ps   *pubsub.PubSub
	dht  *dht.IpfsDHT
	log  *slog.Logger
	mdns io.Closer // nil when mDNS is off

	ctx    context.Context // cancelled by Close; parent of pubsub and workers
	cancel context.CancelFunc
	wg     sync.WaitGroup // redialer and mDNS dial workers

	disc *discoverer // nil when mDNS is off

	closeOnce sync.Once
	closeErr  error
}

// New builds and starts a node. Defaults: listen on DefaultListen; mDNS on;
// no bootstrap peers; relay client on iff bootstrap peers are given; no
// relay service; DHT ModeAutoServer; connection manager DefaultConnLow /
// DefaultConnHigh; resource manager scaled to DefaultResourceMemory /
// DefaultResourceFDs with DefaultConnPerIP connections per IP; logger
// discards. WithIdentity is required.
//
// Bootstrap peers are dialled in the background; New does not wait for
// them. The caller must call Close, which stops everything New started.
func New(opts ...Option) (*Host, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	if cfg.key == nil {
		return nil, ErrNoIdentity
	}
	if len(cfg.listen) == 0 {
		for _, s := range DefaultListen {
			cfg.listen = append(cfg.listen, multiaddr.StringCast(s))
		}
	}
	self, err := peer.IDFromPrivateKey(cfg.key)
	if err != nil {
		return nil, fmt.Errorf("node: identity: %w", err)
	}
	// A rendezvous may be handed a list that includes itself.
	cfg.bootstrap = slices.DeleteFunc(cfg.bootstrap, func(ai peer.AddrInfo) bool { return ai.ID == self })
	relayClient := len(cfg.bootstrap) > 0
	if cfg.relayClient != nil {
		relayClient = *cfg.relayClient
	}
	if relayClient && len(cfg.bootstrap) == 0 {
		return nil, errors.New("node: relay client needs bootstrap peers (WithBootstrap)")
	}

	rm, err := newResourceManager(&cfg)
	if err != nil {
		return nil, err
	}
	cm, err := connmgr.NewConnManager(cfg.connLow, cfg.connHigh)
	if err != nil {
		rm.Close()
		return nil, fmt.Errorf("node: connection manager: %w", err)
	}
	lopts := []libp2p.Option{
		libp2p.Identity(cfg.key),
		libp2p.ListenAddrs(cfg.listen...),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
		libp2p.UserAgent("confab"),
	}
	if relayClient {
		lopts = append(lopts,
			libp2p.EnableAutoRelayWithStaticRelays(cfg.bootstrap, autorelay.WithBackoff(DefaultRelayBackoff)),
			libp2p.EnableHolePunching(),
		)
	}
	if cfg.relayService != nil {
		lopts = append(lopts,
			libp2p.EnableRelayService(append([]relayv2.Option{relayv2.WithResources(*cfg.relayService)}, cfg.relayOpts...)...),
			libp2p.ForceReachabilityPublic(),
			libp2p.EnableNATService(),
		)
	}
	h, err := libp2p.New(lopts...)
	if err != nil {
		// libp2p closes the managers it was handed when it fails.
		return nil, fmt.Errorf("node: libp2p: %w", err)
	}

	n := &Host{h: h, key: cfg.key, log: cfg.log}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	fail := func(err error) (*Host, error) {
		n.cancel()
		n.wg.Wait()
		if n.dht != nil {
			n.dht.Close()
		}
		h.Close()
		return nil, err
	}

	n.ps, err = NewPubSub(n.ctx, h)
	if err != nil {
		return fail(err)
	}

	mode := dht.ModeAutoServer
	if cfg.dhtServer {
		mode = dht.ModeServer
	}
	n.dht, err = dht.New(h, dht.ProtocolPrefix(DHTPrefix), dht.Mode(mode))
	if err != nil {
		return fail(fmt.Errorf("node: dht: %w", err))
	}

	for _, ai := range cfg.bootstrap {
		h.ConnManager().Protect(ai.ID, "confab-bootstrap")
		r := newRedialer(n, ai)
		n.wg.Go(r.run)
	}

	if cfg.mdns {
		n.disc = newDiscoverer(n)
		for range mdnsWorkers {
			n.wg.Go(n.disc.work)
		}
		// LAN discovery is best effort: a host without a multicast-capable
		// interface (common in containers) still works through bootstrap
		// peers, so a failing mDNS start is logged, not fatal.
		svc, err := startMDNS(h, n.disc)
		if err != nil {
			n.log.Warn("mdns: not started; LAN discovery is off", "err", err)
		}
		n.mdns = svc
	}
	n.log.Info("node started", "peer", h.ID(), "addrs", h.Addrs(), "mdns", cfg.mdns,
		"bootstrap", len(cfg.bootstrap), "relay_client", relayClient, "relay_service", cfg.relayService != nil)
	return n, nil
}

func newResourceManager(cfg *config) (network.ResourceManager, error) {
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	concrete := limits.Scale(cfg.rcMemory, cfg.rcFDs)

	n := cfg.connPerIP
	perSubnet4 := []rcmgr.ConnLimitPerSubnet{{PrefixLength: 32, ConnCount: n}}
	perSubnet6 := []rcmgr.ConnLimitPerSubnet{
		{PrefixLength: 56, ConnCount: n},
		{PrefixLength: 48, ConnCount: 8 * n},
	}
	rl := &rate.Limiter{
		// Loopback is exempt, as in libp2p's default limiter.
		NetworkPrefixLimits: []rate.PrefixLimit{
			{Prefix: netip.MustParsePrefix("127.0.0.0/8"), Limit: rate.Limit{}},
			{Prefix: netip.MustParsePrefix("::1/128"), Limit: rate.Limit{}},
		},
		SubnetRateLimiter: rate.SubnetLimiter{
			IPv4SubnetLimits: []rate.SubnetLimit{
				{PrefixLength: 32, Limit: rate.Limit{RPS: float64(n) / 40, Burst: 2 * n}},
			},
			IPv6SubnetLimits: []rate.SubnetLimit{
				{PrefixLength: 56, Limit: rate.Limit{RPS: float64(n) / 40, Burst: 2 * n}},
				{PrefixLength: 48, Limit: rate.Limit{RPS: float64(n) / 16, Burst: 10 * n}},
			},
			GracePeriod: time.Minute,
		},
	}
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(concrete),
		rcmgr.WithLimitPerSubnet(perSubnet4, perSubnet6),
		rcmgr.WithConnRateLimiters(rl),
	)
	if err != nil {
		return nil, fmt.Errorf("node: resource manager: %w", err)
	}
	return rm, nil
}

// ID returns the host's peer id.
func (n *Host) ID() peer.ID { return n.h.ID() }

// Key returns the host's private key (the envelope signing key).
func (n *Host) Key() crypto.PrivKey { return n.key }

// Host returns the libp2p host, for stream handlers and dialling.
func (n *Host) Host() host.Host { return n.h }

// PubSub returns the gossipsub router. Every topic joined on it MUST have a
// validator registered (RegisterTopicValidator) before messages can be
// trusted: pubsub runs with StrictNoSign and checks no signature itself.
// Subscribe's buffer is per subscription (pubsub.WithBufferSize, default
// 32): pass QueueSize and drain Next in its own goroutine.
func (n *Host) PubSub() *pubsub.PubSub { return n.ps }

// DHT returns the Kademlia DHT (prefix DHTPrefix). node provides nothing;
// callers Provide and FindProviders with their own timeouts.
func (n *Host) DHT() *dht.IpfsDHT { return n.dht }

// Addrs returns the host's listen addresses with /p2p/<id> appended, ready to
// hand to another node's WithBootstrap.
func (n *Host) Addrs() []multiaddr.Multiaddr {
	addrs, err := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: n.h.ID(), Addrs: n.h.Addrs()})
	if err != nil { // only for an empty peer id, which a running host never has
		return nil
	}
	return slices.Clip(addrs)
}

// Close stops mDNS and the redialer, then the DHT, pubsub and the host, and
// waits for every goroutine the node started. It is idempotent; later calls
// return the first call's result.
func (n *Host) Close() error {
	n.closeOnce.Do(func() {
		var errs []error
		if n.disc != nil {
			n.disc.close()
		}
		if n.mdns != nil {
			errs = append(errs, n.mdns.Close())
		}
		n.cancel() // stops the redialer, mDNS workers and pubsub
		n.wg.Wait()
		if err := n.dht.Close(); err != nil {
			errs = append(errs, fmt.Errorf("node: close dht: %w", err))
		}
		if err := n.h.Close(); err != nil {
			errs = append(errs, fmt.Errorf("node: close host: %w", err))
		}
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}
