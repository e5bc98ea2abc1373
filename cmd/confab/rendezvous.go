package main

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/confabhq/confab/agent"
	"github.com/confabhq/confab/rendezvous"
)

// rendezvousInfo is what `confab rendezvous --json` prints on start.
type rendezvousInfo struct {
	ID      string   `json:"id"`
	Addrs   []string `json:"addrs"`
	WS      string   `json:"ws,omitempty"`
	Metrics string   `json:"metrics,omitempty"`
	Web     string   `json:"web,omitempty"`
}

func rendezvousCmd(g *globals) *cobra.Command {
	var (
		cfg        = rendezvous.DefaultConfig()
		secretFile string
		logLevel   string
	)
	c := &cobra.Command{
		Use:   "rendezvous",
		Short: "Run a rendezvous node: relay, DHT bootstrap, history archive and WebSocket gateway (until interrupted)",
		Long: `Run a rendezvous node. Agents on other networks reach each other through it
(confab up --rendezvous ADDR, with one of the addresses it prints), and thin
clients use its WebSocket gateway (--ws). Its data directory is --home if given,
else the default home's "rendezvous" subfolder.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir := g.home
			if dir == "" {
				home, err := agent.ResolveHome("")
				if err != nil {
					return err
				}
				dir = filepath.Join(home, "rendezvous")
			}
			dir, err := filepath.Abs(dir)
			if err != nil {
				return err
			}
			cfg.Dir = dir
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %v", err)
			}
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
			if secretFile != "" {
				if cfg.JoinSecret, err = readSecret(secretFile); err != nil {
					return err
				}
			}
			r, err := rendezvous.New(cfg)
			if err != nil {
				return err
			}
			defer r.Close()
			info := rendezvousInfo{ID: r.ID(), Addrs: r.Addrs()}
			if a := r.WSAddr(); a != "" {
				info.WS = "ws://" + a + "/"
			}
			info.Web = r.WebURL()
			if a := r.MetricsAddr(); a != "" {
				info.Metrics = "http://" + a + "/metrics"
			}
			if g.json {
				printJSON(cmd, info)
			} else {
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "confab rendezvous %s is up\n", info.ID)
				for _, a := range info.Addrs {
					fmt.Fprintf(out, "  %s\n", a)
				}
				if info.WS != "" {
					fmt.Fprintf(out, "  gateway %s\n", info.WS)
				}
				if info.Web != "" {
					fmt.Fprintf(out, "  web page %s\n", info.Web)
				}
				if info.Metrics != "" {
					fmt.Fprintf(out, "  metrics %s\n", info.Metrics)
				}
				fmt.Fprintf(out, "  data %s\n", dir)
			}
			<-cmd.Context().Done()
			return nil
		},
	}
	f := c.Flags()
	f.StringArrayVar(&cfg.Listen, "listen", cfg.Listen, "libp2p multiaddr to listen on (repeatable)")
	f.StringVar(&cfg.WS, "ws", "", "serve the WebSocket gateway for thin clients on HOST:PORT (default off)")
	f.StringVar(&cfg.Web, "web", "", "serve the read-only watch page on HOST:PORT (prints its URL with the token)")
	f.StringVar(&cfg.Metrics, "metrics", "", "serve /healthz and Prometheus /metrics on HOST:PORT (default off; keep it private)")
	f.StringVar(&secretFile, "join-secret-file", "", "file holding a secret gateway clients must present")
	f.StringVar(&cfg.Name, "name", cfg.Name, "display name")
	f.IntVar(&cfg.ConnPerIP, "conn-per-ip", cfg.ConnPerIP, "libp2p connections accepted per IPv4 address")
	f.IntVar(&cfg.MaxChannels, "max-channels", cfg.MaxChannels, "channels the archive follows at most")
	f.StringVar(&logLevel, "log-level", "info", "log level on stderr: debug, info, warn, error")
	return c
}

// readSecret reads a join secret file: its content without surrounding
// whitespace, which must not be empty.
func readSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--join-secret-file: %w", err)
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return nil, errors.New("--join-secret-file: the file is empty")
	}
	return b, nil
}
