package main

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/confabhq/confab/internal/netnstest"
)

func TestMain(m *testing.M) {
	if childMode() { // the idle-client process of the gateway scenarios
		return
	}
	raiseNoFile(1 << 16)
	netnstest.Main(m)
}

// TestHarnessTCP runs the tiny harness end to end for one baseline and checks
// the report.
func TestHarnessTCP(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	sc, err := selectScenarios("tcp")
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
	rep := runScenarios(context.Background(), log, sc, Tiny, 1)
	rep.Command = "go run ./bench -size tiny -only tcp"
	var out bytes.Buffer
	if err := rep.write(&out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{
		"## Machine",
		"| cores | ",
		"go run ./bench -size tiny -only tcp",
		"## " + string(CompareHandoff),
		"| metric | unit | better | tcp |",
		"| throughput, 8 MiB | GB/s | higher | ",
		"| round trip, 200 B, p50 | µs | lower | ",
		"**tcp** (baseline, 1/1 runs ok",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "error:") {
		t.Errorf("report has an error:\n%s", got)
	}
}

// TestRatioColumns checks that a confab scenario gets one ratio column per
// baseline of its comparison, computed from the medians.
func TestRatioColumns(t *testing.T) {
	res := func(v float64) Result {
		return Result{Metrics: []Metric{{Name: "rate", Unit: "msg/s", Value: v, Better: Higher}}}
	}
	rep := &report{Size: Tiny, Runs: 3, Outcomes: []outcome{
		{S: Scenario{Name: "base", Compare: CompareChannel, Baseline: true}, Runs: []Result{res(100), res(90), res(110)}},
		{S: Scenario{Name: "confab", Compare: CompareChannel}, Runs: []Result{res(300), res(250), res(1000)}},
	}}
	var out bytes.Buffer
	if err := rep.write(&out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| metric | unit | better | base | **confab** | confab ÷ base |",
		"| rate | msg/s | higher | 100 (90.0–110) | 300 (250–1000) | 3.00× |",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

func TestSelectScenarios(t *testing.T) {
	tests := []struct {
		only    string
		want    []string
		wantErr bool
	}{
		{only: "tcp", want: []string{"tcp"}},
		{only: "badger, gossipsub", want: []string{"gossipsub", "badger"}},
		{only: "nope", wantErr: true},
	}
	for _, tt := range tests {
		got, err := selectScenarios(tt.only)
		if (err != nil) != tt.wantErr {
			t.Errorf("selectScenarios(%q) err = %v, want error %v", tt.only, err, tt.wantErr)
			continue
		}
		var names []string
		for _, s := range got {
			names = append(names, s.Name)
		}
		if strings.Join(names, ",") != strings.Join(tt.want, ",") {
			t.Errorf("selectScenarios(%q) = %v, want %v", tt.only, names, tt.want)
		}
	}
	all, err := selectScenarios("")
	if err != nil || len(all) != len(registry) {
		t.Errorf("selectScenarios(\"\") = %d scenarios, %v; want %d", len(all), err, len(registry))
	}
}

func TestTopology(t *testing.T) {
	for _, n := range []int{2, 5, 7, 10, 50} {
		edges := topology(n)
		// Connected: union-find over the edges.
		parent := make([]int, n)
		for i := range parent {
			parent[i] = i
		}
		var find func(int) int
		find = func(i int) int {
			if parent[i] != i {
				parent[i] = find(parent[i])
			}
			return parent[i]
		}
		seen := map[[2]int]bool{}
		for _, e := range edges {
			if e[0] == e[1] || seen[e] || seen[[2]int{e[1], e[0]}] {
				t.Errorf("n=%d: bad or duplicate edge %v", n, e)
			}
			seen[e] = true
			parent[find(e[0])] = find(e[1])
		}
		for i := 1; i < n; i++ {
			if find(i) != find(0) {
				t.Errorf("n=%d: member %d not connected to 0", n, i)
			}
		}
		if n <= 7 && len(edges) != n*(n-1)/2 {
			t.Errorf("n=%d: %d edges, want full mesh %d", n, len(edges), n*(n-1)/2)
		}
	}
}

func TestPercentile(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3, 6, 7, 8, 9, 10}
	for _, tt := range []struct{ p, want float64 }{{50, 5}, {99, 10}, {10, 1}, {100, 10}} {
		if got := percentile(append([]float64(nil), xs...), tt.p); got != tt.want {
			t.Errorf("percentile(p%v) = %v, want %v", tt.p, got, tt.want)
		}
	}
}

func benchScenario(b *testing.B, name string) {
	sc, err := selectScenarios(name)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		res, err := sc[0].Run(b.Context(), Tiny)
		if err != nil {
			b.Fatal(err)
		}
		for _, m := range res.Metrics {
			b.ReportMetric(m.Value, metricUnit(m))
		}
	}
}

// metricUnit makes a testing.B metric unit (no spaces) from a metric.
func metricUnit(m Metric) string {
	r := strings.NewReplacer(" ", "_", ",", "", ":", "")
	return r.Replace(m.Unit + "/" + m.Name)
}

func BenchmarkTCP(b *testing.B)           { benchScenario(b, "tcp") }
func BenchmarkLibp2pStream(b *testing.B)  { benchScenario(b, "libp2p-stream") }
func BenchmarkGossipsub(b *testing.B)     { benchScenario(b, "gossipsub") }
func BenchmarkNATS(b *testing.B)          { benchScenario(b, "nats") }
func BenchmarkGorilla(b *testing.B)       { benchScenario(b, "gorilla") }
func BenchmarkBadger(b *testing.B)        { benchScenario(b, "badger") }
func BenchmarkConfab(b *testing.B)        { benchScenario(b, "confab") }
func BenchmarkConfabBundle(b *testing.B)  { benchScenario(b, "confab-bundle") }
func BenchmarkConfabGateway(b *testing.B) { benchScenario(b, "confab-gateway") }
func BenchmarkConfabStore(b *testing.B)   { benchScenario(b, "confab-store") }
func BenchmarkDHT(b *testing.B)           { benchScenario(b, "dht") }
func BenchmarkConfabFind(b *testing.B)    { benchScenario(b, "confab-find") }

func TestConfabContent(t *testing.T) {
	p := makePayload(7, 42)
	c := confabContent(p)
	if len(c) != payloadLen {
		t.Errorf("content is %d bytes, want %d", len(c), payloadLen)
	}
	if got := confabPayload(c); string(got) != string(p[:20]) {
		t.Errorf("confabPayload(confabContent(p)) = %x, want %x", got, p[:20])
	}
}
