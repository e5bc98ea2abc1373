package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/proto"

	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/node"
)

// CompareScale is the sixth comparison of issue 8.
const CompareScale Comparison = "Scale (simulated agents in one process, mocknet with 50 ms links)"

// scaleEnv overrides the group sizes of the scale comparison, e.g.
// CONFAB_SCALE_AGENTS=100,1000 (default: tiny 20,50; full 100,250,500,1000).
const scaleEnv = "CONFAB_SCALE_AGENTS"

const (
	scaleLatency   = 50 * time.Millisecond
	scaleWithin    = 500 * time.Millisecond // the target: 95% of deliveries within this
	scaleAuthors   = 4                      // members 0, n/4, n/2, 3n/4 publish in turn
	scaleChannel   = "#scale"
	presencePrefix = "/confab/presence/" // mesh's presence topic (unexported there)
	// scalePresenceTick is the presence tick of the simulated agents: the
	// interval up to 100 members, beyond which mesh stretches it so that all
	// members together send 100 beacons per tick (1.7/s here, 20/s at the
	// default 5 s).
	scalePresenceTick = time.Minute
	// scaleQuietBeacons: presence counts as settled once the agents deliver
	// fewer beacons than this many per second per agent, for
	// scaleQuietPeriods settle periods in a row (the startup storm is N
	// beacons each delivered N times, in bursts as greetings coalesce; the
	// steady state 1.7 per second in all). One quiet second alone let a
	// measured window overlap the storm's tail at 250 agents.
	scaleQuietBeacons = 1
	scaleQuietPeriods = 3
)

// scaleMethod is the part of the Method both scenarios share.
const scaleMethod = "N agents in one process on go-libp2p's mocknet (no TCP, TLS or yamux: in-memory streams whose every write arrives " +
	"50 ms later), Ed25519 identities, connected by `topology` (ring + 5 random dials each: mean degree ≈ 12, fixed seed, the same " +
	"graph for both systems). After a warm-up (every member receives, then the presence storm of the joins settles), 4 authors " +
	"(members 0, N/4, N/2, 3N/4) publish in turn 200-byte messages carrying their send time, 4 msg/s in all (one per author per second) for 10 s (tiny: 2 s); " +
	"propagation is publish→receive at every other member (one clock), over every expected delivery (a delivery missing 5 s after " +
	"the last publish counts as not within 500 ms). The rate is low on purpose: mocknet holds each write of 256 bytes or more until " +
	"its 50 ms have passed before it accepts the next one on that stream, so a simulated link carries at most 20 such writes per " +
	"second per direction and queues beyond (every message here is one such write). Traffic per agent is the size of every gossipsub RPC sent plus received " +
	"(RawTracer SendRPC/RecvRPC, protobuf bytes: no stream framing) during the window, averaged over agents; CPU is the " +
	"process's user+system time during the window divided by its length (2 cores = 2.0, all agents together). Full sizes 100, 250, " +
	"500, 1000 agents (tiny: 20, 50)."

func init() {
	compareOrder = append(compareOrder, CompareScale)
	Register(Scenario{
		Name:     "gossipsub-sim",
		Compare:  CompareScale,
		Baseline: true,
		MaxRuns:  1, // one run grows the mesh through every size
		Method: "go-libp2p-pubsub v0.17.0 `NewGossipSub` with every default (strict signing: every hop verifies the author's " +
			"Ed25519 signature, queues of 32, no flood publish beyond the default), one topic. " + scaleMethod,
		Run: func(ctx context.Context, size Size) (Result, error) { return measureScale(ctx, size, setupGossipSim) },
	})
	Register(Scenario{
		Name:    "confab-scale",
		Compare: CompareScale,
		MaxRuns: 1, // one run grows the mesh through every size (minutes at 500 and 1000)
		Method: "confab's gossipsub config (node.NewPubSub on the mocknet host: own protocol ids, StrictNoSign + WithNoAuthor, " +
			"content ids, queues of 1024, flood publish) and a real mesh.Mesh per agent joined to one channel: every hop verifies the " +
			"envelope's Ed25519 signature in the topic validator, the channel loop orders and stores, members receive through " +
			"Mesh.Subscribe. Benchmark-only differences, both because one process simulates every agent: history is a small " +
			"in-memory mesh.History in bench (the store is measured under History), and the presence tick is 1 min instead of " +
			"5 s (mesh.WithPresence(1m, 4m)). Beyond 100 members mesh stretches each agent's beacon interval so that all members " +
			"together send 100 beacons per tick: 1.7/s here against 20/s at the default, whatever N. The default would not fit " +
			"one process: it verifies every beacon once per simulated agent (20,000 verifications/s at 1,000 agents), and 20 " +
			"beacons/s would fill the 20 writes/s of a mocknet link. The startup storm runs as in the product (each agent's first " +
			"beacon, then one greeting coalesced over the neighbours that join), and the warm-up waits until the agents deliver " +
			"fewer than 1 beacon per agent per second for 3 s in a row; the note gives the presence deliveries during the window and the share " +
			"of the other members each agent's Who lists. The per-author rate limit is raised as in the channel comparison. " + scaleMethod,
		Run: func(ctx context.Context, size Size) (Result, error) { return measureScale(ctx, size, setupConfabSim) },
	})
}

// scaleParams are the knobs of measureScale for one size.
type scaleParams struct {
	Sizes    []int
	Rate     float64       // messages per second, all authors together
	Count    int           // messages in the measured window
	Warmup   time.Duration // minimum warm-up
	Settle   time.Duration // presence is settled after this long without a beacon
	Drain    time.Duration // wait this long after the last publish at most
	MaxSetup time.Duration // warm-up gives up after this
}

func scaleParamsFor(size Size) (scaleParams, error) {
	p := scaleParams{Sizes: []int{20, 50}, Rate: 4, Count: 8, Warmup: 2 * time.Second,
		Settle: 500 * time.Millisecond, Drain: 5 * time.Second, MaxSetup: 60 * time.Second}
	if size == Full {
		p = scaleParams{Sizes: []int{100, 250, 500, 1000}, Rate: 4, Count: 40, Warmup: 3 * time.Second,
			Settle: time.Second, Drain: 5 * time.Second, MaxSetup: 4 * time.Minute}
	}
	if s := os.Getenv(scaleEnv); s != "" {
		p.Sizes = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 8 || n > 5000 {
				return p, fmt.Errorf("bench: %s: %q is not a group size in 8..5000", scaleEnv, f)
			}
			p.Sizes = append(p.Sizes, n)
		}
	}
	return p, nil
}

// simGroup is n simulated agents of one system on one mocknet.
type simGroup interface {
	Publish(ctx context.Context, author int, payload []byte) error
	Close() error
}

// simSetup builds the pubsub layer on hosts and calls connect once every
// host speaks pubsub (a host that opens its pubsub stream to a peer without
// the handler gives up on that peer); deliver must be called for every
// message a member receives, its own included.
type simSetup func(ctx context.Context, hosts []host.Host, keys []crypto.PrivKey, tr []*rpcCounter, connect func() error, deliver func(member int, payload []byte)) (simGroup, error)

// simStats is implemented by a group that can describe its internal
// counters for the report.
type simStats interface{ stats() string }

// rpcCounter is a pubsub RawTracer that counts RPC bytes and presence
// deliveries. Safe for concurrent use.
type rpcCounter struct {
	sent, recv atomic.Int64
	presence   *atomic.Int64 // shared by the group: beacons delivered anywhere
}

func (c *rpcCounter) OnNewOutboundStream(peer.ID, protocol.ID) {}
func (c *rpcCounter) OnClosedOutboundStream(peer.ID)           {}
func (c *rpcCounter) Join(string)                              {}
func (c *rpcCounter) Leave(string)                             {}
func (c *rpcCounter) Graft(peer.ID, string)                    {}
func (c *rpcCounter) Prune(peer.ID, string)                    {}
func (c *rpcCounter) ValidateMessage(*pubsub.Message)          {}
func (c *rpcCounter) DeliverMessage(m *pubsub.Message) {
	if strings.HasPrefix(m.GetTopic(), presencePrefix) {
		c.presence.Add(1)
	}
}
func (c *rpcCounter) RejectMessage(*pubsub.Message, string) {}
func (c *rpcCounter) DuplicateMessage(*pubsub.Message)      {}
func (c *rpcCounter) ThrottlePeer(peer.ID)                  {}
func (c *rpcCounter) RecvRPC(r *pubsub.RPC)                 { c.recv.Add(int64(proto.Size(&r.RPC))) }
func (c *rpcCounter) SendRPC(r *pubsub.RPC, _ peer.ID)      { c.sent.Add(int64(proto.Size(&r.RPC))) }
func (c *rpcCounter) DropRPC(*pubsub.RPC, peer.ID)          {}
func (c *rpcCounter) UndeliverableMessage(*pubsub.Message)  {}
func (c *rpcCounter) bytes() int64                          { return c.sent.Load() + c.recv.Load() }
func sumBytes(tr []*rpcCounter) (s int64) {
	for _, t := range tr {
		s += t.bytes()
	}
	return s
}

// scaleTracker records deliveries of the current trial. Payloads are
// makePayload's: trial (4 bytes), seq (8), send time (8).
type scaleTracker struct {
	n       int
	authors []int
	trial   atomic.Uint32
	got     atomic.Int64 // deliveries of the current trial to non-authors
	mu      sync.Mutex   // guards lat
	lat     []float64    // ms
	record  atomic.Bool
}

func (t *scaleTracker) author(seq uint64) int { return t.authors[seq%uint64(len(t.authors))] }

func (t *scaleTracker) deliver(member int, p []byte) {
	if len(p) < 20 || binary.BigEndian.Uint32(p) != t.trial.Load() {
		return
	}
	seq := binary.BigEndian.Uint64(p[4:])
	if member == t.author(seq) {
		return
	}
	now := time.Now().UnixNano()
	t.got.Add(1)
	if t.record.Load() {
		sent := int64(binary.BigEndian.Uint64(p[12:]))
		t.mu.Lock()
		t.lat = append(t.lat, float64(now-sent)/1e6)
		t.mu.Unlock()
	}
}

func (t *scaleTracker) begin(id uint32, record bool) {
	t.trial.Store(id)
	t.got.Store(0)
	t.mu.Lock()
	t.lat = t.lat[:0]
	t.mu.Unlock()
	t.record.Store(record)
}

// waitGot polls until want deliveries arrived, or none arrived for stall,
// or until deadline.
func (t *scaleTracker) waitGot(ctx context.Context, want int64, stall time.Duration, deadline time.Time) bool {
	last, moved := int64(-1), time.Now()
	for {
		g := t.got.Load()
		if g >= want {
			return true
		}
		if g != last {
			last, moved = g, time.Now()
		}
		if time.Since(moved) > stall || time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func measureScale(ctx context.Context, size Size, setup simSetup) (Result, error) {
	var res Result
	p, err := scaleParamsFor(size)
	if err != nil {
		return res, err
	}
	for i, n := range p.Sizes {
		t0 := time.Now()
		err := measureScaleN(ctx, p, n, setup, &res)
		if err == nil {
			continue
		}
		if i == 0 {
			return res, err
		}
		// Keep the sizes that were measured: a larger group that never
		// warms up is a finding, not a reason to lose the smaller ones.
		res.Add(fmt.Sprintf("%d agents: setup until ready", n), "s", time.Since(t0).Seconds(), Lower)
		res.Metrics[len(res.Metrics)-1].Note = fmt.Sprintf("not ready, gave up: %v; this size and larger ones not measured", err)
		break
	}
	return res, nil
}

func measureScaleN(ctx context.Context, p scaleParams, n int, setup simSetup, res *Result) (err error) {
	t0 := time.Now()
	mn := mocknet.New()
	defer func() {
		if cerr := mn.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("bench: scale n=%d: close mocknet: %w", n, cerr)
		}
	}()
	hosts, keys, tr, connect, err := simPeers(mn, n)
	if err != nil {
		return err
	}
	presence := tr[0].presence // shared by every counter
	authors := make([]int, scaleAuthors)
	for a := range authors {
		authors[a] = a * n / scaleAuthors
	}
	st := &scaleTracker{n: n, authors: authors}
	g, err := setup(ctx, hosts, keys, tr, connect, st.deliver)
	if err != nil {
		return fmt.Errorf("bench: scale setup n=%d: %w", n, err)
	}
	defer func() {
		if cerr := g.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("bench: scale close n=%d: %w", n, cerr)
		}
	}()

	// Warm-up: one message at a time from the authors in turn until every
	// member gets one, for at least p.Warmup; then until presence is quiet.
	trial := uint32(0)
	wstart := time.Now()
	for seq := uint64(0); ; seq++ {
		trial++
		st.begin(trial, false)
		if err := g.Publish(ctx, st.author(seq), makePayload(trial, seq)); err != nil {
			return fmt.Errorf("bench: scale warm-up n=%d: %w", n, err)
		}
		ok := st.waitGot(ctx, int64(n-1), 300*time.Millisecond, time.Now().Add(3*time.Second))
		if ok && time.Since(wstart) >= p.Warmup {
			break
		}
		if time.Since(wstart) > p.MaxSetup || ctx.Err() != nil {
			return fmt.Errorf("bench: scale warm-up n=%d: only %d of %d members receive: %w", n, st.got.Load(), n-1,
				errors.Join(ctx.Err(), errors.New("timeout")))
		}
	}
	for last, quiet := presence.Load(), 0; ; {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(p.Settle):
		}
		c := presence.Load()
		if quiet++; float64(c-last) >= scaleQuietBeacons*float64(n)*p.Settle.Seconds() {
			quiet = 0
		}
		if quiet == scaleQuietPeriods {
			break
		}
		if time.Since(wstart) > p.MaxSetup {
			return fmt.Errorf("bench: scale n=%d: presence never settled (%d beacon deliveries in the last %v)", n, c-last, p.Settle)
		}
		last = c
	}
	ready := time.Since(t0)

	// Measured window.
	trial++
	st.begin(trial, true)
	stats0 := ""
	if sg, ok := g.(simStats); ok {
		stats0 = sg.stats()
	}
	presence0 := presence.Load()
	bytes0, cpu0, w0 := sumBytes(tr), cpuTime(), time.Now()
	interval := time.Duration(float64(time.Second) / p.Rate)
	for i := range p.Count {
		if d := time.Until(w0.Add(time.Duration(i) * interval)); d > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(d):
			}
		}
		if err := g.Publish(ctx, st.author(uint64(i)), makePayload(trial, uint64(i))); err != nil {
			return fmt.Errorf("bench: scale publish %d n=%d: %w", i, n, err)
		}
	}
	lastPub := time.Now()
	want := int64(p.Count * (n - 1))
	st.waitGot(ctx, want, p.Drain, lastPub.Add(p.Drain))
	window := time.Since(w0)
	cpu := cpuTime() - cpu0
	traffic := sumBytes(tr) - bytes0
	st.record.Store(false)
	st.mu.Lock()
	lat := append([]float64(nil), st.lat...)
	st.mu.Unlock()
	if len(lat) == 0 {
		return fmt.Errorf("bench: scale n=%d: nothing delivered", n)
	}
	within := 0
	for _, l := range lat {
		if l <= ms(scaleWithin) {
			within++
		}
	}
	prefix := fmt.Sprintf("%d agents: ", n)
	res.Add(prefix+"propagation p50", "ms", percentile(lat, 50), Lower)
	res.Add(prefix+"propagation p95", "ms", percentile(lat, 95), Lower)
	res.Add(prefix+"propagation p99", "ms", percentile(lat, 99), Lower)
	res.Add(prefix+"deliveries within 500 ms", "%", 100*float64(within)/float64(want), Higher)
	if int64(len(lat)) < want {
		res.Metrics[len(res.Metrics)-1].Note = fmt.Sprintf("%d of %d deliveries arrived within %s of the last publish",
			len(lat), want, p.Drain)
	}
	if sg, ok := g.(simStats); ok {
		m := &res.Metrics[len(res.Metrics)-1]
		if m.Note != "" {
			m.Note += "; "
		}
		m.Note += fmt.Sprintf("during the window: %s (before: %s), presence deliveries %d",
			sg.stats(), stats0, presence.Load()-presence0)
	}
	res.Add(prefix+"traffic per agent (sent + received)", "KB/s", float64(traffic)/float64(n)/window.Seconds()/1e3, Lower)
	res.Add(prefix+"traffic per agent per message", "KB", float64(traffic)/float64(n)/float64(p.Count)/1e3, Lower)
	res.Add(prefix+"CPU, all agents", "cores", cpu.Seconds()/window.Seconds(), Lower)
	res.Add(prefix+"setup until ready", "s", ready.Seconds(), Lower)
	return nil
}

// gossipSim: default gossipsub on every host.
type gossipSim struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	topics []*pubsub.Topic
	subs   []*pubsub.Subscription
	once   sync.Once
}

func setupGossipSim(ctx context.Context, hosts []host.Host, _ []crypto.PrivKey, tr []*rpcCounter, connect func() error, deliver func(int, []byte)) (simGroup, error) {
	rctx, cancel := context.WithCancel(context.Background())
	g := &gossipSim{cancel: cancel}
	for i, h := range hosts {
		ps, err := pubsub.NewGossipSub(rctx, h, pubsub.WithRawTracer(tr[i]))
		if err != nil {
			g.Close()
			return nil, fmt.Errorf("bench: gossipsub %d: %w", i, err)
		}
		t, err := ps.Join(benchTopic)
		if err != nil {
			g.Close()
			return nil, fmt.Errorf("bench: join %d: %w", i, err)
		}
		s, err := t.Subscribe()
		if err != nil {
			g.Close()
			return nil, fmt.Errorf("bench: subscribe %d: %w", i, err)
		}
		g.topics = append(g.topics, t)
		g.subs = append(g.subs, s)
		g.wg.Go(func() {
			for {
				m, err := s.Next(rctx)
				if err != nil {
					return
				}
				deliver(i, m.Data)
			}
		})
	}
	if err := connect(); err != nil {
		g.Close()
		return nil, err
	}
	return g, nil
}

func (g *gossipSim) Publish(ctx context.Context, author int, p []byte) error {
	return g.topics[author].Publish(ctx, p)
}

func (g *gossipSim) Close() error {
	g.once.Do(func() {
		for _, s := range g.subs {
			s.Cancel()
		}
		g.cancel()
		g.wg.Wait()
	})
	return nil
}

// simNode is a mocknet host with confab's gossipsub: what mesh needs of a
// node (mesh.Node).
type simNode struct {
	h   host.Host
	ps  *pubsub.PubSub
	key crypto.PrivKey
}

func (s *simNode) Host() host.Host        { return s.h }
func (s *simNode) PubSub() *pubsub.PubSub { return s.ps }
func (s *simNode) Key() crypto.PrivKey    { return s.key }

// confabSim: node.NewPubSub + mesh.Mesh with an in-memory history per host.
type confabSim struct {
	cancel context.CancelFunc
	meshes []*mesh.Mesh
	subs   []*mesh.Subscription
	wg     sync.WaitGroup
	once   sync.Once
	err    error
}

// setupConfabSim starts every router, connects the graph, then starts every
// mesh at once: each mesh beacons its presence when a neighbour joins the
// presence topic, so meshes started one by one on a connected graph would
// send one beacon per neighbour each, every one verified by every agent.
func setupConfabSim(ctx context.Context, hosts []host.Host, keys []crypto.PrivKey, tr []*rpcCounter, connect func() error, deliver func(int, []byte)) (simGroup, error) {
	rctx, cancel := context.WithCancel(context.Background())
	n := len(hosts)
	g := &confabSim{cancel: cancel, meshes: make([]*mesh.Mesh, n), subs: make([]*mesh.Subscription, n)}
	fail := func(err error) (simGroup, error) {
		g.Close()
		return nil, err
	}
	pss := make([]*pubsub.PubSub, n)
	for i, h := range hosts {
		ps, err := node.NewPubSub(rctx, h, pubsub.WithRawTracer(tr[i]))
		if err != nil {
			return fail(fmt.Errorf("bench: %d: %w", i, err))
		}
		pss[i] = ps
	}
	if err := connect(); err != nil {
		return fail(err)
	}
	opts := append(benchMeshOptions(), mesh.WithPresence(scalePresenceTick, 4*scalePresenceTick))
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Go(func() {
			m, err := mesh.New(&simNode{h: h, ps: pss[i], key: keys[i]}, newMemHistory(), opts...)
			if err != nil {
				errs[i] = fmt.Errorf("bench: mesh %d: %w", i, err)
				return
			}
			g.meshes[i] = m
			if err := m.Join(ctx, scaleChannel); err != nil {
				errs[i] = fmt.Errorf("bench: join %d: %w", i, err)
				return
			}
			g.subs[i] = m.Subscribe([]string{scaleChannel}, 1<<12)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fail(err)
	}
	for i, s := range g.subs {
		g.wg.Go(func() {
			for r := range s.C() {
				deliver(i, confabPayload(r.Env.Content))
			}
		})
	}
	return g, nil
}

// stats sums the meshes' counters that explain late or missing deliveries.
func (g *confabSim) stats() string {
	var held, skipped, syncIn, rate, drops uint64
	for _, m := range g.meshes {
		st := m.Stats()
		held += st.HeldBack
		skipped += st.GapsSkipped
		syncIn += st.SyncEnvelopesIn
		rate += st.RateDrops
		drops += st.SubscriberDrops
	}
	listed := 0
	for _, m := range g.meshes {
		listed += len(m.Who(context.Background(), "")) - 1 // itself
	}
	n := len(g.meshes)
	return fmt.Sprintf("held back %d, gaps skipped %d, envelopes by sync %d, rate drops %d, subscriber drops %d, Who lists %.1f%% of the others",
		held, skipped, syncIn, rate, drops, 100*float64(listed)/float64(n*(n-1)))
}

func (g *confabSim) Publish(ctx context.Context, author int, p []byte) error {
	_, err := g.meshes[author].Send(ctx, scaleChannel, "msg", confabContent(p), "")
	return err
}

func (g *confabSim) Close() error {
	g.once.Do(func() {
		for _, s := range g.subs {
			if s != nil {
				s.Close()
			}
		}
		g.wg.Wait()
		errs := make([]error, len(g.meshes))
		var wg sync.WaitGroup
		for i, m := range g.meshes {
			if m != nil {
				wg.Go(func() { errs[i] = m.Close() })
			}
		}
		wg.Wait()
		g.cancel()
		g.err = errors.Join(errs...)
	})
	return g.err
}

// simPeers adds n peers with fresh Ed25519 keys to mn on scaleLatency links,
// a traffic counter for each (sharing one presence counter), and returns
// connect, which links and connects them by topology.
func simPeers(mn mocknet.Mocknet, n int) ([]host.Host, []crypto.PrivKey, []*rpcCounter, func() error, error) {
	mn.SetLinkDefaults(mocknet.LinkOptions{Latency: scaleLatency})
	hosts := make([]host.Host, n)
	keys := make([]crypto.PrivKey, n)
	for i := range n {
		k, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			return nil, nil, nil, nil, fmt.Errorf("bench: scale key: %w", err)
		}
		a := multiaddr.StringCast(fmt.Sprintf("/ip4/10.%d.%d.%d/tcp/4001", i>>16&255, i>>8&255, i&255))
		if hosts[i], err = mn.AddPeer(k, a); err != nil {
			return nil, nil, nil, nil, fmt.Errorf("bench: scale add peer %d: %w", i, err)
		}
		keys[i] = k
	}
	presence := new(atomic.Int64)
	tr := make([]*rpcCounter, n)
	for i := range tr {
		tr[i] = &rpcCounter{presence: presence}
	}
	connect := func() error {
		edges := topology(n)
		for _, e := range edges {
			if _, err := mn.LinkPeers(hosts[e[0]].ID(), hosts[e[1]].ID()); err != nil {
				return fmt.Errorf("bench: scale link %d-%d: %w", e[0], e[1], err)
			}
		}
		for _, e := range edges {
			if _, err := mn.ConnectPeers(hosts[e[0]].ID(), hosts[e[1]].ID()); err != nil {
				return fmt.Errorf("bench: scale connect %d-%d: %w", e[0], e[1], err)
			}
		}
		return nil
	}
	return hosts, keys, tr, connect, nil
}
