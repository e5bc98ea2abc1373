package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/confabhq/confab/wsgateway"
)

func findCmd(g *globals) *cobra.Command {
	var capability string
	c := &cobra.Command{
		Use:   "find --cap CAP",
		Short: "List the agents with a capability (confirmed against each agent's signed card)",
		Long: `List the agents whose signed card lists a capability. Candidates come from
presence and from the DHT; each is confirmed by fetching its card signed with
its own key, so a bare claim is never listed. Available agents come first.
The search can take up to ten seconds.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if capability == "" {
				return fmt.Errorf("--cap is required, e.g. confab find --cap go-review")
			}
			return withNode(cmd, g, func(c *wsgateway.Client) error {
				cards, err := c.Find(cmd.Context(), capability)
				if err != nil {
					return err
				}
				if g.json {
					for _, cd := range cards {
						printJSON(cmd, wsgateway.CardToWire(cd))
					}
					return nil
				}
				if len(cards) == 0 {
					fmt.Fprintf(cmd.ErrOrStderr(), "no agent with capability %s found\n", capability)
					return nil
				}
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "NAME\tSTATUS\tCAPS\tDESC\tID")
				for _, cd := range cards {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", cd.Name, cd.Status, strings.Join(cd.Caps, ","), oneLine(cd.Desc, 60), cd.ID)
				}
				return w.Flush()
			})
		},
	}
	c.Flags().StringVar(&capability, "cap", "", "capability to look for (e.g. go-review)")
	return c
}

// oneLine shortens s to at most n runes on one line, for tables.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
