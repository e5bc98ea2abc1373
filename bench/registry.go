package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
)

// Size selects how big every scenario runs.
type Size string

const (
	// Tiny finishes each scenario in a few seconds; CI runs it so nothing rots.
	Tiny Size = "tiny"
	// Full uses the sizes of issue 8.
	Full Size = "full"
)

// pick returns tiny or full by size.
func pick[T any](s Size, tiny, full T) T {
	if s == Full {
		return full
	}
	return tiny
}

// Comparison names one table of the report: every scenario with the same
// Compare value appears side by side.
type Comparison string

// The comparisons of issue 8, in report order.
const (
	CompareChannel Comparison = "Channel delivery (200-byte messages, one author, every member)"
	CompareHandoff Comparison = "Handoff (bulk transfer between two nodes on loopback)"
	CompareGateway Comparison = "Gateway (WebSocket fan-out and idle connections)"
	CompareHistory Comparison = "History (synced appends on disk)"
)

var compareOrder = []Comparison{CompareChannel, CompareHandoff, CompareGateway, CompareHistory}

// Scenario is one system measured one way. Run must stop everything it
// started before returning and must respect ctx.
type Scenario struct {
	Name     string // short, unique, lowercase: used by -only and as a column head
	Compare  Comparison
	Baseline bool   // a reference system, not confab
	Method   string // one or two sentences for the report: what is measured, how
	Run      func(ctx context.Context, size Size) (Result, error)
	// MaxRuns, if not 0, caps -runs for this scenario (one run of it
	// already measures several sizes and takes minutes).
	MaxRuns int
}

// Better says which direction of a metric is an improvement.
type Better int

const (
	Lower  Better = iota // latencies, bytes
	Higher               // rates, throughput
)

// Metric is one named figure of one run.
type Metric struct {
	Name   string // row of the table, e.g. "10 agents: latency p50"
	Unit   string // "ms", "µs", "msg/s", "GB/s", "KB/conn", "writes/s"
	Value  float64
	Better Better
	Note   string // optional, e.g. "search capped at 200000/s"
}

// Result is what one run of a scenario measured, in a stable order.
type Result struct {
	Metrics []Metric
}

// Add appends a metric.
func (r *Result) Add(name, unit string, v float64, b Better) {
	r.Metrics = append(r.Metrics, Metric{Name: name, Unit: unit, Value: v, Better: b})
}

var registry []Scenario

// Register adds s; it panics on a duplicate or empty name, at init time.
func Register(s Scenario) {
	if s.Name == "" || s.Run == nil || s.Compare == "" {
		panic("bench: Register: scenario needs Name, Compare and Run")
	}
	for _, r := range registry {
		if r.Name == s.Name {
			panic("bench: Register: duplicate scenario " + s.Name)
		}
	}
	registry = append(registry, s)
}

// selectScenarios returns the registered scenarios named in only (comma
// separated; empty means all), in report order: by comparison, baselines
// first, then by registration.
func selectScenarios(only string) ([]Scenario, error) {
	want := map[string]bool{}
	for _, n := range strings.Split(only, ",") {
		if n = strings.TrimSpace(n); n != "" {
			want[n] = true
		}
	}
	all := len(want) == 0
	var out []Scenario
	for _, s := range registry {
		if all || want[s.Name] {
			out = append(out, s)
			delete(want, s.Name)
		}
	}
	if len(want) > 0 {
		var unknown, known []string
		for n := range want {
			unknown = append(unknown, n)
		}
		for _, s := range registry {
			known = append(known, s.Name)
		}
		sort.Strings(unknown)
		return nil, fmt.Errorf("bench: unknown scenario %s (have %s)", strings.Join(unknown, ","), strings.Join(known, ","))
	}
	rank := map[Comparison]int{}
	for i, c := range compareOrder {
		rank[c] = i
	}
	sort.SliceStable(out, func(i, j int) bool {
		if rank[out[i].Compare] != rank[out[j].Compare] {
			return rank[out[i].Compare] < rank[out[j].Compare]
		}
		return out[i].Baseline && !out[j].Baseline
	})
	return out, nil
}
