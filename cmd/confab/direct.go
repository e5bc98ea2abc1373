package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/confabhq/confab/wsgateway"
)

// sendDirect sends text (already read and redacted) to an @agent for
// `confab send @nova TEXT` and prints whether it was delivered or queued.
func sendDirect(cmd *cobra.Command, g *globals, c *wsgateway.Client, target, kind, text, replyTo string, redacted []string) error {
	d, err := c.SendDirect(cmd.Context(), target, kind, text, replyTo)
	if err != nil {
		return err
	}
	if g.json {
		out := map[string]any{"id": d.ID, "channel": d.Channel, "to": strings.TrimPrefix(d.Channel, "@"), "seq": d.Seq,
			"cursor": d.Cursor, "delivered": d.Delivered}
		if len(redacted) > 0 {
			out["redacted"] = redacted
		}
		printJSON(cmd, out)
		return nil
	}
	if d.Delivered {
		fmt.Fprintf(cmd.OutOrStdout(), "delivered %s\n", d.ID)
	} else {
		fmt.Fprintf(cmd.OutOrStdout(), "queued: will deliver when %s is reachable (%s)\n", strings.TrimPrefix(target, "@"), d.ID)
	}
	return nil
}

// setStatus is `confab status available|busy|away`.
func setStatus(cmd *cobra.Command, g *globals, status string) error {
	switch status {
	case "available", "busy", "away":
	default:
		return fmt.Errorf("status %q: want available, busy or away", status)
	}
	c, err := dial(cmd, g)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetStatus(cmd.Context(), status); err != nil {
		return err
	}
	if g.json {
		printJSON(cmd, map[string]any{"status": status})
	} else {
		fmt.Fprintf(cmd.OutOrStdout(), "status %s\n", status)
	}
	return nil
}

// checkAgent checks an @agent target: "@name" or "@peerid".
func checkAgent(t string) error {
	if len(t) < 2 || t[0] != '@' || len(t) > 128 {
		return fmt.Errorf("bad agent %q: want @name or @peerid", t)
	}
	return nil
}
