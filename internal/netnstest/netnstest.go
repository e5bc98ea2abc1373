// Package netnstest keeps tests and benchmarks that start libp2p nodes on
// loopback.
//
// mDNS multicasts on every interface and libp2p dials every address it
// learns, so a node started on the host's own network namespace can send
// packets that leave the machine. A test package that starts nodes calls Main
// from its TestMain; a command that starts nodes (the bench harness) calls
// Reexec first thing in main. If the process can see any interface besides
// loopback, both re-execute the running binary, with the same arguments,
// inside a fresh network namespace (`unshare -n`, which needs root) whose only
// interface is lo, with multicast routed to it so mDNS still works between
// processes. Child processes (the built confab binary in end-to-end tests,
// the bench's idle-client process) inherit the namespace.
//
// Nothing here keeps state; Reexec and Main are meant to be called once, from
// the main goroutine, before anything else starts.
package netnstest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"testing"
)

// envMarker is set in the re-executed child so a failure to isolate cannot
// loop.
const envMarker = "CONFAB_NETNS_CHILD"

const setupLo = `ip link set lo up && ip link set lo multicast on && (ip route add 224.0.0.0/4 dev lo 2>/dev/null || true) && exec "$0" "$@"`

// Errors of Reexec.
var (
	// ErrNotIsolated: the re-executed child still sees other interfaces.
	ErrNotIsolated = errors.New("netnstest: still see non-loopback interfaces after unshare -n; refusing to start nodes")
	// ErrNeedRoot: isolation needs root (unshare -n) and the process is not.
	ErrNeedRoot = errors.New("netnstest: nodes run in their own network namespace, which needs root (unshare -n); run as root or inside `unshare -rn`")
)

// Reexec makes sure the process runs in a network namespace where loopback is
// the only interface. If it already does, Reexec returns (false, 0, nil) and
// the caller carries on. Otherwise it runs this binary again, with the same
// arguments, environment (plus a marker), stdin, stdout and stderr, under
// `unshare -n`, waits for it, and returns (true, its exit code, nil): the
// caller must then exit with that code without doing anything else. An error
// (ErrNeedRoot, ErrNotIsolated, or a failure to start unshare) means nothing
// ran and the caller must not start nodes.
func Reexec() (exited bool, code int, err error) {
	if Isolated() {
		return false, 0, nil
	}
	if os.Getenv(envMarker) != "" {
		return false, 0, ErrNotIsolated
	}
	if os.Geteuid() != 0 {
		return false, 0, ErrNeedRoot
	}
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	args := append([]string{"-n", "sh", "-c", setupLo, exe}, os.Args[1:]...)
	cmd := exec.Command("unshare", args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), envMarker+"=1")
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return true, ee.ExitCode(), nil
	}
	if err != nil {
		return false, 0, fmt.Errorf("netnstest: unshare -n: %w", err)
	}
	return true, 0, nil
}

// Main runs m inside an isolated network namespace, re-executing the test
// binary there when needed (see Reexec), and exits with the tests' status.
func Main(m *testing.M) {
	exited, code, err := Reexec()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if exited {
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// Isolated reports whether loopback is the only network interface visible.
func Isolated() bool {
	ifs, err := net.Interfaces()
	if err != nil {
		return false
	}
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback == 0 {
			return false
		}
	}
	return true
}
