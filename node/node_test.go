package node

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/confabhq/confab/internal/netnstest"
	"github.com/ipfs/go-cid"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	"github.com/multiformats/go-multihash"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { netnstest.Main(m) }

// leakOpts: only goroutines that existed before the test are ignored; no
// libp2p-specific ignores are needed with the pinned versions. (pubsub's
// loops cannot be waited for - they end when the context Close cancels
// does - but they are gone within goleak's retry window.)
func leakOpts() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreCurrent(),
	}
}

func newKey(t *testing.T) crypto.PrivKey {
	t.Helper()
	k, err := LoadIdentity(filepath.Join(t.TempDir(), "id", "key"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newHost(t *testing.T, opts ...Option) *Host {
	t.Helper()
	base := []Option{WithIdentity(newKey(t)), WithListen("/ip4/127.0.0.1/tcp/0"), WithMDNS(false)}
	h, err := New(append(base, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// eventually polls cond every 50 ms until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func connected(a, b *Host) bool {
	return a.Host().Network().Connectedness(b.ID()) == network.Connected
}

func TestLoadIdentity(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a", "b", "identity.key")
	k1, err := LoadIdentity(path)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fi.Mode().Perm(), os.FileMode(0o600); got != want {
		t.Errorf("key mode = %04o, want %04o", got, want)
	}
	di, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := di.Mode().Perm(), os.FileMode(0o700); got != want {
		t.Errorf("dir mode = %04o, want %04o", got, want)
	}
	k2, err := LoadIdentity(path)
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	id1, _ := peer.IDFromPrivateKey(k1)
	id2, _ := peer.IDFromPrivateKey(k2)
	if id1 != id2 {
		t.Errorf("peer id changed across loads: %s then %s", id1, id2)
	}
}

func TestLoadIdentityRefuses(t *testing.T) {
	good := func(t *testing.T) string {
		p := filepath.Join(t.TempDir(), "key")
		if _, err := LoadIdentity(p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name  string
		setup func(t *testing.T) string
		want  error // nil: any error
	}{
		{"group readable", func(t *testing.T) string {
			p := good(t)
			os.Chmod(p, 0o640)
			return p
		}, ErrKeyPermissions},
		{"other readable", func(t *testing.T) string {
			p := good(t)
			os.Chmod(p, 0o604)
			return p
		}, ErrKeyPermissions},
		{"secp256k1 key", func(t *testing.T) string {
			k, _, err := crypto.GenerateSecp256k1Key(nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := crypto.MarshalPrivateKey(k)
			p := filepath.Join(t.TempDir(), "key")
			os.WriteFile(p, b, 0o600)
			return p
		}, ErrKeyType},
		{"garbage", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "key")
			os.WriteFile(p, []byte("not a key"), 0o600)
			return p
		}, nil},
		{"directory", func(t *testing.T) string { return t.TempDir() }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadIdentity(tt.setup(t))
			if err == nil {
				t.Fatal("LoadIdentity succeeded, want error")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestNewOptionErrors(t *testing.T) {
	k := newKey(t)
	tests := []struct {
		name string
		opts []Option
	}{
		{"no identity", []Option{WithListen("/ip4/127.0.0.1/tcp/0")}},
		{"invalid listen", []Option{WithIdentity(k), WithListen("/ip4/127.0.0.1/tcpx/0")}},
		{"not a multiaddr", []Option{WithIdentity(k), WithListen("localhost:4001")}},
		{"bootstrap without /p2p", []Option{WithIdentity(k), WithBootstrap("/ip4/127.0.0.1/tcp/4001")}},
		{"relay client without bootstrap", []Option{WithIdentity(k), WithRelayClient(true)}},
		{"conn limits inverted", []Option{WithIdentity(k), WithConnLimits(10, 5)}},
		{"conn per ip zero", []Option{WithIdentity(k), WithConnLimitPerIP(0)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := New(tt.opts...)
			if err == nil {
				h.Close()
				t.Fatal("New succeeded, want error")
			}
		})
	}
}

func TestCloseIdempotentNoLeak(t *testing.T) {
	defer goleak.VerifyNone(t, leakOpts()...)
	// a is built like a rendezvous, b like an agent behind it.
	a := newHost(t, WithMDNS(true), WithRelayService(relayv2.DefaultResources()),
		WithDHTServer(true), WithConnLimitPerIP(64), WithConnLimits(10, 20))
	b := newHost(t, WithBootstrap(addrStrings(a)...))
	eventually(t, 15*time.Second, "bootstrap connect", func() bool { return connected(b, a) })
	for i := range 3 {
		if err := b.Close(); err != nil {
			t.Errorf("b.Close #%d: %v", i, err)
		}
		if err := a.Close(); err != nil {
			t.Errorf("a.Close #%d: %v", i, err)
		}
	}
}

func addrStrings(h *Host) []string {
	var s []string
	for _, a := range h.Addrs() {
		s = append(s, a.String())
	}
	return s
}

func TestAddrs(t *testing.T) {
	h := newHost(t)
	addrs := h.Addrs()
	if len(addrs) == 0 {
		t.Fatal("no addrs")
	}
	for _, a := range addrs {
		ai, err := peer.AddrInfoFromP2pAddr(a)
		if err != nil {
			t.Fatalf("%s: %v", a, err)
		}
		if ai.ID != h.ID() {
			t.Errorf("%s: id %s, want %s", a, ai.ID, h.ID())
		}
	}
}

func TestDefaultListen(t *testing.T) {
	h, err := New(WithIdentity(newKey(t)), WithMDNS(false))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	var tcp, quic bool
	for _, a := range h.Host().Addrs() {
		s := a.String()
		tcp = tcp || strings.Contains(s, "/tcp/")
		quic = quic || strings.Contains(s, "/quic-v1")
	}
	if !tcp || !quic {
		t.Errorf("default listen addrs %v: tcp=%v quic=%v, want both", h.Host().Addrs(), tcp, quic)
	}
}

func TestMDNS(t *testing.T) {
	t.Run("on", func(t *testing.T) {
		defer goleak.VerifyNone(t, leakOpts()...)
		a := newHost(t, WithMDNS(true))
		b := newHost(t, WithMDNS(true))
		// Usually at once; when both hosts start together a query can miss
		// the other's announcement and zeroconf's re-query backs off.
		eventually(t, 60*time.Second, "mDNS connect", func() bool { return connected(a, b) })
		a.Close()
		b.Close()
	})
	t.Run("off", func(t *testing.T) {
		a := newHost(t, WithMDNS(false))
		b := newHost(t, WithMDNS(false))
		// Absence cannot be polled for; wait about as long as mDNS took to
		// connect hosts in "on" (at once here) plus a margin.
		time.Sleep(2 * time.Second)
		if connected(a, b) {
			t.Error("hosts without mDNS connected")
		}
	})
}

// TestDiscovererDedupe drives the mDNS notifee directly the way the mdns
// package does: many concurrent HandlePeerFound calls for the same peer.
func TestDiscovererDedupe(t *testing.T) {
	a := newHost(t)
	b := newHost(t)
	d := newDiscoverer(a)
	ai := peer.AddrInfo{ID: b.ID(), Addrs: b.Host().Addrs()}
	for range 100 {
		go d.HandlePeerFound(ai)
	}
	if got := len(d.queue); got > 1 {
		// Workers are not running, so at most one entry may be queued.
		t.Fatalf("queued %d dials for one peer, want <= 1", got)
	}
	eventually(t, 5*time.Second, "one queued dial", func() bool { return len(d.queue) == 1 })
	d.dial(context.Background(), <-d.queue)
	if !connected(a, b) {
		t.Fatal("dial did not connect")
	}
	d.HandlePeerFound(ai) // connected: skipped
	d.HandlePeerFound(peer.AddrInfo{ID: peer.ID("no-addrs")})
	if got := len(d.queue); got != 0 {
		t.Errorf("queued %d after connect, want 0", got)
	}

	// A failing dial backs off: the next sighting is not queued.
	k := newKey(t)
	dead, _ := peer.IDFromPrivateKey(k)
	bad := peer.AddrInfo{ID: dead, Addrs: b.Host().Addrs()} // wrong peer at that address
	d.HandlePeerFound(bad)
	d.dial(context.Background(), <-d.queue)
	d.HandlePeerFound(bad)
	if got := len(d.queue); got != 0 {
		t.Errorf("queued %d during backoff, want 0", got)
	}
	d.mu.Lock()
	got := d.peers[dead].backoff
	d.mu.Unlock()
	if want := 2 * mdnsBackoffMin; got != want {
		t.Errorf("backoff after one failure = %v, want %v", got, want)
	}
	d.close()
	d.HandlePeerFound(peer.AddrInfo{ID: dead, Addrs: b.Host().Addrs()})
	if got := len(d.queue); got != 0 {
		t.Errorf("queued %d after close, want 0", got)
	}
}

func TestBootstrapRedial(t *testing.T) {
	defer goleak.VerifyNone(t, leakOpts()...)
	rk := newKey(t)
	r1, err := New(WithIdentity(rk), WithListen("/ip4/127.0.0.1/tcp/0"), WithMDNS(false), WithDHTServer(true))
	if err != nil {
		t.Fatal(err)
	}
	addrs := addrStrings(r1)
	tcp := r1.Host().Addrs()[0].String()
	a := newHost(t, WithBootstrap(addrs...))
	eventually(t, 15*time.Second, "initial bootstrap connect", func() bool { return connected(a, r1) })

	// Drop the connection from the far side: the redialer reconnects.
	if err := r1.Host().Network().ClosePeer(a.ID()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "reconnect after disconnect", func() bool { return connected(a, r1) })

	// Restart the peer on the same address with the same key.
	r1.Close()
	eventually(t, 15*time.Second, "disconnect on peer stop", func() bool {
		return a.Host().Network().Connectedness(r1.ID()) != network.Connected
	})
	r2, err := New(WithIdentity(rk), WithListen(tcp), WithMDNS(false), WithDHTServer(true))
	if err != nil {
		t.Fatalf("restart on %s: %v", tcp, err)
	}
	defer r2.Close()
	eventually(t, 15*time.Second, "reconnect after restart", func() bool { return connected(a, r2) })
	a.Close()
	r2.Close()
}

func TestPubSubValidator(t *testing.T) {
	a := newHost(t)
	b := newHost(t, WithBootstrap(addrStrings(a)...), WithRelayClient(false))
	eventually(t, 15*time.Second, "connect", func() bool { return connected(b, a) })

	const topic = "test"
	for _, h := range []*Host{a, b} {
		err := h.PubSub().RegisterTopicValidator(topic, func(_ context.Context, _ peer.ID, m *pubsub.Message) pubsub.ValidationResult {
			if strings.HasPrefix(string(m.Data), "good") {
				return pubsub.ValidationAccept
			}
			return pubsub.ValidationReject
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	ta, err := a.PubSub().Join(topic)
	if err != nil {
		t.Fatal(err)
	}
	tb, err := b.PubSub().Join(topic)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := tb.Subscribe(pubsub.WithBufferSize(QueueSize))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Cancel()
	eventually(t, 15*time.Second, "a sees b in topic", func() bool { return len(ta.ListPeers()) > 0 })

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	// A rejected message is dropped at the sender already (own messages are
	// validated too); the receiver's validator drops anything else. The
	// "good" message published after it must be the first delivered.
	if err := ta.Publish(ctx, []byte("bad 1")); err == nil {
		t.Error("publishing a rejected message succeeded, want validation error")
	}
	if err := ta.Publish(ctx, []byte("good 1")); err != nil {
		t.Fatal(err)
	}
	m, err := sub.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(m.Data), "good 1"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got, want := m.ID, MessageID(m.Message); got != want {
		t.Errorf("message id %x, want content id %x", got, want)
	}
	if m.From != nil || m.Signature != nil || m.Seqno != nil {
		t.Errorf("message carries from/sig/seqno under StrictNoSign: %+v", m.Message)
	}
}

// TestPubSubRejectOnReceive checks the receiving side's validator: a
// sender whose validator accepts everything publishes a message that the
// receiver rejects, and the receiver never delivers it.
func TestPubSubRejectOnReceive(t *testing.T) {
	a := newHost(t)
	b := newHost(t, WithBootstrap(addrStrings(a)...), WithRelayClient(false))
	eventually(t, 15*time.Second, "connect", func() bool { return connected(b, a) })
	const topic = "strict"
	accept := func(context.Context, peer.ID, *pubsub.Message) bool { return true }
	onlyGood := func(_ context.Context, _ peer.ID, m *pubsub.Message) bool {
		return strings.HasPrefix(string(m.Data), "good")
	}
	if err := a.PubSub().RegisterTopicValidator(topic, accept); err != nil {
		t.Fatal(err)
	}
	if err := b.PubSub().RegisterTopicValidator(topic, onlyGood); err != nil {
		t.Fatal(err)
	}
	ta, _ := a.PubSub().Join(topic)
	tb, _ := b.PubSub().Join(topic)
	sub, err := tb.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Cancel()
	eventually(t, 15*time.Second, "a sees b in topic", func() bool { return len(ta.ListPeers()) > 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for _, s := range []string{"bad", "good"} {
		if err := ta.Publish(ctx, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	m, err := sub.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(m.Data), "good"; got != want {
		t.Errorf("first delivered %q, want %q (rejected message delivered)", got, want)
	}
}

// TestPubSubPublicProtocolsDoNotMix: a host speaking the public /meshsub
// ids never becomes a topic peer of ours.
func TestPubSubPublicProtocolsDoNotMix(t *testing.T) {
	a := newHost(t)
	b := newHost(t, WithBootstrap(addrStrings(a)...), WithRelayClient(false))
	eventually(t, 15*time.Second, "connect", func() bool { return connected(b, a) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	public, err := pubsub.NewGossipSub(ctx, b.Host())
	if err != nil {
		t.Fatal(err)
	}
	ta, _ := a.PubSub().Join("t")
	tp, _ := public.Join("t")
	sa, _ := ta.Subscribe()
	defer sa.Cancel()
	sp, _ := tp.Subscribe()
	defer sp.Cancel()
	// Give gossipsub a few heartbeats (1 s each) to find a topic peer.
	time.Sleep(3 * time.Second)
	if got := ta.ListPeers(); len(got) != 0 {
		t.Errorf("confab topic peers %v, want none", got)
	}
	if got := tp.ListPeers(); len(got) != 0 {
		t.Errorf("public topic peers %v, want none", got)
	}
}

func TestDHTProviders(t *testing.T) {
	server := newHost(t, WithDHTServer(true))
	a := newHost(t, WithBootstrap(addrStrings(server)...), WithRelayClient(false))
	b := newHost(t, WithBootstrap(addrStrings(server)...), WithRelayClient(false))
	for _, h := range []*Host{a, b} {
		eventually(t, 15*time.Second, "bootstrap connect", func() bool { return connected(h, server) })
		eventually(t, 15*time.Second, "routing table", func() bool { return h.DHT().RoutingTable().Size() > 0 })
	}
	mh, err := multihash.Sum([]byte("confab/cap/test"), multihash.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	c := cid.NewCidV1(cid.Raw, mh)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.DHT().Provide(ctx, c, true); err != nil {
		t.Fatalf("Provide: %v", err)
	}
	var found bool
	for p := range b.DHT().FindProvidersAsync(ctx, c, 1) {
		if p.ID == a.ID() {
			found = true
		}
	}
	if !found {
		t.Errorf("FindProviders from b did not return a (%s)", a.ID())
	}
}
