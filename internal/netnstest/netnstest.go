// Package netnstest keeps tests that start libp2p nodes on loopback.
//
// mDNS multicasts on every interface and libp2p dials every address it
// learns, so a node started on the host's own network namespace can send
// packets that leave the machine. A test package that starts nodes calls Main
// from its TestMain: if the process can see any interface besides loopback,
// Main re-executes the test binary inside a fresh network namespace
// (`unshare -n`, which needs root) whose only interface is lo, with multicast
// routed to it so mDNS still works between processes. Child processes (the
// built confab binary in end-to-end tests) inherit the namespace.
package netnstest

import (
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

// Main runs m inside an isolated network namespace, re-executing the test
// binary there when needed, and exits with the tests' status.
func Main(m *testing.M) {
	if Isolated() {
		os.Exit(m.Run())
	}
	if os.Getenv(envMarker) != "" {
		fmt.Fprintln(os.Stderr, "netnstest: still see non-loopback interfaces after unshare -n; refusing to start nodes")
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "netnstest: tests that start nodes run in their own network namespace and need root (unshare -n); run them as root or inside `unshare -rn`")
		os.Exit(2)
	}
	args := append([]string{"-n", "sh", "-c", setupLo, os.Args[0]}, os.Args[1:]...)
	cmd := exec.Command("unshare", args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), envMarker+"=1")
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			os.Exit(ee.ExitCode())
		}
		fmt.Fprintf(os.Stderr, "netnstest: unshare -n: %v\n", err)
		os.Exit(2)
	}
	os.Exit(0)
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
