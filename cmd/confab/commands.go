package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/confabhq/confab/wsgateway"

	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/redact"
)

func idCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "id",
		Short: "Print this agent's peer id, name, capabilities and listen addresses",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withNode(cmd, g, func(c *wsgateway.Client) error {
				info, err := c.Info(cmd.Context())
				if err != nil {
					return err
				}
				if g.json {
					printJSON(cmd, info)
					return nil
				}
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "id:       %s\nname:     %s\ncaps:     %s\nchannels: %s\n", info.ID, info.Name, strings.Join(info.Caps, ","), strings.Join(info.Channels, ","))
				for _, a := range info.Addrs {
					fmt.Fprintf(out, "addr:     %s\n", a)
				}
				return nil
			})
		},
	}
}

func joinCmd(g *globals, join bool) *cobra.Command {
	use, short := "join #CHANNEL", "Join a channel"
	if !join {
		use, short = "leave #CHANNEL", "Leave a channel (its history stays)"
	}
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ch := args[0]
			if err := checkChannel(ch); err != nil {
				return err
			}
			return withNode(cmd, g, func(c *wsgateway.Client) error {
				var err error
				verb := "joined"
				if join {
					err = c.Join(cmd.Context(), ch)
				} else {
					verb = "left"
					err = c.Leave(cmd.Context(), ch)
				}
				if err != nil {
					return err
				}
				if g.json {
					printJSON(cmd, map[string]any{"channel": ch, "joined": join})
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", verb, ch)
				}
				return nil
			})
		},
	}
}

func sendCmd(g *globals) *cobra.Command {
	var kind, replyTo string
	c := &cobra.Command{
		Use:   "send TARGET TEXT",
		Short: "Send TEXT to #channel or @agent (TEXT - reads stdin)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			target, text := args[0], args[1]
			direct := strings.HasPrefix(target, "@") // direct.go
			if direct {
				if err := checkAgent(target); err != nil {
					return err
				}
			} else if err := checkChannel(target); err != nil {
				return err
			}
			if text == "-" {
				b, err := io.ReadAll(io.LimitReader(bufio.NewReader(os.Stdin), mesh.MaxContentLen+1))
				if err != nil {
					return fmt.Errorf("read stdin: %w", err)
				}
				text = string(b)
			}
			text, found := redact.Redact(text, os.Environ())
			kinds := redact.Kinds(found)
			if len(found) > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "confab: redacted %d secret(s): %s\n", len(found), strings.Join(kinds, ", "))
			}
			if len(text) > mesh.MaxContentLen {
				return fmt.Errorf("message too large: over %d bytes (limit %d)", len(text)-1, mesh.MaxContentLen)
			}
			return withNode(cmd, g, func(c *wsgateway.Client) error {
				if direct {
					return sendDirect(cmd, g, c, target, kind, text, replyTo, kinds)
				}
				ack, err := c.Send(cmd.Context(), target, kind, text, replyTo)
				if err != nil {
					return err
				}
				if g.json {
					out := map[string]any{"id": ack.ID, "channel": target, "seq": ack.Seq, "cursor": ack.Cursor}
					if len(kinds) > 0 {
						out["redacted"] = kinds
					}
					printJSON(cmd, out)
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "sent %s\n", ack.ID)
				}
				return nil
			})
		},
	}
	c.Flags().StringVar(&kind, "kind", "msg", "envelope kind")
	c.Flags().StringVar(&replyTo, "reply-to", "", "id of the envelope this replies to")
	return c
}

func listenCmd(g *globals) *cobra.Command {
	var (
		since   string
		max     int
		timeout time.Duration
	)
	c := &cobra.Command{
		Use:   "listen [#CHANNEL...]",
		Short: "Print incoming envelopes as JSON lines (all joined channels by default)",
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, ch := range args {
				if err := checkChannel(ch); err != nil {
					return err
				}
			}
			if max < 0 || timeout < 0 {
				return fmt.Errorf("--max and --timeout must not be negative")
			}
			ctx := cmd.Context()
			if timeout > 0 {
				var cancel func()
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			return withNode(cmd, g, func(c *wsgateway.Client) error {
				events, err := c.Subscribe(ctx, args, since)
				if err != nil {
					return err
				}
				n := 0
				for {
					select {
					case <-ctx.Done():
						if cmd.Context().Err() != nil {
							return nil // interrupted: a normal end
						}
						return nil // --timeout reached
					case ev, ok := <-events:
						if !ok {
							if err := c.Err(); err != nil {
								return fmt.Errorf("listen ended: %w", err)
							}
							return nil
						}
						printJSON(cmd, line{Envelope: ev.Record.Env, Cursor: ev.Record.Cursor, Replay: ev.Replay})
						if n++; max > 0 && n >= max {
							return nil
						}
					}
				}
			})
		},
	}
	c.Flags().StringVar(&since, "since", "", "replay stored envelopes after this cursor first (0000000000000000: from the beginning)")
	c.Flags().IntVar(&max, "max", 0, "exit after N envelopes (0: no limit)")
	c.Flags().DurationVar(&timeout, "timeout", 0, "exit after this long (e.g. 30s; 0: no limit)")
	return c
}

func historyCmd(g *globals) *cobra.Command {
	var (
		limit  int
		before string
	)
	c := &cobra.Command{
		Use:   "history #CHANNEL",
		Short: "Print a channel's stored envelopes as JSON lines, oldest first",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkChannel(args[0]); err != nil {
				return err
			}
			if limit <= 0 || limit > 1000 {
				return fmt.Errorf("--limit must be 1 to 1000")
			}
			return withNode(cmd, g, func(c *wsgateway.Client) error {
				recs, _, err := c.History(cmd.Context(), args[0], before, limit)
				if err != nil {
					return err
				}
				for _, r := range recs {
					printJSON(cmd, line{Envelope: r.Env, Cursor: r.Cursor})
				}
				return nil
			})
		},
	}
	c.Flags().IntVar(&limit, "limit", 50, "how many envelopes (1 to 1000)")
	c.Flags().StringVar(&before, "before", "", "only envelopes before this cursor")
	return c
}

func whoCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "who [#CHANNEL]",
		Short: "List agents online (in a channel)",
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
				peers, err := c.Who(cmd.Context(), ch)
				if err != nil {
					return err
				}
				if g.json {
					for _, p := range peers {
						printJSON(cmd, p)
					}
					return nil
				}
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "NAME\tSTATUS\tLAST SEEN\tCAPS\tID")
				for _, p := range peers {
					ago := time.Since(p.LastSeen).Truncate(time.Second)
					fmt.Fprintf(w, "%s\t%s\t%s ago\t%s\t%s\n", p.Name, p.Status, ago, strings.Join(p.Caps, ","), p.ID)
				}
				return w.Flush()
			})
		},
	}
}
