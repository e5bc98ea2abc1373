// Command bench measures confab side by side with its baselines (raw
// loopback TCP, a raw libp2p stream, default gossipsub, embedded NATS, a bare
// gorilla/websocket broadcast server, badger) in one run, and writes a
// markdown report with the machine, the exact command, and for each
// comparison a table of medians with min and max and the ratios between
// confab and each baseline computed from the same run.
//
//	go run ./bench -size full                  # writes docs/benchmarks.md (-out)
//	go run ./bench -size tiny                  # seconds; what CI runs
//	go run ./bench -size full -only tcp,nats -runs 3
//
// Lifecycle: main isolates itself first (netnstest.Reexec re-executes the
// binary under `unshare -n` when any interface but loopback is visible, so
// every node listens on 127.0.0.1 in a namespace of its own), raises
// RLIMIT_NOFILE, then runs every selected scenario -runs times in sequence.
// Scenarios never run concurrently: each one owns the machine while it runs,
// and everything it starts (hosts, servers, goroutines, child processes,
// temp dirs) is stopped before Run returns. Every loop is bounded by a count
// and a deadline.
//
// Adding a scenario: write a func(ctx context.Context, size Size) (Result,
// error) and register it in an init function:
//
//	func init() {
//		Register(Scenario{Name: "confab-channel", Compare: CompareChannel, Run: runConfabChannel})
//	}
//
// Baseline is true only for the reference systems; every non-baseline
// scenario in a comparison gets one ratio column per baseline in the same
// comparison. Metric names are the rows of the comparison's table, so a
// confab scenario reports the same metric names as its baselines (use the
// helpers: measureChannel for channel delivery, measureFanout for WebSocket
// fan-out, topology for who connects to whom).
//
// The registry is filled by init functions and read-only afterwards;
// nothing here is meant for concurrent use except where a type says so.
package main
