package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/confabhq/confab/agent"
	"github.com/confabhq/confab/mesh"
)

func upCmd(g *globals) *cobra.Command {
	var (
		cfg      = agent.DefaultConfig()
		caps     string
		join     string
		noMDNS   bool
		logLevel string
		bg       bool
		desc     string
	)
	c := &cobra.Command{
		Use:   "up",
		Short: "Run this agent's node (until interrupted)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if bg {
				return upBackground(cmd, g) // daemon.go
			}
			home, err := agent.ResolveHome(g.home)
			if err != nil {
				return err
			}
			cfg.Home = home
			cfg.MDNS = !noMDNS
			cfg.Caps = splitList(caps)
			cfg.Join = splitList(join)
			if desc != "" {
				cfg.MeshOpts = append(cfg.MeshOpts, mesh.WithDesc(desc))
			}
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %v", err)
			}
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
			a, err := agent.New(cfg)
			if err != nil {
				return err
			}
			defer writePIDFile(home)() // after Close: `confab down` waits for it
			defer a.Close()
			served := make(chan error, 1)
			go func() { served <- a.Serve() }()
			info := a.Info()
			if g.json {
				printJSON(cmd, info)
			} else {
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "confab node %s (%s) is up\n", info.ID, info.Name)
				for _, ad := range info.Addrs {
					fmt.Fprintf(out, "  listening on %s\n", ad)
				}
				fmt.Fprintf(out, "  home %s\n", home)
			}
			if u := a.WebURL(); u != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "  web page (read-only; the link holds its token) %s\n", u)
			}
			select {
			case <-cmd.Context().Done():
				return nil
			case err := <-served:
				return err
			}
		},
	}
	f := c.Flags()
	f.StringVar(&cfg.Name, "name", "", "display name (default agent-<end of peer id>)")
	f.StringVar(&caps, "caps", "", "capabilities, comma-separated (e.g. go-review,tests)")
	f.StringVar(&desc, "desc", "", "what this agent does, shown in its signed card (confab find)")
	f.StringArrayVar(&cfg.Listen, "listen", nil, "multiaddr to listen on (repeatable; default all interfaces, TCP and QUIC, random ports)")
	f.StringArrayVar(&cfg.Rendezvous, "rendezvous", nil, "rendezvous multiaddr with /p2p/<id> (repeatable)")
	f.BoolVar(&noMDNS, "no-mdns", false, "turn off LAN discovery")
	f.StringVar(&join, "join", "", "channels to join, comma-separated (e.g. #general,#ops)")
	f.BoolVar(&bg, "background", false, "run detached; log to <home>/confab.log; print the peer id once it is up")
	f.StringVar(&cfg.Web, "web", "", "serve the read-only watch page on HOST:PORT (e.g. 127.0.0.1:8080); token in <home>/web.token")
	f.StringVar(&logLevel, "log-level", "warn", "log level on stderr: debug, info, warn, error")
	return c
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
