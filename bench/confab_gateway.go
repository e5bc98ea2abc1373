package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/rendezvous"
	"github.com/confabhq/confab/wsgateway"
)

func init() {
	Register(Scenario{
		Name:    "confab-gateway",
		Compare: CompareGateway,
		Method: "a rendezvous.Rendezvous (libp2p on 127.0.0.1, badger history on disk, synced) serving its remote-mode gateway on 127.0.0.1; " +
			"every client is a wsgateway.Client with its own Ed25519 key that authenticates (signed nonce) before anything else. " +
			"Fan-out: each receiving client joins and subscribes to one channel; one more client publishes envelopes it signs itself " +
			"(200 bytes of text carrying the time it was due) every 20 ms on a fixed schedule, pipelined: it writes each publish without " +
			"waiting for the previous one's ack (wsgateway.Client.PublishAsync; the gorilla publisher waits for nothing either) and one " +
			"goroutine awaits every ack in order, any error failing the run. The rendezvous handles a connection's publishes one after " +
			"another: it verifies the signature, stores durably, acks, then fans out. (Waiting for each ack before the next publish tied " +
			"the schedule to acks that, with every client in this one process, queue behind the fan-out just sent: at 1000 clients the " +
			"publisher fell behind.) Each receiving client decodes and checks every event frame (no signature check: the gateway did it) " +
			"and counts it on its reader goroutine (wsgateway.Client.SubscribeFunc), as the gorilla clients do. Latency is due→receive " +
			"at every receiving client (clients in this process), so it includes the publisher's signing, the gateway's verification and " +
			"the synced store write (publish→ack p50, from writing the publish to reading its ack, shows that part, plus the ack's own " +
			"wait behind the in-process fan-out); the gorilla baseline has none of these. CPU per delivered frame is the whole process's (rendezvous, publisher and clients) while publishing. " +
			"Idle: a child process (this binary " +
			"re-executed) opens the connections and authenticates each one with its own key; the rendezvous's process memory is sampled " +
			"after the rendezvous started and again once the gateway counts every authentication, after GC and FreeOSMemory. " +
			"Benchmark-only settings: MaxConns and MaxConnsPerIP raised to 30000 (every client is 127.0.0.1) and the per-identity " +
			"request rate to 10000/s.",
		Run: runConfabGateway,
	})
}

func runConfabGateway(ctx context.Context, size Size) (Result, error) {
	var res Result
	if err := measureFanout(ctx, size, setupConfabFanout, &res); err != nil {
		return res, err
	}
	err := measureIdle(ctx, idleCount(size), func() (idleServer, error) { return startRendezvous() }, &res)
	return res, err
}

type rvServer struct {
	rv  *rendezvous.Rendezvous
	dir string
}

func startRendezvous() (*rvServer, error) {
	dir, err := os.MkdirTemp(benchDir, "confab-bench-rv-")
	if err != nil {
		return nil, fmt.Errorf("bench: rendezvous dir: %w", err)
	}
	cfg := rendezvous.DefaultConfig()
	cfg.Dir = dir
	cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.WS = "127.0.0.1:0"
	cfg.Metrics = "127.0.0.1:0"
	cfg.Logger = discard
	cfg.Gateway.MaxConns = 30000
	cfg.Gateway.Remote.MaxConnsPerIP = 30000
	cfg.Gateway.Remote.Rate = 10000
	cfg.Gateway.Remote.Burst = 10000
	rv, err := rendezvous.New(cfg)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("bench: rendezvous: %w", err)
	}
	return &rvServer{rv: rv, dir: dir}, nil
}

func (s *rvServer) wsURL() string { return "ws://" + s.rv.WSAddr() + "/" }

// clients is how many authentications the gateway accepted, from its
// Prometheus metrics.
func (s *rvServer) clients() int {
	resp, err := http.Get("http://" + s.rv.MetricsAddr() + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, `confab_gateway_auth_total{result="ok"}`) {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			return int(v)
		}
	}
	return 0
}

func (s *rvServer) Close() {
	s.rv.Close()
	os.RemoveAll(s.dir)
}

// dialAuthed opens one authenticated gateway client with a fresh key.
func dialAuthed(ctx context.Context, url string) (*wsgateway.Client, crypto.PrivKey, error) {
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return nil, nil, err
	}
	c, err := wsgateway.Dial(ctx, url)
	if err != nil {
		return nil, nil, fmt.Errorf("bench: gateway dial: %w", err)
	}
	if err := c.Authenticate(ctx, key, ""); err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("bench: gateway auth: %w", err)
	}
	return c, key, nil
}

type gwGroup struct {
	srv     *rvServer
	clients []*wsgateway.Client
	pubKey  crypto.PrivKey
	seq     uint64
	once    sync.Once

	// Publish does not wait for acks (the gorilla publisher waits for
	// nothing either): each publish's wait goes to pending, in order, and
	// one goroutine collects the acks.
	pending chan pendingAck
	acked   chan struct{} // closed when the collector has returned
	ackMS   []float64     // publish→ack of every Publish; the collector's until acked closes
	ackErr  atomic.Pointer[error]
}

type pendingAck struct {
	seq   uint64
	start time.Time
	wait  func(context.Context) (wsgateway.Ack, error)
}

// collect awaits every publish's ack in order and records its latency.
func (g *gwGroup) collect() {
	defer close(g.acked)
	for p := range g.pending {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_, err := p.wait(ctx)
		cancel()
		if err != nil {
			err = fmt.Errorf("bench: gateway publish seq %d: %w", p.seq, err)
			g.ackErr.CompareAndSwap(nil, &err)
			continue
		}
		g.ackMS = append(g.ackMS, float64(time.Since(p.start))/1e6)
	}
}

func setupConfabFanout(ctx context.Context, n int, deliver func(int, []byte)) (channelGroup, error) {
	srv, err := startRendezvous()
	if err != nil {
		return nil, err
	}
	g := &gwGroup{srv: srv, clients: make([]*wsgateway.Client, n)}
	fail := func(err error) (channelGroup, error) {
		g.Close()
		return nil, err
	}
	pub, key, err := dialAuthed(ctx, srv.wsURL())
	if err != nil {
		return fail(err)
	}
	g.clients[0], g.pubKey = pub, key
	if err := pub.Join(ctx, confabBenchChannel); err != nil {
		return fail(fmt.Errorf("bench: gateway join: %w", err))
	}
	next := make(chan int)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := range next {
				c, _, err := dialAuthed(ctx, srv.wsURL())
				if err != nil {
					errs[i] = err
					continue
				}
				g.clients[i] = c
				if err := c.Join(ctx, confabBenchChannel); err != nil {
					errs[i] = fmt.Errorf("bench: gateway join %d: %w", i, err)
					continue
				}
				// As the gorilla clients do: each event is counted on the
				// connection's reader goroutine.
				_, err = c.SubscribeFunc(ctx, []string{confabBenchChannel}, "", func(e wsgateway.Event) {
					deliver(i, confabPayload(e.Record.Env.Content))
				})
				if err != nil {
					errs[i] = fmt.Errorf("bench: gateway subscribe %d: %w", i, err)
					continue
				}
			}
		})
	}
	for i := 1; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return fail(err)
		}
	}
	g.seq, err = pub.NextSeq(ctx, confabBenchChannel, "")
	if err != nil {
		return fail(fmt.Errorf("bench: gateway next seq: %w", err))
	}
	g.pending, g.acked = make(chan pendingAck, 1<<16), make(chan struct{})
	go g.collect()
	return g, nil
}

func (g *gwGroup) Publish(ctx context.Context, p []byte) error {
	e := &mesh.Envelope{Channel: confabBenchChannel, Name: "bench", Seq: g.seq, TS: time.Now().UnixMilli(), Kind: "msg", Content: confabContent(p)}
	if err := e.Sign(g.pubKey); err != nil {
		return err
	}
	if p := g.ackErr.Load(); p != nil {
		return *p
	}
	start := time.Now()
	wait, err := g.clients[0].PublishAsync(ctx, e)
	if err != nil {
		return fmt.Errorf("bench: gateway publish seq %d: %w", g.seq, err)
	}
	g.pending <- pendingAck{seq: g.seq, start: start, wait: wait}
	g.seq++
	return nil
}

// acks returns the publish→ack latencies in ms; only after Close.
func (g *gwGroup) acks() []float64 { return g.ackMS }

// Close waits for every ack (so acks and errors are complete), then
// closes the clients and the rendezvous. It returns the first publish error.
func (g *gwGroup) Close() error {
	var err error
	g.once.Do(func() {
		if g.pending != nil {
			close(g.pending)
			<-g.acked
			if p := g.ackErr.Load(); p != nil {
				err = *p
			}
		}
		for _, c := range g.clients {
			if c != nil {
				c.Close()
			}
		}
		g.srv.Close()
	})
	return err
}

// holdAuthedClients is the idle-client process's work for confab: n
// authenticated gateway clients, held until stdin closes.
func holdAuthedClients(url string, n int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	conns := make([]*wsgateway.Client, n)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	next := make(chan int)
	for range 32 {
		wg.Go(func() {
			for i := range next {
				c, _, err := dialAuthed(ctx, url)
				if err != nil {
					mu.Lock()
					firstErr = fmt.Errorf("connection %d: %w", i, err)
					mu.Unlock()
					continue
				}
				conns[i] = c
			}
		})
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	if firstErr != nil {
		return firstErr
	}
	fmt.Fprintf(os.Stdout, "ready %d\n", n)
	io.Copy(io.Discard, os.Stdin)
	return nil
}

// authenticated marks the server whose idle clients must authenticate.
func (s *rvServer) authenticated() {}
