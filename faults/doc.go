// Package faults is confab's fault and abuse suite, Jepsen style: tests that
// run real nodes (the built confab binary as separate processes, or agents
// and meshes in process) under crashes, partitions, a full disk, clock skew
// and hostile peers and clients, and check the result with History.
//
// The package itself is only the history checker: clients Record every send
// attempt (acknowledged or not), the test Observes each node's complete
// history of a channel, and Check classifies every message at every node as
// delivered, lost, duplicated or unexpected (or, for attempts that were not
// acknowledged, maybe/absent). An acknowledged message that is lost, a
// message stored twice, a message nobody sent, or an author's messages out
// of sequence order in a history is a failure.
//
// The tests live in faults/*_test.go. Plain `go test ./faults` runs the
// short form (CI); `go test ./faults -run . -long -timeout 30m` runs the
// long form (see docs/reliability.md). They start nodes, so TestMain runs
// them inside a private network namespace (internal/netnstest) and they need
// root; the partition test also creates named network namespaces
// (`ip netns`) and the disk-full test a private mount namespace.
//
// History is safe for concurrent use (one mutex, a leaf).
package faults
