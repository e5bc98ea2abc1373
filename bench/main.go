package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/confabhq/confab/internal/netnstest"
)

func main() {
	if childMode() {
		return
	}
	os.Exit(run())
}

// defaultOut is where a full-size run of every scenario writes its report
// (relative to the module root, where `go run ./bench` runs).
const defaultOut = "docs/benchmarks.md"

func run() int {
	var (
		sizeFlag = flag.String("size", "tiny", "tiny (seconds, for CI) or full (the issue's sizes)")
		runs     = flag.Int("runs", 0, "runs per scenario (default 5 for full, 1 for tiny)")
		out      = flag.String("out", "auto", "also write the markdown report to this file; auto: docs/benchmarks.md for a full-size run of every scenario, nothing otherwise; - for nothing")
		only     = flag.String("only", "", "comma-separated scenario names (default all)")
		list     = flag.Bool("list", false, "list scenarios and exit")
		agents   = flag.String("agents", "", "override the channel comparison's group sizes, e.g. 2,10 (default: tiny 2,5; full 2,10,50)")
		cpuprof  = flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
		dir      = flag.String("dir", "", "parent of the temp dirs of disk benchmarks (default $TMPDIR); must be on the disk being measured")
		idle     = flag.Int("idle", 0, "override how many idle connections the gateway scenarios hold (default: tiny 300, full 20000)")
	)
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	if *list {
		for _, s := range registry {
			fmt.Printf("%-16s baseline=%-5v %s\n", s.Name, s.Baseline, s.Compare)
		}
		return 0
	}
	benchDir = *dir
	idleOverride = *idle
	if *agents != "" {
		for _, a := range strings.Split(*agents, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(a))
			if err != nil || n < 2 || n > 500 {
				fmt.Fprintf(os.Stderr, "bench: -agents: %q is not a group size in 2..500\n", a)
				return 2
			}
			agentSizes = append(agentSizes, n)
		}
	}
	size := Size(*sizeFlag)
	if size != Tiny && size != Full {
		fmt.Fprintf(os.Stderr, "bench: -size must be tiny or full, not %q\n", *sizeFlag)
		return 2
	}
	if *runs <= 0 {
		*runs = pick(size, 1, 5)
	}
	scenarios, err := selectScenarios(*only)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	// Every node listens on 127.0.0.1 in a namespace of its own.
	exited, code, err := netnstest.Reexec()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	if exited {
		return code
	}
	raiseNoFile(1 << 16)

	if *cpuprof != "" {
		f, err := os.Create(*cpuprof)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: cpuprofile: %v\n", err)
			return 2
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(os.Stderr, "bench: cpuprofile: %v\n", err)
			return 2
		}
		defer pprof.StopCPUProfile()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep := runScenarios(ctx, log, scenarios, size, *runs)
	rep.Command = "go run ./bench " + strings.Join(os.Args[1:], " ")
	if v := os.Getenv(scaleEnv); v != "" { // sizes chosen outside the flags belong in the command
		rep.Command = scaleEnv + "=" + v + " " + rep.Command
	}

	var buf bytes.Buffer
	if err := rep.write(&buf); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	os.Stdout.Write(buf.Bytes())
	if *out == "auto" {
		*out = ""
		if size == Full && *only == "" && *agents == "" {
			*out = defaultOut
		}
	}
	if *out != "" && *out != "-" {
		log.Info("writing report", "file", *out)
		if err := os.WriteFile(*out, buf.Bytes(), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "bench: write report: %v\n", err)
			return 1
		}
	}
	for _, o := range rep.Outcomes {
		if len(o.Errs) > 0 {
			return 1
		}
	}
	if ctx.Err() != nil {
		return 130
	}
	return 0
}

// runScenarios runs each scenario runs times, one at a time, each run under
// its own deadline.
func runScenarios(ctx context.Context, log *slog.Logger, scenarios []Scenario, size Size, runs int) *report {
	rep := &report{Size: size, Runs: runs, Machine: describeMachine(), Started: time.Now()}
	perRun := pick(size, 2*time.Minute, 10*time.Minute)
	for _, s := range scenarios {
		o := outcome{S: s}
		start := time.Now()
		n := runs
		if s.MaxRuns > 0 {
			n = min(n, s.MaxRuns)
		}
		for i := 0; i < n && ctx.Err() == nil; i++ {
			runtime.GC()
			rctx, cancel := context.WithTimeout(ctx, perRun)
			t0 := time.Now()
			res, err := s.Run(rctx, size)
			cancel()
			if err != nil {
				log.Error("run failed", "scenario", s.Name, "run", i+1, "err", err)
				o.Errs = append(o.Errs, err)
				continue
			}
			log.Info("run done", "scenario", s.Name, "run", i+1, "of", n, "took", time.Since(t0).Round(time.Millisecond), "goroutines", runtime.NumGoroutine())
			o.Runs = append(o.Runs, res)
		}
		o.Elapsed = time.Since(start)
		rep.Outcomes = append(rep.Outcomes, o)
	}
	rep.Elapsed = time.Since(rep.Started)
	rep.Machine.LoadEnd = loadavg()
	return rep
}
