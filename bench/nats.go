package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

func init() {
	Register(Scenario{
		Name:     "nats",
		Compare:  CompareChannel,
		Baseline: true,
		Method: "nats-server v2.12.0 embedded in the process on 127.0.0.1 (random port, default options, no logging); one nats.go v1.55.0 " +
			"connection per agent, the others subscribed with an async callback; Publish is buffered and flushed after each trial; " + channelMethod,
		Run: func(ctx context.Context, size Size) (Result, error) { return measureChannel(ctx, size, setupNATS) },
	})
}

type natsGroup struct {
	srv   *server.Server
	conns []*nats.Conn
	once  sync.Once
}

func setupNATS(ctx context.Context, n int, deliver func(int, []byte)) (channelGroup, error) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true})
	if err != nil {
		return nil, fmt.Errorf("bench: nats server: %w", err)
	}
	g := &natsGroup{srv: srv}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		g.Close()
		return nil, errors.New("bench: nats server not ready")
	}
	for i := 0; i < n; i++ {
		nc, err := nats.Connect(srv.ClientURL(), nats.Name(fmt.Sprintf("agent-%d", i)), nats.NoReconnect())
		if err != nil {
			g.Close()
			return nil, fmt.Errorf("bench: nats connect %d: %w", i, err)
		}
		g.conns = append(g.conns, nc)
		if i == 0 {
			continue
		}
		if _, err := nc.Subscribe(benchTopic, func(m *nats.Msg) { deliver(i, m.Data) }); err != nil {
			g.Close()
			return nil, fmt.Errorf("bench: nats subscribe %d: %w", i, err)
		}
		if err := natsFlush(ctx, nc); err != nil {
			g.Close()
			return nil, fmt.Errorf("bench: nats flush %d: %w", i, err)
		}
	}
	return g, nil
}

func (g *natsGroup) Publish(ctx context.Context, p []byte) error {
	return g.conns[0].Publish(benchTopic, p)
}

// Flush pushes buffered publishes out; measureChannel calls it after a batch.
func (g *natsGroup) Flush(ctx context.Context) error { return natsFlush(ctx, g.conns[0]) }

// natsFlush waits for the server to have everything nc sent; nats.go wants
// a deadline on the context.
func natsFlush(ctx context.Context, nc *nats.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return nc.FlushWithContext(ctx)
}

func (g *natsGroup) Close() error {
	g.once.Do(func() {
		for _, nc := range g.conns {
			nc.Close()
		}
		g.srv.Shutdown()
		g.srv.WaitForShutdown()
	})
	return nil
}
