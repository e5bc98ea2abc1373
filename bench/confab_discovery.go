package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/host"

	"github.com/confabhq/confab/mesh"
)

// CompareDiscovery is the fifth comparison of issue 8.
const CompareDiscovery Comparison = "Discovery (agents with a capability among 20)"

const (
	discoveryAgents    = 20
	discoveryProviders = 5 // agents 1..5 have the capability
	discoveryCap       = "bench-cap"
)

func init() {
	compareOrder = append(compareOrder, CompareDiscovery)
	Register(Scenario{
		Name:     "dht",
		Compare:  CompareDiscovery,
		Baseline: true,
		Method: "20 default libp2p hosts on 127.0.0.1 TCP, each with a bare go-libp2p-kad-dht v0.42.0 (ModeServer, own protocol prefix), " +
			"connected by `topology`; agents 1..5 Provide the capability's key (mesh.CapKey); then each of the 14 others (not 0, whose " +
			"warm-up search found all 5) runs FindProvidersAsync once until it has all 5 providers: p50 and max of those times. " +
			"With 20 DHT servers and k = 20, Provide stores each record on every node, so most searches answer from the local provider store " +
			"without a network round trip: this is the floor, not a typical multi-hop lookup.",
		Run: runDHTDiscovery,
	})
	Register(Scenario{
		Name:    "confab-find",
		Compare: CompareDiscovery,
		Method: "20 confab agents (node.Host with its DHT, in-memory store, mesh with presence) connected by `topology`; agents 1..5 run " +
			"mesh.WithCaps(capability), so they provide its DHT key and announce it in presence. Once agent 0's Find returns all 5, each of " +
			"the 14 others calls Mesh.Find once, with an empty card cache: candidates from presence and DHT providers, each one's signed card " +
			"fetched over /confab/card/1 and verified: p50 and max of those times. The gap to the bare DHT is mostly the 5 card fetches " +
			"(one stream each: open, multistream negotiation, read, verify) that the DHT floor does not do.",
		Run: runConfabFind,
	})
}

func addDiscoveryResult(res *Result, lat []float64) {
	res.Add(fmt.Sprintf("find %d of %d agents, p50", discoveryProviders, discoveryAgents), "ms", percentile(lat, 50), Lower)
	res.Add(fmt.Sprintf("find %d of %d agents, max", discoveryProviders, discoveryAgents), "ms", percentile(lat, 100), Lower)
}

// pollFind runs find until it reports all providers or the deadline.
func pollFind(ctx context.Context, find func(context.Context) (int, error)) error {
	deadline := time.Now().Add(45 * time.Second)
	for {
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		n, err := find(fctx)
		cancel()
		if err == nil && n >= discoveryProviders {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("bench: warm-up find: %d of %d found: %w", n, discoveryProviders, errors.Join(err, ctx.Err()))
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func runDHTDiscovery(ctx context.Context, size Size) (Result, error) {
	var res Result
	key, err := mesh.CapKey(discoveryCap)
	if err != nil {
		return res, err
	}
	hosts := make([]host.Host, discoveryAgents)
	dhts := make([]*dht.IpfsDHT, discoveryAgents)
	defer func() {
		for i := range hosts {
			if dhts[i] != nil {
				dhts[i].Close()
			}
			if hosts[i] != nil {
				hosts[i].Close()
			}
		}
	}()
	for i := range hosts {
		if hosts[i], err = newHost(); err != nil {
			return res, err
		}
		if dhts[i], err = dht.New(hosts[i], dht.Mode(dht.ModeServer), dht.ProtocolPrefix("/confab-bench")); err != nil {
			return res, fmt.Errorf("bench: dht %d: %w", i, err)
		}
	}
	for _, e := range topology(discoveryAgents) {
		if err := connect(ctx, hosts[e[0]], hosts[e[1]]); err != nil {
			return res, err
		}
	}
	for i := 1; i <= discoveryProviders; i++ {
		pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		err := dhts[i].Provide(pctx, key, true)
		cancel()
		if err != nil {
			return res, fmt.Errorf("bench: provide %d: %w", i, err)
		}
	}
	find := func(d *dht.IpfsDHT) func(context.Context) (int, error) {
		return func(ctx context.Context) (int, error) {
			n := 0
			for range d.FindProvidersAsync(ctx, key, discoveryProviders) {
				n++
			}
			return n, nil
		}
	}
	if err := pollFind(ctx, find(dhts[0])); err != nil {
		return res, err
	}
	var lat []float64
	for i := discoveryProviders + 1; i < discoveryAgents; i++ {
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		t0 := time.Now()
		n, _ := find(dhts[i])(fctx)
		d := time.Since(t0)
		cancel()
		if n < discoveryProviders {
			return res, fmt.Errorf("bench: dht find from %d: %d of %d", i, n, discoveryProviders)
		}
		lat = append(lat, ms(d))
	}
	addDiscoveryResult(&res, lat)
	return res, nil
}

func runConfabFind(ctx context.Context, size Size) (Result, error) {
	var res Result
	nodes := make([]*confabNode, discoveryAgents)
	defer closeConfab(nodes)
	errs := make([]error, discoveryAgents)
	var wg sync.WaitGroup
	for i := range nodes {
		var o confabOpts
		if i >= 1 && i <= discoveryProviders {
			o.mesh = []mesh.Option{mesh.WithCaps(discoveryCap)}
		}
		wg.Go(func() { nodes[i], errs[i] = newConfabNode(o) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	for _, e := range topology(discoveryAgents) {
		if err := connectConfab(ctx, nodes[e[0]], nodes[e[1]]); err != nil {
			return res, err
		}
	}
	find := func(c *confabNode) func(context.Context) (int, error) {
		return func(ctx context.Context) (int, error) {
			cards, err := c.m.Find(ctx, discoveryCap)
			return len(cards), err
		}
	}
	if err := pollFind(ctx, find(nodes[0])); err != nil {
		return res, err
	}
	var lat []float64
	for i := discoveryProviders + 1; i < discoveryAgents; i++ {
		fctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		t0 := time.Now()
		n, err := find(nodes[i])(fctx)
		d := time.Since(t0)
		cancel()
		if err != nil || n < discoveryProviders {
			return res, fmt.Errorf("bench: find from %d: %d of %d: %v", i, n, discoveryProviders, err)
		}
		lat = append(lat, ms(d))
	}
	addDiscoveryResult(&res, lat)
	return res, nil
}
