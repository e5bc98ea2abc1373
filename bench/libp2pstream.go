package main

import (
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
)

func init() {
	Register(Scenario{
		Name:     "libp2p-stream",
		Compare:  CompareHandoff,
		Baseline: true,
		Method: "two go-libp2p v0.51.0 hosts with default security and muxer on 127.0.0.1 TCP, one stream: " +
			"throughput moving the bulk size in 128 KiB writes until the receiver has read every byte (1 MiB reads, as confab's bundle receiver makes) and acknowledged with one byte (connection set up before the clock starts); " +
			"CPU is the process's user+system time over the same window (both ends run in this process).",
		Run: runLibp2pStream,
	})
}

const bulkProto = protocol.ID("/confab-bench/bulk/1.0.0")

// newHost starts a libp2p host with every default except that it listens
// only on loopback TCP.
func newHost() (host.Host, error) {
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		return nil, fmt.Errorf("bench: libp2p host: %w", err)
	}
	return h, nil
}

// connect dials b from a. A dial that crosses one from b, or a failed first
// attempt, leaves libp2p's dial backoff set, so it retries a few times with
// the backoff cleared.
func connect(ctx context.Context, a, b host.Host) error {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if err = a.Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}); err == nil {
			return nil
		}
		if sw, ok := a.Network().(*swarm.Swarm); ok {
			sw.Backoff().Clear(b.ID())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("bench: connect %s -> %s: %w", a.ID().ShortString(), b.ID().ShortString(), ctx.Err())
		case <-time.After(time.Duration(attempt+1) * 50 * time.Millisecond):
		}
	}
	return fmt.Errorf("bench: connect %s -> %s: %w", a.ID().ShortString(), b.ID().ShortString(), err)
}

func runLibp2pStream(ctx context.Context, size Size) (Result, error) {
	var res Result
	a, err := newHost()
	if err != nil {
		return res, err
	}
	defer a.Close()
	b, err := newHost()
	if err != nil {
		return res, err
	}
	defer b.Close()
	total := bulkBytes(size)
	errc := make(chan error, 1)
	b.SetStreamHandler(bulkProto, func(s network.Stream) {
		defer s.Close()
		err := drainAndAck(s, total)
		if err != nil {
			s.Reset()
		}
		errc <- err
	})
	if err := connect(ctx, a, b); err != nil {
		return res, err
	}
	s, err := a.NewStream(ctx, b.ID(), bulkProto)
	if err != nil {
		return res, fmt.Errorf("bench: libp2p stream: %w", err)
	}
	defer s.Close()
	stop := closeOnDone(ctx, resetter{s})
	c0 := cpuTime()
	d, err := sendBulk(s, s, total)
	stop()
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return res, err
	}
	select {
	case err := <-errc:
		if err != nil {
			return res, err
		}
	case <-ctx.Done():
		return res, ctx.Err()
	}
	cpu := cpuTime() - c0
	res.Add(fmt.Sprintf("throughput, %d MiB", total>>20), "GB/s", float64(total)/d.Seconds()/1e9, Higher)
	addCPUPerGiB(&res, cpu, total)
	return res, nil
}

// resetter closes a stream by resetting it, so a blocked write returns.
type resetter struct{ s network.Stream }

func (r resetter) Close() error { return r.s.Reset() }
