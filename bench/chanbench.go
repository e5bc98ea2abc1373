package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// channelGroup is n members of one channel on some system, running in this
// process; member 0 publishes. Close stops everything the group started.
type channelGroup interface {
	Publish(ctx context.Context, payload []byte) error
	Close() error
}

// channelSetup starts n members and returns once every member is subscribed.
// deliver must be called for every message that member 1..n-1 receives
// (from any goroutine; the publisher's own copy is not counted). It must not
// block for long: it only counts and timestamps.
type channelSetup func(ctx context.Context, n int, deliver func(member int, payload []byte)) (channelGroup, error)

// channelParams are the knobs of measureChannel for one size.
type channelParams struct {
	Sizes        []int         // members per group, publisher included
	Warmup       time.Duration // minimum warm-up publishing before measuring (mesh formation)
	SteadyRate   float64       // msg/s during the latency phase
	SteadyCount  int           // messages in the latency phase
	TrialDur     time.Duration // a search trial publishes for about this long
	TrialMin     int           // messages per trial at least
	TrialMax     int           // and at most
	StartRate    float64       // search starts here and doubles
	MaxRate      float64       // search never tries above this
	Stall        time.Duration // a trial fails when deliveries stop progressing this long
	SearchBudget time.Duration // whole search per group size
}

// agentSizes, when set (-agents), replaces the group sizes of both sizes.
var agentSizes []int

func channelParamsFor(size Size) channelParams {
	p := channelParamsBySize(size)
	if len(agentSizes) > 0 {
		p.Sizes = agentSizes
	}
	return p
}

func channelParamsBySize(size Size) channelParams {
	if size == Full {
		return channelParams{
			Sizes: []int{2, 10, 50}, Warmup: 3 * time.Second, SteadyRate: 100, SteadyCount: 300,
			TrialDur: time.Second, TrialMin: 200, TrialMax: 20000, StartRate: 100, MaxRate: 1 << 20,
			Stall: 700 * time.Millisecond, SearchBudget: 60 * time.Second,
		}
	}
	return channelParams{
		Sizes: []int{2, 5}, Warmup: 1200 * time.Millisecond, SteadyRate: 100, SteadyCount: 50,
		TrialDur: 200 * time.Millisecond, TrialMin: 50, TrialMax: 2000, StartRate: 200, MaxRate: 12800,
		Stall: 400 * time.Millisecond, SearchBudget: 8 * time.Second,
	}
}

// Payload layout: trial id (4 bytes), sequence (8), send time in unix ns (8),
// padding up to 200 bytes.
const payloadLen = 200

func makePayload(trial uint32, seq uint64) []byte {
	p := make([]byte, payloadLen)
	binary.BigEndian.PutUint32(p[0:], trial)
	binary.BigEndian.PutUint64(p[4:], seq)
	binary.BigEndian.PutUint64(p[12:], uint64(time.Now().UnixNano()))
	for i := 20; i < payloadLen; i++ {
		p[i] = 'x'
	}
	return p
}

// tracker counts what every member received of the current trial.
type tracker struct {
	trial  atomic.Uint32
	record atomic.Bool // keep latencies
	counts []atomic.Int64
	mu     sync.Mutex // guards lat
	lat    []float64  // ms, every delivery of the current trial when record is set
}

func newTracker(n int) *tracker { return &tracker{counts: make([]atomic.Int64, n)} }

func (t *tracker) deliver(member int, p []byte) {
	if len(p) < 20 || member <= 0 || member >= len(t.counts) {
		return
	}
	if binary.BigEndian.Uint32(p) != t.trial.Load() {
		return
	}
	now := time.Now().UnixNano()
	t.counts[member].Add(1)
	if t.record.Load() {
		sent := int64(binary.BigEndian.Uint64(p[12:]))
		t.mu.Lock()
		t.lat = append(t.lat, float64(now-sent)/1e6)
		t.mu.Unlock()
	}
}

// begin starts trial id, resetting counts and latencies.
func (t *tracker) begin(id uint32, record bool) {
	t.trial.Store(id)
	for i := range t.counts {
		t.counts[i].Store(0)
	}
	t.mu.Lock()
	t.lat = t.lat[:0]
	t.mu.Unlock()
	t.record.Store(record)
}

// minCount is the fewest messages any receiving member got; total is the sum.
func (t *tracker) minCount() (least, total int64) {
	least = math.MaxInt64
	for i := 1; i < len(t.counts); i++ {
		c := t.counts[i].Load()
		least = min(least, c)
		total += c
	}
	return least, total
}

// waitAll polls until every member has want messages, or deliveries stop
// progressing for stall, or ctx ends. It reports whether all arrived.
func (t *tracker) waitAll(ctx context.Context, want int64, stall time.Duration) bool {
	lastTotal, lastMove := int64(-1), time.Now()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		least, total := t.minCount()
		if least >= want {
			return true
		}
		if total != lastTotal {
			lastTotal, lastMove = total, time.Now()
		} else if time.Since(lastMove) > stall {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
}

// pace publishes count messages of trial at rate msg/s, catching up in
// bursts when the sleep granularity lags. It returns the achieved rate.
func pace(ctx context.Context, g channelGroup, trial uint32, count int, rate float64) (float64, error) {
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	for i := 0; i < count; i++ {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 200*time.Microsecond {
			select {
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-time.After(d):
			}
		}
		if err := g.Publish(ctx, makePayload(trial, uint64(i))); err != nil {
			return 0, fmt.Errorf("bench: publish %d/%d at %.0f/s: %w", i, count, rate, err)
		}
	}
	if f, ok := g.(interface{ Flush(context.Context) error }); ok {
		if err := f.Flush(ctx); err != nil {
			return 0, fmt.Errorf("bench: flush at %.0f/s: %w", rate, err)
		}
	}
	el := time.Since(start)
	if count <= 1 || el <= 0 {
		return rate, nil
	}
	return float64(count-1) / el.Seconds(), nil
}

// measureChannel runs the channel-delivery method on one system: for every
// group size, a warm-up, the latency at a steady rate, and a search for the
// highest lossless rate.
func measureChannel(ctx context.Context, size Size, setup channelSetup) (Result, error) {
	var res Result
	p := channelParamsFor(size)
	for _, n := range p.Sizes {
		if err := measureChannelN(ctx, p, n, setup, &res); err != nil {
			return res, err
		}
	}
	return res, nil
}

func measureChannelN(ctx context.Context, p channelParams, n int, setup channelSetup, res *Result) (err error) {
	tr := newTracker(n)
	g, err := setup(ctx, n, tr.deliver)
	if err != nil {
		return fmt.Errorf("bench: channel setup n=%d: %w", n, err)
	}
	defer func() {
		if cerr := g.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("bench: channel close n=%d: %w", n, cerr)
		}
	}()
	trial := uint32(0)

	// Warm-up: publish every 50 ms for at least p.Warmup and until every
	// member got the latest message (each message is its own trial, since
	// the first ones may reach nobody before subscriptions propagate).
	wstart := time.Now()
	for {
		trial++
		tr.begin(trial, false)
		if err := g.Publish(ctx, makePayload(trial, 0)); err != nil {
			return fmt.Errorf("bench: warm-up n=%d: %w", n, err)
		}
		if f, ok := g.(interface{ Flush(context.Context) error }); ok {
			if err := f.Flush(ctx); err != nil {
				return fmt.Errorf("bench: warm-up n=%d: %w", n, err)
			}
		}
		if tr.waitAll(ctx, 1, 50*time.Millisecond) && time.Since(wstart) >= p.Warmup {
			break
		}
		if time.Since(wstart) > p.Warmup+30*time.Second || ctx.Err() != nil {
			return fmt.Errorf("bench: warm-up n=%d: not every member receives: %w", n, errors.Join(ctx.Err(), errors.New("timeout")))
		}
	}

	// Latency at a steady rate.
	trial++
	tr.begin(trial, true)
	if _, err := pace(ctx, g, trial, p.SteadyCount, p.SteadyRate); err != nil {
		return err
	}
	allArrived := tr.waitAll(ctx, int64(p.SteadyCount), 2*time.Second)
	tr.mu.Lock()
	lat := append([]float64(nil), tr.lat...)
	tr.mu.Unlock()
	if len(lat) == 0 {
		return fmt.Errorf("bench: latency n=%d: nothing delivered", n)
	}
	want := p.SteadyCount * (n - 1)
	prefix := fmt.Sprintf("%d agents: ", n)
	res.Add(prefix+fmt.Sprintf("latency p50 at %.0f msg/s", p.SteadyRate), "ms", percentile(lat, 50), Lower)
	res.Add(prefix+fmt.Sprintf("latency p99 at %.0f msg/s", p.SteadyRate), "ms", percentile(lat, 99), Lower)
	if !allArrived {
		res.Metrics[len(res.Metrics)-1].Note = fmt.Sprintf("only %d of %d deliveries arrived in the latency phase", len(lat), want)
	}

	// Highest lossless rate: double until a trial loses, then bisect.
	deadline := time.Now().Add(p.SearchBudget)
	why := ""
	tryRate := func(rate float64) (bool, error) {
		trial++
		count := int(math.Min(math.Max(rate*p.TrialDur.Seconds(), float64(p.TrialMin)), float64(p.TrialMax)))
		tr.begin(trial, false)
		achieved, err := pace(ctx, g, trial, count, rate)
		if err != nil {
			return false, err
		}
		got := tr.waitAll(ctx, int64(count), p.Stall)
		least, _ := tr.minCount()
		ok := got && achieved >= 0.9*rate
		if !ok {
			why = fmt.Sprintf("nearest failed trial at %.0f msg/s: slowest member got %d of %d, publisher reached %.0f msg/s", rate, least, count, achieved)
		}
		// Let a failed trial's backlog drain so it does not slow the next.
		tr.waitAll(ctx, math.MaxInt64, 150*time.Millisecond)
		return ok, ctx.Err()
	}
	lo, hi := 0.0, 0.0
	capped := false
	for rate := p.StartRate; ; rate *= 2 {
		if rate > p.MaxRate {
			capped = true
			break
		}
		ok, err := tryRate(rate)
		if err != nil {
			return err
		}
		if !ok {
			hi = rate
			break
		}
		lo = rate
		if time.Now().After(deadline) {
			break
		}
	}
	for steps := 0; hi > 0 && lo > 0 && hi/lo > 1.12 && steps < 4 && time.Now().Before(deadline); steps++ {
		mid := math.Round(math.Sqrt(lo * hi))
		ok, err := tryRate(mid)
		if err != nil {
			return err
		}
		if ok {
			lo = mid
		} else {
			hi = mid
		}
	}
	res.Add(prefix+"highest lossless rate", "msg/s", lo, Higher)
	m := &res.Metrics[len(res.Metrics)-1]
	switch {
	case capped:
		m.Note = fmt.Sprintf("search capped at %.0f msg/s: the true limit is higher", p.MaxRate)
	case lo == 0:
		m.Note = fmt.Sprintf("failed even at %.0f msg/s; %s", p.StartRate, why)
	default:
		m.Note = why
	}
	return nil
}

// topology returns the edges (dialer, listener) of the channel benchmarks'
// connection graph: a full mesh up to 7 members; above that each member dials
// its ring successor and 5 other random members (fixed seed, so every system
// gets the same graph).
func topology(n int) [][2]int {
	var edges [][2]int
	if n <= 7 {
		for i := 0; i < n; i++ {
			for j := i + 1; j < n; j++ {
				edges = append(edges, [2]int{i, j})
			}
		}
		return edges
	}
	rng := rand.New(rand.NewPCG(8, uint64(n)))
	has := map[[2]int]bool{}
	add := func(a, b int) bool {
		if a == b || has[[2]int{a, b}] || has[[2]int{b, a}] {
			return false
		}
		has[[2]int{a, b}] = true
		edges = append(edges, [2]int{a, b})
		return true
	}
	for i := 0; i < n; i++ {
		add(i, (i+1)%n)
		for k, tries := 0, 0; k < 5 && tries < 100; tries++ {
			if add(i, rng.IntN(n)) {
				k++
			}
		}
	}
	return edges
}
