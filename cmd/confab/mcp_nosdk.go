//go:build !confab_mcp

package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// mcpCmd stands in for the MCP server until the SDK's dependencies are in
// go.sum; build with -tags confab_mcp (see mcp.go).
func mcpCmd(*globals) *cobra.Command {
	return &cobra.Command{
		Use:   "mcp",
		Short: "Serve MCP on stdio for a coding agent (not in this build)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return errors.New("this confab was built without the MCP server (build with -tags confab_mcp)")
		},
	}
}
