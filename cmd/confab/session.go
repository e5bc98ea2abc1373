package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/wsgateway"
)

// Sessions: open, join (knock), approve, deny, close, knocks
// (docs/private.md).

func sessionCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "session",
		Short: "Hand a conversation to another agent: a key that only knocks, approved by the host",
	}
	c.AddCommand(sessionOpenCmd(g), sessionJoinCmd(g), sessionDecideCmd(g, true), sessionDecideCmd(g, false),
		sessionCloseCmd(g), sessionKnocksCmd(g))
	return c
}

func sessionOpenCmd(g *globals) *cobra.Command {
	var (
		topic, contextFile string
		ttl                time.Duration
	)
	c := &cobra.Command{
		Use:   "open --topic T [--context FILE|-]",
		Short: "Open a session: a private channel with a context snapshot; prints the session key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if topic == "" {
				return errors.New("--topic is required")
			}
			var text string
			if contextFile != "" {
				var r io.Reader
				if contextFile == "-" {
					r = bufio.NewReader(os.Stdin)
				} else {
					f, err := os.Open(contextFile)
					if err != nil {
						return fmt.Errorf("context: %w", err)
					}
					defer f.Close()
					r = f
				}
				b, err := io.ReadAll(io.LimitReader(r, int64(mesh.MaxPrivateText)+1))
				if err != nil {
					return fmt.Errorf("context: %w", err)
				}
				if len(b) > mesh.MaxPrivateText {
					return fmt.Errorf("context too large: over %d bytes", mesh.MaxPrivateText)
				}
				text = string(b)
			}
			if ttl < 0 {
				return errors.New("--ttl must not be negative")
			}
			return withNode(cmd, g, func(c *wsgateway.Client) error {
				s, err := c.OpenSession(cmd.Context(), topic, text, ttl)
				if err != nil {
					return err
				}
				if g.json {
					printJSON(cmd, map[string]any{"id": s.Channel.ID, "key": s.Key, "topic": s.Channel.Topic,
						"expires": s.Expires, "context_id": s.ContextID})
					return nil
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "session %s open until %s; give this key to the joiner (it only knocks):\n",
					s.Channel.ID, time.UnixMilli(s.Expires).Format(time.RFC3339))
				fmt.Fprintln(cmd.OutOrStdout(), s.Key)
				return nil
			})
		},
	}
	c.Flags().StringVar(&topic, "topic", "", "what the session is about")
	c.Flags().StringVar(&contextFile, "context", "", "file with the context snapshot posted first (- reads stdin)")
	c.Flags().DurationVar(&ttl, "ttl", 0, "how long the key is valid (default 24h)")
	return c
}

func sessionJoinCmd(g *globals) *cobra.Command {
	var wait time.Duration
	c := &cobra.Command{
		Use:   "join KEY",
		Short: "Knock with a session key; on approval the keys and the whole backlog arrive",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := mesh.ParseSessionKey(args[0]); err != nil {
				return fmt.Errorf("%q is not a session key (cfs1_...)", args[0])
			}
			if wait < 0 || wait > wsgateway.MaxJoinWait*time.Second {
				return fmt.Errorf("--wait must be 0 to %ds", wsgateway.MaxJoinWait)
			}
			return withNode(cmd, g, func(c *wsgateway.Client) error {
				r, err := c.JoinSession(cmd.Context(), args[0], wait, func() {
					fmt.Fprintln(cmd.ErrOrStderr(), "knocked; waiting for the host to approve")
				})
				if err != nil {
					return fmt.Errorf("session join: %w", err)
				}
				if g.json {
					printJSON(cmd, map[string]any{"id": r.Channel.ID, "topic": r.Channel.Topic, "host": r.Channel.Host,
						"backlog": r.Backlog, "members": r.Channel.Members})
					return nil
				}
				fmt.Fprintf(cmd.OutOrStdout(), "approved: joined %s (%s), %d messages of backlog; read them with: confab history %s\n",
					r.Channel.ID, r.Channel.Topic, r.Backlog, r.Channel.ID)
				return nil
			})
		},
	}
	c.Flags().DurationVar(&wait, "wait", 0, "give up after this long (default and maximum 15m)")
	return c
}

func sessionDecideCmd(g *globals, approve bool) *cobra.Command {
	use, short := "approve AGENT", "Let a knocking agent in: it gets the keys and the backlog"
	if !approve {
		use, short = "deny AGENT", "Refuse a knocking agent"
	}
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withNode(cmd, g, func(c *wsgateway.Client) error {
				if !approve {
					if err := c.Deny(cmd.Context(), args[0]); err != nil {
						return err
					}
					if g.json {
						printJSON(cmd, map[string]any{"agent": args[0], "denied": true})
					} else {
						fmt.Fprintf(cmd.OutOrStdout(), "denied %s\n", args[0])
					}
					return nil
				}
				p, err := c.Approve(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				printPrivate(cmd, g, "approved "+args[0]+";", p)
				return nil
			})
		},
	}
}

func sessionCloseCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "close [~ID]",
		Short: "Close a session this agent hosts (the only one by default): its key stops working",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ch := ""
			if len(args) == 1 {
				ch = args[0]
				if err := checkChannel(ch); err != nil {
					return err
				}
			}
			return withNode(cmd, g, func(c *wsgateway.Client) error {
				id, err := c.CloseSession(cmd.Context(), ch)
				if err != nil {
					return err
				}
				if g.json {
					printJSON(cmd, map[string]any{"id": id, "closed": true})
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "closed session %s\n", id)
				}
				return nil
			})
		},
	}
}

func sessionKnocksCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "knocks",
		Short: "List agents knocking on sessions this agent hosts",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withNode(cmd, g, func(c *wsgateway.Client) error {
				ks, err := c.Knocks(cmd.Context())
				if err != nil {
					return err
				}
				if g.json {
					for _, k := range ks {
						printJSON(cmd, k)
					}
					return nil
				}
				if len(ks) == 0 {
					fmt.Fprintln(cmd.OutOrStdout(), "no knocks")
					return nil
				}
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "NAME\tSESSION\tTOPIC\tSINCE\tFROM")
				for _, k := range ks {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", k.Name, k.Channel, k.Topic, time.UnixMilli(k.TS).Format(time.TimeOnly), k.From)
				}
				return w.Flush()
			})
		},
	}
}
