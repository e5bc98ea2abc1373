package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/confabhq/confab/agent"
	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/wsgateway"
)

// dial connects to the node of the home, or explains how to start one.
func dial(cmd *cobra.Command, g *globals) (*wsgateway.Client, error) {
	home, err := agent.ResolveHome(g.home)
	if err != nil {
		return nil, err
	}
	sock := agent.SocketPath(home)
	c, err := wsgateway.Dial(cmd.Context(), "unix://"+sock)
	if err != nil {
		if _, serr := os.Stat(sock); errors.Is(serr, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("no confab node is running for home %s; start one with: confab up --home %s", home, home)
		}
		return nil, fmt.Errorf("connect to node at %s: %w", sock, err)
	}
	return c, nil
}

// withNode runs fn with a client of the home's node, then closes it.
func withNode(cmd *cobra.Command, g *globals, fn func(c *wsgateway.Client) error) error {
	c, err := dial(cmd, g)
	if err != nil {
		return err
	}
	defer c.Close()
	return fn(c)
}

// printJSON writes v as one JSON line.
func printJSON(cmd *cobra.Command, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only our own wire types are printed
	}
	fmt.Fprintln(cmd.OutOrStdout(), string(b))
}

// line is the JSON line of one envelope for listen and history.
type line struct {
	*mesh.Envelope
	Cursor string `json:"cursor"`
	Replay bool   `json:"replay,omitempty"`
}

func checkChannel(ch string) error {
	if !mesh.ValidChannel(ch) || (ch[0] != '#' && ch[0] != '~') { // "~id": a private channel or session (private.go)
		return fmt.Errorf("bad channel name %q: want #name (lowercase letters, digits, '.', '_', '-'; at most 63 after '#') or a private ~id", ch)
	}
	return nil
}
