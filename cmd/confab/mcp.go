package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spf13/cobra"

	"github.com/confabhq/confab/agent"
	"github.com/confabhq/confab/mcpserver"
	"github.com/confabhq/confab/wsgateway"
)

func mcpCmd(g *globals) *cobra.Command {
	var (
		noStart  bool
		logLevel string
		upFlags  = map[string]*string{"name": new(string), "caps": new(string), "desc": new(string), "join": new(string)}
		listen   []string
		rdv      []string
		noMDNS   bool
	)
	c := &cobra.Command{
		Use:   "mcp",
		Short: "Serve MCP on stdio for a coding agent (starts this home's node in the background if none runs)",
		Long: `Serve the Model Context Protocol on stdin/stdout, so a coding agent can use
confab through tools (whoami, who, send, read, history, join, leave).

Add it to Claude Code with:  claude mcp add confab -- confab mcp

It attaches to the node running for the home; if none runs it starts one in
the background (as "confab up --background" would, with the --name, --caps,
--join, --listen, --rendezvous and --no-mdns given here), creating the
identity on first use. Only MCP messages are written to stdout; logs go to
stderr.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Only protocol messages may reach stdout: keep the real stdout for
			// the transport and point everything else at stderr.
			proto := os.Stdout
			os.Stdout = os.Stderr
			defer func() { os.Stdout = proto }()
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %v", err)
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
			home, err := agent.ResolveHome(g.home)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if _, err := nodeInfo(ctx, home); err != nil {
				if noStart {
					return fmt.Errorf("no confab node is running for home %s; start one with: confab up --background --home %s", home, home)
				}
				args := []string{"up", "--home", home}
				for name, v := range upFlags {
					if *v != "" {
						args = append(args, "--"+name, *v)
					}
				}
				for _, l := range listen {
					args = append(args, "--listen", l)
				}
				for _, r := range rdv {
					args = append(args, "--rendezvous", r)
				}
				if noMDNS {
					args = append(args, "--no-mdns")
				}
				info, pid, err := startBackground(ctx, home, args)
				if err != nil {
					return err
				}
				log.Info("started confab node in the background", "id", info.ID, "pid", pid, "home", home)
			}
			sock := "unix://" + agent.SocketPath(home)
			srv, err := mcpserver.New(mcpserver.Config{
				Dial: func(ctx context.Context) (mcpserver.Node, error) {
					c, err := wsgateway.Dial(ctx, sock)
					if err != nil {
						return nil, err
					}
					return c, nil
				},
				Home:   home,
				Logger: log,
			})
			if err != nil {
				return err
			}
			err = srv.Run(ctx, &mcp.IOTransport{Reader: os.Stdin, Writer: proto})
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		},
	}
	f := c.Flags()
	f.BoolVar(&noStart, "no-start", false, "fail instead of starting a node when none runs")
	f.StringVar(&logLevel, "log-level", "warn", "log level on stderr: debug, info, warn, error")
	f.StringVar(upFlags["name"], "name", "", "display name, when starting a node")
	f.StringVar(upFlags["caps"], "caps", "", "capabilities, comma-separated, when starting a node")
	f.StringVar(upFlags["desc"], "desc", "", "description for the agent's card, when starting a node")
	f.StringVar(upFlags["join"], "join", "", "channels to join, comma-separated, when starting a node")
	f.StringArrayVar(&listen, "listen", nil, "multiaddr to listen on, when starting a node (repeatable)")
	f.StringArrayVar(&rdv, "rendezvous", nil, "rendezvous multiaddr, when starting a node (repeatable)")
	f.BoolVar(&noMDNS, "no-mdns", false, "turn off LAN discovery, when starting a node")
	return c
}
