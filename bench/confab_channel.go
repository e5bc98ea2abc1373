package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"

	"github.com/confabhq/confab/mesh"
)

func init() {
	Register(Scenario{
		Name:    "confab",
		Compare: CompareChannel,
		Method: "confab as it runs: per agent a node.Host (127.0.0.1 TCP only, mDNS off, confab's gossipsub settings: own protocol ids, " +
			"StrictNoSign, content ids, queues of 1024, flood publish), a store.DB **in memory** (the disk is measured under History; " +
			"Send still waits for the store's group commit) and a mesh.Mesh joined to one channel, connected by the same `topology` as gossipsub. " +
			"Member 0 calls Mesh.Send (assign seq, Ed25519-sign the envelope, append to history, publish); every hop verifies the envelope " +
			"signature in the topic validator before it forwards or stores; members receive through Mesh.Subscribe (queue 65536) after the store. " +
			"Benchmark-only option: the per-author live rate limit is raised from 1000/s (burst 4000) to 10⁶/s so the search measures delivery, " +
			"not the abuse limit. Content is 200 bytes of text (the timing header hex-encoded, then padding). " + channelMethod +
			" Profile (10 agents, full size, CPU profile of the run on a loaded 2-core machine): the envelope's Ed25519 Verify in the topic " +
			"validator is ~24% of CPU (one verify per node per message, replacing gossipsub's own signature check rather than adding to it); " +
			"the rest is TLS, yamux and syscalls of the libp2p connections (~25%), pubsub's loop and protobuf (~10%), and the channel loop with " +
			"the store's group commit (~9%). Send is synchronous (sign, store, publish with local validation, reply), so the publisher's own " +
			"rate is the ceiling of the lossless search: failed trials end with \"publisher reached\" below 90% of the rate, not with losses.",
		Run: func(ctx context.Context, size Size) (Result, error) { return measureChannel(ctx, size, setupConfab) },
	})
}

const confabBenchChannel = "#bench"

type confabGroup struct {
	nodes []*confabNode
	subs  []*mesh.Subscription
	wg    sync.WaitGroup
	once  sync.Once
	err   error
}

// confabContent turns a measureChannel payload into 200 bytes of UTF-8
// envelope content: the 20-byte timing header in hex, then padding.
func confabContent(p []byte) string {
	h := hex.EncodeToString(p[:20])
	return h + strings.Repeat("x", max(0, len(p)-len(h)))
}

// confabPayload reverses confabContent far enough for the tracker.
func confabPayload(content string) []byte {
	if len(content) < 40 {
		return nil
	}
	b, err := hex.DecodeString(content[:40])
	if err != nil {
		return nil
	}
	return b
}

func setupConfab(ctx context.Context, n int, deliver func(int, []byte)) (channelGroup, error) {
	g := &confabGroup{}
	fail := func(err error) (channelGroup, error) {
		g.Close()
		return nil, err
	}
	g.nodes = make([]*confabNode, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { g.nodes[i], errs[i] = newConfabNode(confabOpts{}) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return fail(err)
		}
	}
	for i, c := range g.nodes {
		if err := c.m.Join(ctx, confabBenchChannel); err != nil {
			return fail(fmt.Errorf("bench: join %d: %w", i, err))
		}
		s := c.m.Subscribe([]string{confabBenchChannel}, 1<<16)
		g.subs = append(g.subs, s)
		g.wg.Go(func() {
			for r := range s.C() {
				if i != 0 {
					deliver(i, confabPayload(r.Env.Content))
				}
			}
		})
	}
	for _, e := range topology(n) {
		if err := connectConfab(ctx, g.nodes[e[0]], g.nodes[e[1]]); err != nil {
			return fail(err)
		}
	}
	return g, nil
}

func (g *confabGroup) Publish(ctx context.Context, p []byte) error {
	_, err := g.nodes[0].m.Send(ctx, confabBenchChannel, "msg", confabContent(p), "")
	return err
}

func (g *confabGroup) Close() error {
	g.once.Do(func() {
		for _, s := range g.subs {
			s.Close()
		}
		g.wg.Wait()
		g.err = closeConfab(g.nodes)
	})
	return g.err
}
