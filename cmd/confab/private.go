package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/confabhq/confab/wsgateway"
)

// Private channels: create --private, invite, remove (docs/private.md).

func createCmd(g *globals) *cobra.Command {
	var private bool
	c := &cobra.Command{
		Use:   "create #NAME --private",
		Short: "Create an end-to-end encrypted private channel hosted by this agent",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !private {
				return fmt.Errorf("only private channels are created; for a public channel run: confab join %s", args[0])
			}
			if err := checkChannel(args[0]); err != nil || args[0][0] != '#' {
				return fmt.Errorf("bad channel name %q: want #name", args[0])
			}
			return withNode(cmd, g, func(c *wsgateway.Client) error {
				p, err := c.CreatePrivate(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				printPrivate(cmd, g, "created", p)
				return nil
			})
		},
	}
	c.Flags().BoolVar(&private, "private", false, "end-to-end encrypted; only invited members read it")
	return c
}

func memberCmd(g *globals, invite bool) *cobra.Command {
	use, short, verb := "invite #NAME @AGENT", "Give an agent the keys of a private channel this agent hosts", "invited"
	if !invite {
		use, short, verb = "remove #NAME @AGENT", "Take an agent out of a private channel and rotate its key", "removed"
	}
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkChannel(args[0]); err != nil {
				return err
			}
			if err := checkMember(args[1]); err != nil {
				return err
			}
			return withNode(cmd, g, func(c *wsgateway.Client) error {
				var (
					p   wsgateway.WirePrivate
					err error
				)
				if invite {
					p, err = c.Invite(cmd.Context(), args[0], args[1])
				} else {
					p, err = c.Remove(cmd.Context(), args[0], args[1])
				}
				if err != nil {
					return err
				}
				printPrivate(cmd, g, verb+" "+args[1]+";", p)
				return nil
			})
		},
	}
}

func printPrivate(cmd *cobra.Command, g *globals, verb string, p wsgateway.WirePrivate) {
	if g.json {
		printJSON(cmd, p)
		return
	}
	name := p.ID
	if p.Name != "" {
		name = p.Name + " (" + p.ID + ")"
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s %s, key epoch %d, members: %s\n", verb, name, p.Epoch, strings.Join(p.Members, ","))
}

// checkMember checks an @agent argument (@name or @peerid).
func checkMember(a string) error {
	if len(a) < 2 || a[0] != '@' || len(a) > 128 {
		return fmt.Errorf("bad agent %q: want @name or @peerid", a)
	}
	return nil
}
