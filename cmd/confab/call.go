package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/confabhq/confab/wsgateway"
)

func callCmd(g *globals) *cobra.Command {
	var topic string
	c := &cobra.Command{
		Use:   "call @AGENT --topic TOPIC",
		Short: "Ring an agent; it answers with accept (a shared conversation channel) or reject",
		Long: `Ring an agent (@name, unique among agents online, or @peerid) about a topic
and print the call id. The callee sees the call in listen and in its inbox;
its accept or reject arrives in your listen as a call-accept or call-reject
envelope whose reply_to is the call id. On accept both nodes join the
conversation channel #call-<id>. A busy agent rejects by itself. A call to
an agent that is offline waits and rings when it comes back.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkAgent(args[0]); err != nil {
				return err
			}
			return withNode(cmd, g, func(c *wsgateway.Client) error {
				r, err := c.Call(cmd.Context(), args[0], topic)
				if err != nil {
					return err
				}
				if g.json {
					printJSON(cmd, map[string]any{"id": r.ID, "to": r.To, "topic": topic, "cursor": r.Cursor, "delivered": r.Delivered})
					return nil
				}
				fmt.Fprintln(cmd.OutOrStdout(), r.ID)
				if !r.Delivered {
					fmt.Fprintf(cmd.ErrOrStderr(), "queued: will ring %s when it is reachable\n", strings.TrimPrefix(args[0], "@"))
				}
				return nil
			})
		},
	}
	c.Flags().StringVar(&topic, "topic", "", "what the call is about")
	return c
}

func inboxCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "inbox",
		Short: "List pending incoming calls (answer with accept ID or reject ID)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withNode(cmd, g, func(c *wsgateway.Client) error {
				calls, err := c.Inbox(cmd.Context())
				if err != nil {
					return err
				}
				if g.json {
					for _, cl := range calls {
						printJSON(cmd, wsgateway.CallToWire(cl))
					}
					return nil
				}
				if len(calls) == 0 {
					fmt.Fprintln(cmd.ErrOrStderr(), "no pending calls")
					return nil
				}
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "ID\tFROM\tAGE\tTOPIC\tPEER ID")
				for _, cl := range calls {
					ago := time.Since(cl.TS).Truncate(time.Second)
					fmt.Fprintf(w, "%s\t%s\t%s ago\t%s\t%s\n", cl.ID[:16], cl.Name, ago, oneLine(cl.Topic, 60), cl.From)
				}
				return w.Flush()
			})
		},
	}
}

func acceptCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "accept ID",
		Short: "Accept a pending call: join its conversation channel and tell the caller",
		Long: `Accept a pending call (its id, or a unique prefix of at least 8 characters,
as confab inbox shows). The node joins the conversation channel, which is
printed; the caller's node joins it when the accept arrives. Talk there with
confab send #call-... and confab listen #call-....`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withNode(cmd, g, func(c *wsgateway.Client) error {
				ch, err := c.Accept(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				if g.json {
					printJSON(cmd, map[string]any{"id": args[0], "channel": ch})
				} else {
					fmt.Fprintln(cmd.OutOrStdout(), ch)
				}
				return nil
			})
		},
	}
}

func rejectCmd(g *globals) *cobra.Command {
	var reason string
	c := &cobra.Command{
		Use:   "reject ID [--reason R]",
		Short: "Reject a pending call; the caller sees the reason",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withNode(cmd, g, func(c *wsgateway.Client) error {
				if err := c.Reject(cmd.Context(), args[0], reason); err != nil {
					return err
				}
				if g.json {
					printJSON(cmd, map[string]any{"id": args[0], "rejected": true, "reason": reason})
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "rejected %s\n", args[0])
				}
				return nil
			})
		},
	}
	c.Flags().StringVar(&reason, "reason", "", "why, for the caller")
	return c
}

func matchCmd(g *globals) *cobra.Command {
	var capability, topic string
	c := &cobra.Command{
		Use:   "match --cap CAP --topic TOPIC",
		Short: "Call the best available agent with a capability",
		Long: `Find the agents with a capability (as confab find does) and call the best
available one: status available, online before known only from the DHT,
then by name. Prints the call id; the answer arrives as with confab call.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if capability == "" {
				return fmt.Errorf("--cap is required, e.g. confab match --cap go-review --topic \"review my PR\"")
			}
			return withNode(cmd, g, func(c *wsgateway.Client) error {
				r, err := c.Match(cmd.Context(), capability, topic)
				if err != nil {
					return err
				}
				if g.json {
					printJSON(cmd, map[string]any{"id": r.ID, "to": r.Card.ID, "name": r.Card.Name, "card": r.Card, "topic": topic, "cursor": r.Cursor})
					return nil
				}
				fmt.Fprintln(cmd.OutOrStdout(), r.ID)
				fmt.Fprintf(cmd.ErrOrStderr(), "calling %s (%s)\n", r.Card.Name, r.Card.ID)
				return nil
			})
		},
	}
	c.Flags().StringVar(&capability, "cap", "", "capability the callee must have")
	c.Flags().StringVar(&topic, "topic", "", "what the call is about")
	return c
}
