package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/confabhq/confab/wsgateway"
)

func searchCmd(g *globals) *cobra.Command {
	var (
		in    string
		limit int
	)
	c := &cobra.Command{
		Use:   "search QUERY",
		Short: "Full-text search of this node's history: JSON lines, newest first",
		Long: `Search the history this node stores. Every word of QUERY must match (case
does not matter); a '*' after the last word matches it as a prefix. Private
channels are never indexed.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if in != "" {
				if err := checkChannel(in); err != nil {
					return err
				}
			}
			if limit <= 0 || limit > 200 {
				return fmt.Errorf("--limit must be 1 to 200")
			}
			return withNode(cmd, g, func(c *wsgateway.Client) error {
				recs, err := c.Search(cmd.Context(), args[0], in, limit)
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
	c.Flags().StringVar(&in, "in", "", "only this #channel")
	c.Flags().IntVar(&limit, "limit", 50, "at most this many results (1 to 200)")
	return c
}
