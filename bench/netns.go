package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"
)

// This duplicates internal/netnstest.Main for a non-test binary (Main takes a
// *testing.M). The two should become one helper with an exported
// `Reexec() (exited bool, code int, err error)`-style function.

const netnsMarker = "CONFAB_BENCH_NETNS_CHILD"

const netnsSetup = `ip link set lo up && ip link set lo multicast on && (ip route add 224.0.0.0/4 dev lo 2>/dev/null || true) && exec "$0" "$@"`

// isolated reports whether loopback is the only network interface visible.
func isolated() bool {
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

// ensureIsolated returns nil when the process already runs in a namespace
// with only loopback. Otherwise it re-executes this binary with the same
// arguments under `unshare -n` (root only), waits, and returns an exitError
// carrying the child's exit code: the caller must exit with it.
func ensureIsolated() error {
	if isolated() {
		return nil
	}
	if os.Getenv(netnsMarker) != "" {
		return errors.New("bench: still see non-loopback interfaces after unshare -n; refusing to start nodes")
	}
	if os.Geteuid() != 0 {
		return errors.New("bench: nodes run in their own network namespace, which needs root (unshare -n); run as root or under `unshare -rn`")
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("bench: find own executable: %w", err)
	}
	args := append([]string{"-n", "sh", "-c", netnsSetup, exe}, os.Args[1:]...)
	cmd := exec.Command("unshare", args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), netnsMarker+"=1")
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return exitError(ee.ExitCode())
	}
	if err != nil {
		return fmt.Errorf("bench: unshare -n: %w", err)
	}
	return exitError(0)
}

// exitError tells main that a re-executed child already ran and exited.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("bench: child exited with status %d", int(e)) }

// raiseNoFile lifts RLIMIT_NOFILE so tens of thousands of sockets fit: to
// want when running as root (which may raise the hard limit), else to the
// hard limit. It returns the soft limit in effect.
func raiseNoFile(want uint64) uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	if lim.Cur >= want {
		return lim.Cur
	}
	if lim.Max < want {
		try := syscall.Rlimit{Cur: want, Max: want}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &try) == nil {
			return want
		}
	}
	lim.Cur = lim.Max
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	return lim.Cur
}
