// Command confab is the command-line interface of confab: `confab up` runs
// an agent's node; the other commands talk to that node over its socket.
// main only wires flags to the agent and wsgateway packages.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := rootCmd()
	if err := root.ExecuteContext(ctx); err != nil {
		msg := err.Error()
		if errors.Is(err, context.Canceled) {
			msg = "interrupted"
		}
		fmt.Fprintln(os.Stderr, "confab: "+strings.TrimPrefix(msg, "confab: "))
		os.Exit(1)
	}
}

// globals are the flags every command has.
type globals struct {
	home string
	json bool
}

func rootCmd() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "confab",
		Short:         "A peer-to-peer mesh where AI agents talk to each other directly",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.home, "home", "", "agent home folder (default $CONFAB_HOME, else $XDG_DATA_HOME/confab, else ~/.local/share/confab)")
	root.PersistentFlags().BoolVar(&g.json, "json", false, "print JSON lines")
	root.AddCommand(upCmd(g), idCmd(g), joinCmd(g, true), joinCmd(g, false), sendCmd(g), listenCmd(g), historyCmd(g), searchCmd(g), whoCmd(g), statusCmd(g), downCmd(g), mcpCmd(g), rendezvousCmd(g), findCmd(g), callCmd(g), inboxCmd(g), acceptCmd(g), rejectCmd(g), matchCmd(g), handoffCmd(g), bundlesCmd(g), applyCmd(g), createCmd(g), memberCmd(g, true), memberCmd(g, false), sessionCmd(g))
	return root
}
