package rendezvous

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"time"

	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"

	"github.com/confabhq/confab/wsgateway"
)

// Files in a rendezvous data directory.
const (
	IdentityFile = "identity.key"
	StoreDir     = "store"
	StateFile    = "state.json"
	WebTokenFile = "web.token"
)

// Defaults.
const (
	DefaultName             = "rendezvous"
	DefaultConnPerIP        = 64   // libp2p connections per IPv4 address (agents behind one NAT)
	DefaultMaxChannels      = 1024 // channels the archive follows in total
	DefaultMaxFollowPerPeer = 64   // channels one peer may ask the archive to follow
)

// DefaultListen are the libp2p listen addresses when Config.Listen is empty.
var DefaultListen = []string{"/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"}

// DefaultRelayResources are the circuit relay v2 resources of a rendezvous.
// libp2p's defaults (2 minutes and 128 KiB per relayed connection) would
// reset a git bundle crossing the relay, so a relayed connection may last 1
// hour and carry 1 GiB each way. In exchange the number of circuits is
// bounded: 1024 reservations in total (16 per IP address, 64 per ASN), 16
// circuits per peer, 1 hour reservations, 16 KiB buffers (two per circuit).
// libp2p's resource manager bounds memory and streams on top of that.
func DefaultRelayResources() relayv2.Resources {
	r := relayv2.DefaultResources()
	r.Limit = &relayv2.RelayLimit{Duration: time.Hour, Data: 1 << 30}
	r.ReservationTTL = time.Hour
	r.MaxReservations = 1024
	r.MaxCircuits = 16
	r.BufferSize = 16 << 10
	r.MaxReservationsPerIP = 16
	r.MaxReservationsPerASN = 64
	return r
}

// Config configures a Rendezvous.
type Config struct {
	// Dir holds identity.key, store/ and state.json. Required, absolute.
	Dir string
	// Name is the display name in presence and the gateway welcome.
	// Default DefaultName.
	Name string
	// Listen are libp2p multiaddrs. Default DefaultListen.
	Listen []string
	// WS is the gateway's TCP address (host:port, port 0 = any). Empty: no
	// gateway. The gateway is served on its own listener, never libp2p's.
	WS string
	// Web is the watch page's TCP address (host:port). Empty: no page. The
	// page is read-only, needs the token kept in Dir/web.token, and never
	// shows private channels.
	Web string
	// Metrics is the operations HTTP address (/healthz, /metrics). Empty:
	// off. Keep it on loopback or a private network.
	Metrics string
	// JoinSecret, if not empty, must be presented by gateway clients in
	// their auth frame (compared in constant time).
	JoinSecret []byte
	// ConnPerIP is the libp2p resource manager's concurrent connections per
	// IPv4 address (see node.WithConnLimitPerIP). Default DefaultConnPerIP.
	ConnPerIP int
	// Relay are the relay service's resources. Zero: DefaultRelayResources.
	Relay *relayv2.Resources
	// MemberWindow is how long a peer may use the relay after it last
	// proved it speaks confab (a follow request, or a signed presence
	// beacon seen by the archive). Default DefaultMemberWindow. See
	// docs/rendezvous.md, "Relay".
	MemberWindow time.Duration
	// MaxChannels caps the channels the archive follows in total (follow
	// requests and gateway joins). Default DefaultMaxChannels.
	MaxChannels int
	// MaxFollowPerPeer caps the channels one peer may ask it to follow.
	// Default DefaultMaxFollowPerPeer.
	MaxFollowPerPeer int
	// Gateway tunes the gateway. Mode is forced to remote, Backend, Logger
	// and Remote.JoinSecret are set by New; zero fields take
	// wsgateway.DefaultConfig's and wsgateway.DefaultRemoteConfig's defaults.
	Gateway wsgateway.Config
	// Logger receives structured logs. Default: discard.
	Logger *slog.Logger
}

// DefaultConfig returns a Config with every default filled in except Dir.
func DefaultConfig() Config {
	return Config{
		Name:             DefaultName,
		Listen:           append([]string(nil), DefaultListen...),
		ConnPerIP:        DefaultConnPerIP,
		MaxChannels:      DefaultMaxChannels,
		MaxFollowPerPeer: DefaultMaxFollowPerPeer,
		MemberWindow:     DefaultMemberWindow,
	}
}

func (c *Config) fill() error {
	d := DefaultConfig()
	if c.Dir == "" || !filepath.IsAbs(c.Dir) {
		return errors.New("Dir must be an absolute path")
	}
	if c.Name == "" {
		c.Name = d.Name
	}
	if len(c.Listen) == 0 {
		c.Listen = d.Listen
	}
	if c.ConnPerIP == 0 {
		c.ConnPerIP = d.ConnPerIP
	}
	if c.Relay == nil {
		r := DefaultRelayResources()
		c.Relay = &r
	}
	if c.MaxChannels == 0 {
		c.MaxChannels = d.MaxChannels
	}
	if c.MemberWindow == 0 {
		c.MemberWindow = d.MemberWindow
	}
	if c.MaxFollowPerPeer == 0 {
		c.MaxFollowPerPeer = d.MaxFollowPerPeer
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case c.ConnPerIP < 1, c.MaxChannels < 1, c.MaxFollowPerPeer < 1, c.MemberWindow < 0:
		return errors.New("ConnPerIP, MaxChannels, MaxFollowPerPeer and MemberWindow must be positive")
	}
	for name, addr := range map[string]string{"WS": c.WS, "Metrics": c.Metrics, "Web": c.Web} {
		if addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("%s %q: want host:port: %v", name, addr, err)
		}
	}
	return nil
}
