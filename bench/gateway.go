package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func init() {
	Register(Scenario{
		Name:     "gorilla",
		Compare:  CompareGateway,
		Baseline: true,
		Method: "a minimal gorilla/websocket v1.5.3 broadcast server in the chat example's shape (hub goroutine, read and write pump per client, " +
			"1 KiB buffers, 256-message send queue, one frame per message) on 127.0.0.1. Fan-out: one extra client publishes a message " +
			"every 20 ms on a fixed schedule, 200 bytes of content carrying the time it was due, framed as the gateway frames a live event " +
			"(JSON with an envelope's fields, id and signature bytes included, and a cursor; the same size), which the server broadcasts " +
			"unchanged; each receiving client decodes and checks every frame as wsgateway.Client does (one json.Unmarshal, the envelope's " +
			"field checks) and counts it in its read goroutine. Unlike confab, nothing is signed, verified or stored. Latency is due→receive " +
			"at every receiving client (clients in this process), so a publisher that falls behind its schedule shows it; CPU per delivered " +
			"frame is the whole process's (server, publisher and clients) while publishing. Idle memory: " +
			"the idle clients run in a child process (this binary re-executed), so the server process's VmRSS delta and Go heap+stack delta, " +
			"after GC and FreeOSMemory, divided by the connection count, are the server's cost alone.",
		Run: runGorilla,
	})
}

func runGorilla(ctx context.Context, size Size) (Result, error) {
	var res Result
	setup := func(ctx context.Context, n int, deliver func(int, []byte)) (channelGroup, error) {
		return setupGorillaFanout(ctx, n, deliver)
	}
	if err := measureFanout(ctx, size, setup, &res); err != nil {
		return res, err
	}
	n := idleCount(size)
	err := measureIdle(ctx, n, func() (idleServer, error) {
		s, err := startGorilla()
		if err != nil {
			return nil, err
		}
		return s, nil
	}, &res)
	return res, err
}

// idleOverride, if positive, replaces the idle connection count (-idle).
var idleOverride int

// idleCount is how many idle connections the gateway comparison holds:
// 20000 at full size, or as many as RLIMIT_NOFILE allows the server process
// (and the client process, which inherits the limit) with 256 to spare.
func idleCount(size Size) int {
	n := pick(size, 300, 20000)
	if idleOverride > 0 {
		n = idleOverride
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < uint64(n)+256 {
		n = int(lim.Cur) - 256
	}
	return n
}

// fanoutRate is the fan-out comparison's publishing rate, messages/s.
const fanoutRate = 50

// measureFanout measures broadcast latency to 100 and 1000 clients (tiny: 10
// and 50). setup gets n = clients+1: member 0 publishes.
func measureFanout(ctx context.Context, size Size, setup channelSetup, res *Result) error {
	msgs := pick(size, 20, 100)
	for _, clients := range pick(size, []int{10, 50}, []int{100, 1000}) {
		tr := newTracker(clients + 1)
		g, err := setup(ctx, clients+1, tr.deliver)
		if err != nil {
			return fmt.Errorf("bench: fan-out setup %d: %w", clients, err)
		}
		cpu0 := cpuTime()
		tr.begin(1, true)
		achieved, err := paceDue(ctx, g, 1, msgs, fanoutRate)
		ok := err == nil && tr.waitAll(ctx, int64(msgs), 2*time.Second)
		cpu := cpuTime() - cpu0
		cerr := g.Close()
		if err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("bench: fan-out %d: %w", clients, err)
		}
		tr.mu.Lock()
		lat := append([]float64(nil), tr.lat...)
		tr.mu.Unlock()
		if len(lat) == 0 {
			return errNoDelivery
		}
		res.Add(fmt.Sprintf("%d clients: fan-out latency p50", clients), "ms", percentile(lat, 50), Lower)
		if achieved < 0.95*fanoutRate {
			res.Metrics[len(res.Metrics)-1].Note = fmt.Sprintf("the publisher reached only %.0f of %d messages/s", achieved, fanoutRate)
		}
		res.Add(fmt.Sprintf("%d clients: fan-out latency p99", clients), "ms", percentile(lat, 99), Lower)
		if !ok {
			res.Metrics[len(res.Metrics)-1].Note = fmt.Sprintf("only %d of %d deliveries arrived", len(lat), msgs*clients)
		}
		if a, ok := g.(interface{ acks() []float64 }); ok && len(a.acks()) > 0 {
			// What a fan-out waits for before it starts (confab: verify,
			// synced store write, ack), as the publisher sees it.
			res.Add(fmt.Sprintf("%d clients: publish→ack p50", clients), "ms", percentile(a.acks(), 50), Lower)
		}
		// The whole process's CPU while publishing: server, publisher and
		// every client, divided by the frames delivered.
		res.Add(fmt.Sprintf("%d clients: CPU per delivered frame (server and clients)", clients), "µs",
			float64(cpu.Microseconds())/float64(len(lat)), Lower)
	}
	return nil
}

// paceDue publishes count messages of trial at rate msg/s like pace, but
// stamps each with the time it was due rather than the time it was sent: a
// publisher held back (confab's waits for each ack; a saturated machine
// delays either) then shows its lag in the latency instead of hiding the
// queueing behind it (coordinated omission). It returns the achieved rate.
func paceDue(ctx context.Context, g channelGroup, trial uint32, count int, rate float64) (float64, error) {
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	for i := 0; i < count; i++ {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 200*time.Microsecond {
			select {
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-time.After(d):
			}
		}
		p := makePayload(trial, uint64(i))
		binary.BigEndian.PutUint64(p[12:], uint64(due.UnixNano()))
		if err := g.Publish(ctx, p); err != nil {
			return 0, fmt.Errorf("bench: publish %d/%d at %.0f/s: %w", i, count, rate, err)
		}
	}
	el := time.Since(start)
	if count <= 1 || el <= 0 {
		return rate, nil
	}
	return float64(count-1) / el.Seconds(), nil
}

// idleServer is a WebSocket server whose idle connections are measured.
type idleServer interface {
	wsURL() string
	clients() int
	Close()
}

func (s *gorillaServer) wsURL() string { return s.URL }

// measureIdle starts a server, has a child process open n idle connections
// to it, and reports the server process's memory per connection.
func measureIdle(ctx context.Context, n int, start func() (idleServer, error), res *Result) error {
	srv, err := start()
	if err != nil {
		return err
	}
	defer srv.Close()
	// Sampled after the server started: only the connections' cost counts.
	before := settledMem()
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("bench: idle: %w", err)
	}
	cmd := exec.CommandContext(ctx, exe)
	mode := ""
	if _, ok := srv.(interface{ authenticated() }); ok {
		mode = " auth"
	}
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d%s", childEnv, srv.wsURL(), n, mode))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return fmt.Errorf("bench: idle: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("bench: idle: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("bench: idle: start clients: %w", err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready") {
		return fmt.Errorf("bench: idle: client process said %q: %v", strings.TrimSpace(line), err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := waitIdle(wctx, srv, n); err != nil {
		return err
	}
	after := settledMem()
	res.Add("idle connections: server RSS per connection", "KB", (after.rssKB-before.rssKB)*1024/1000/float64(n), Lower)
	res.Metrics[len(res.Metrics)-1].Note = fmt.Sprintf("%d idle connections held", n)
	res.Add("idle connections: server Go heap+stacks per connection", "KB", float64(after.goBytes-before.goBytes)/1000/float64(n), Lower)
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("bench: idle: client process: %w", err)
	}
	return nil
}

func waitIdle(ctx context.Context, srv idleServer, n int) error {
	for srv.clients() < n {
		select {
		case <-ctx.Done():
			return fmt.Errorf("bench: idle: server holds %d of %d connections: %w", srv.clients(), n, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

type memSample struct {
	rssKB   float64
	goBytes uint64 // HeapInuse + StackInuse
}

// settledMem collects garbage, returns freed memory to the OS, and samples.
func settledMem() memSample {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss, _ := procStatusKB("self", "VmRSS")
	return memSample{rssKB: rss, goBytes: ms.HeapInuse + ms.StackInuse}
}

// childEnv, when set to "URL N" or "URL N auth" (confab's gateway: each
// connection authenticates with its own key), turns this binary (the bench command or its
// test binary) into the idle-client process: it opens N WebSocket
// connections to URL, prints "ready N", holds them until stdin closes, and
// exits.
const childEnv = "CONFAB_BENCH_WSCLIENTS"

// childMode runs the idle-client process if this is one, and reports
// whether it did (the caller then returns without doing anything else).
func childMode() bool {
	v := os.Getenv(childEnv)
	if v == "" {
		return false
	}
	f := strings.Fields(v)
	if len(f) < 2 {
		f = append(f, "")
	}
	url, ns := f[0], f[1]
	n, err := strconv.Atoi(ns)
	if err != nil || n <= 0 {
		fmt.Fprintf(os.Stderr, "bench: bad %s=%q\n", childEnv, v)
		os.Exit(2)
	}
	raiseNoFile(uint64(n) + 1024)
	hold := holdClients
	if len(f) > 2 && f[2] == "auth" {
		hold = holdAuthedClients
	}
	if err := hold(url, n); err != nil {
		fmt.Fprintf(os.Stdout, "error %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
	return true
}

func holdClients(url string, n int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conns := make([]io.Closer, n)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	next := make(chan int)
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				c, err := dialWS(ctx, url)
				if err != nil {
					mu.Lock()
					firstErr = fmt.Errorf("connection %d: %w", i, err)
					mu.Unlock()
					continue
				}
				conns[i] = c.NetConn()
			}
		}()
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
