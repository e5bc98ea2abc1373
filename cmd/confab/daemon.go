package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/confabhq/confab/agent"
	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/wsgateway"
)

// Files of a background node in its home.
const (
	logFile = "confab.log" // stdout and stderr of `confab up --background`
	pidFile = "confab.pid" // pid of the running node, written by `confab up`
)

const (
	maxLog       = 8 << 20          // confab.log is moved to confab.log.1 at start beyond this
	startTimeout = 60 * time.Second // for a background node to answer on its socket
	stopTimeout  = 30 * time.Second // for a node to stop after SIGTERM
)

// nodeInfo returns the info of the node running for home, or an error if
// none answers on its socket.
func nodeInfo(ctx context.Context, home string) (mesh.Info, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := wsgateway.Dial(ctx, "unix://"+agent.SocketPath(home))
	if err != nil {
		return mesh.Info{}, err
	}
	defer c.Close()
	return c.Info(ctx)
}

// writePIDFile records this process as the node of home and returns the
// cleanup that removes the file if it still names this process. `confab up`
// defers it so the file disappears only after the node has closed its store.
func writePIDFile(home string) func() {
	path := filepath.Join(home, pidFile)
	pid := strconv.Itoa(os.Getpid())
	if err := os.WriteFile(path, []byte(pid+"\n"), 0o600); err != nil {
		fmt.Fprintf(os.Stderr, "confab: write %s: %v\n", path, err)
		return func() {}
	}
	return func() {
		if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == pid {
			os.Remove(path)
		}
	}
}

// readPID returns the pid in home's pid file, 0 if there is none.
func readPID(home string) int {
	b, err := os.ReadFile(filepath.Join(home, pidFile))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// startBackground starts `confab <args>` (an `up` command line) detached in
// its own session with its output appended to <home>/confab.log, and waits
// until the node answers on its socket. The child is reaped by a goroutine if
// this process outlives it.
func startBackground(ctx context.Context, home string, args []string) (mesh.Info, int, error) {
	exe, err := os.Executable()
	if err != nil {
		return mesh.Info{}, 0, fmt.Errorf("start node: %w", err)
	}
	if err := os.MkdirAll(home, 0o700); err != nil {
		return mesh.Info{}, 0, fmt.Errorf("start node: home: %w", err)
	}
	logPath := filepath.Join(home, logFile)
	if st, err := os.Stat(logPath); err == nil && st.Size() > maxLog {
		os.Rename(logPath, logPath+".1")
	}
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return mesh.Info{}, 0, fmt.Errorf("start node: log: %w", err)
	}
	defer lf.Close()
	fmt.Fprintf(lf, "--- %s confab %s\n", time.Now().UTC().Format(time.RFC3339), strings.Join(args, " "))
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return mesh.Info{}, 0, fmt.Errorf("start node: %w", err)
	}
	defer devnull.Close()
	child := exec.Command(exe, args...)
	child.Stdin, child.Stdout, child.Stderr = devnull, lf, lf
	child.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := child.Start(); err != nil {
		return mesh.Info{}, 0, fmt.Errorf("start node: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- child.Wait() }()
	deadline := time.NewTimer(startTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if info, err := nodeInfo(ctx, home); err == nil {
			return info, child.Process.Pid, nil
		}
		select {
		case err := <-exited:
			return mesh.Info{}, 0, fmt.Errorf("node exited during start (%v): %s", err, lastLine(logPath))
		case <-deadline.C:
			return mesh.Info{}, 0, fmt.Errorf("node did not answer on %s within %v; see %s", agent.SocketPath(home), startTimeout, logPath)
		case <-ctx.Done():
			return mesh.Info{}, 0, ctx.Err()
		case <-tick.C:
		}
	}
}

// lastLine returns the last non-empty line of a log file, for error messages.
func lastLine(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return "see " + path
	}
	defer f.Close()
	st, _ := f.Stat()
	off := max(st.Size()-4096, 0)
	b, _ := io.ReadAll(io.NewSectionReader(f, off, st.Size()-off))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.TrimSpace(lines[len(lines)-1]) + " (log " + path + ")"
}

// upBackground runs `confab up --background`: it starts the same command
// line without --background as a detached node and returns once it answers.
func upBackground(cmd *cobra.Command, g *globals) error {
	home, err := agent.ResolveHome(g.home)
	if err != nil {
		return err
	}
	if info, err := nodeInfo(cmd.Context(), home); err == nil {
		if g.json {
			printJSON(cmd, map[string]any{"id": info.ID, "name": info.Name, "pid": readPID(home), "home": home, "already_running": true})
		} else {
			fmt.Fprintf(cmd.OutOrStdout(), "confab node %s (%s) is already running (home %s)\n", info.ID, info.Name, home)
		}
		return nil
	}
	var args []string
	for _, a := range os.Args[1:] {
		if a == "--background" || a == "--background=true" {
			continue
		}
		args = append(args, a)
	}
	args = append(args, "--home", home)
	info, pid, err := startBackground(cmd.Context(), home, args)
	if err != nil {
		return err
	}
	if g.json {
		printJSON(cmd, map[string]any{"id": info.ID, "name": info.Name, "pid": pid, "home": home, "addrs": info.Addrs})
	} else {
		fmt.Fprintf(cmd.OutOrStdout(), "%s\n", info.ID)
		fmt.Fprintf(cmd.ErrOrStderr(), "confab node %s (%s) is up in the background, pid %d; log %s\n", info.Name, info.ID, pid, filepath.Join(home, logFile))
	}
	return nil
}

func statusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status [available|busy|away]",
		Short: "Say whether this home's node is running, and its id, name, channels and pid; or set its status",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				return setStatus(cmd, g, args[0]) // direct.go
			}
			home, err := agent.ResolveHome(g.home)
			if err != nil {
				return err
			}
			info, err := nodeInfo(cmd.Context(), home)
			running := err == nil
			pid := 0
			if running {
				pid = readPID(home)
			}
			if g.json {
				out := map[string]any{"running": running, "home": home}
				if running {
					out["id"], out["name"], out["channels"], out["caps"], out["pid"] = info.ID, info.Name, info.Channels, info.Caps, pid
				}
				printJSON(cmd, out)
				return nil
			}
			w := cmd.OutOrStdout()
			if !running {
				fmt.Fprintf(w, "not running (home %s)\n", home)
				return nil
			}
			fmt.Fprintf(w, "running\nid:       %s\nname:     %s\nchannels: %s\npid:      %d\nhome:     %s\n", info.ID, info.Name, strings.Join(info.Channels, ","), pid, home)
			return nil
		},
	}
}

func downCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Stop this home's running node",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			home, err := agent.ResolveHome(g.home)
			if err != nil {
				return err
			}
			info, err := nodeInfo(cmd.Context(), home)
			if err != nil {
				return fmt.Errorf("no confab node is running for home %s", home)
			}
			pid := readPID(home)
			if pid == 0 {
				return fmt.Errorf("node %s is running but %s is missing; stop it from where it was started", info.ID, filepath.Join(home, pidFile))
			}
			if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
				return fmt.Errorf("stop node pid %d: %w", pid, err)
			}
			deadline := time.Now().Add(stopTimeout)
			for {
				// The node removes its pid file after it has closed its store,
				// so a new `confab up` can start as soon as this returns.
				if readPID(home) != pid || errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
					break
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("node pid %d did not stop within %v", pid, stopTimeout)
				}
				select {
				case <-cmd.Context().Done():
					return cmd.Context().Err()
				case <-time.After(50 * time.Millisecond):
				}
			}
			if g.json {
				printJSON(cmd, map[string]any{"id": info.ID, "stopped": true, "pid": pid})
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "stopped %s (pid %d)\n", info.ID, pid)
			}
			return nil
		},
	}
}
