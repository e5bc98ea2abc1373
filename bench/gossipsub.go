package main

import (
	"context"
	"errors"
	"fmt"
	"sync"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
)

func init() {
	Register(Scenario{
		Name:     "gossipsub",
		Compare:  CompareChannel,
		Baseline: true,
		Method: "go-libp2p-pubsub v0.17.0 `NewGossipSub` with every default (/meshsub protocols, strict signing, queues of 32), " +
			"one libp2p host per agent on 127.0.0.1 TCP, connected by `topology` (full mesh up to 7, else ring + 5 random dials each); " + channelMethod,
		Run: func(ctx context.Context, size Size) (Result, error) { return measureChannel(ctx, size, setupGossipsub) },
	})
}

// channelMethod describes measureChannel for the report.
const channelMethod = "member 0 publishes 200-byte messages carrying their send time; latency is publish→receive at every other member " +
	"(one process, one clock) after a warm-up that lets the mesh form; the lossless rate is found by doubling then bisecting the rate of a trial " +
	"(full size: about 1 s of messages, 200 to 20000; tiny: 0.2 s, 50 to 2000) that passes when every member receives every message and the publisher kept 90% of the rate."

const benchTopic = "confab-bench"

type gossipGroup struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	hosts  []host.Host
	topics []*pubsub.Topic
	subs   []*pubsub.Subscription
	once   sync.Once
	err    error
}

func setupGossipsub(ctx context.Context, n int, deliver func(int, []byte)) (channelGroup, error) {
	rctx, cancel := context.WithCancel(context.Background())
	g := &gossipGroup{cancel: cancel}
	fail := func(err error) (channelGroup, error) {
		g.Close()
		return nil, err
	}
	for i := 0; i < n; i++ {
		h, err := newHost()
		if err != nil {
			return fail(err)
		}
		g.hosts = append(g.hosts, h)
	}
	for i, h := range g.hosts {
		ps, err := pubsub.NewGossipSub(rctx, h)
		if err != nil {
			return fail(fmt.Errorf("bench: gossipsub %d: %w", i, err))
		}
		t, err := ps.Join(benchTopic)
		if err != nil {
			return fail(fmt.Errorf("bench: join %d: %w", i, err))
		}
		s, err := t.Subscribe()
		if err != nil {
			return fail(fmt.Errorf("bench: subscribe %d: %w", i, err))
		}
		g.topics = append(g.topics, t)
		g.subs = append(g.subs, s)
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			for {
				m, err := s.Next(rctx)
				if err != nil {
					return
				}
				if i != 0 {
					deliver(i, m.Data)
				}
			}
		}()
	}
	// Connect only once every host speaks /meshsub: a host that opens its
	// pubsub stream to a peer without the handler yet gives up on that peer.
	for _, e := range topology(n) {
		if err := connect(ctx, g.hosts[e[0]], g.hosts[e[1]]); err != nil {
			return fail(err)
		}
	}
	return g, nil
}

func (g *gossipGroup) Publish(ctx context.Context, p []byte) error {
	return g.topics[0].Publish(ctx, p)
}

func (g *gossipGroup) Close() error {
	g.once.Do(func() {
		for _, s := range g.subs {
			s.Cancel()
		}
		g.cancel()
		g.wg.Wait()
		var errs []error
		for _, h := range g.hosts {
			errs = append(errs, h.Close())
		}
		g.err = errors.Join(errs...)
	})
	return g.err
}
