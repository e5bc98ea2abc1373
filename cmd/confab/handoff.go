package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/confabhq/confab/wsgateway"
)

// Code handoff: handoff, bundles and apply (docs/handoff.md).

const (
	bundlePoll         = 200 * time.Millisecond
	bundleUnknownGrace = 5 * time.Second
)

func handoffCmd(g *globals) *cobra.Command {
	var repo, note string
	c := &cobra.Command{
		Use:   "handoff @AGENT [REV...]",
		Short: "Hand the exact git commits of REVs (default: the current branch) to another agent",
		Long: `Bundle REVs of the repository (branches, tags or ranges such as main~3..main;
default the current branch), store the bundle in this node's home and offer it
to @AGENT in a signed direct message. The receiving node fetches it on its own;
it then runs "confab apply ID" to make a branch of it. If @AGENT is offline the
offer waits in this node's outbox; keep this node running until it is fetched.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			to := args[0]
			if to == "" || to == "@" {
				return errors.New("name the receiving agent: @name or @peerid")
			}
			dir, err := filepath.Abs(repo)
			if err != nil {
				return err
			}
			return withNode(cmd, g, func(c *wsgateway.Client) error {
				r, err := c.Handoff(cmd.Context(), to, dir, args[1:], note)
				if err != nil {
					return err
				}
				if g.json {
					printJSON(cmd, struct {
						*wsgateway.HandoffReply
						Req   string `json:"req,omitempty"`
						Short string `json:"short"`
					}{HandoffReply: r, Short: short(r.ID)})
					return nil
				}
				out := cmd.OutOrStdout()
				var refs []string
				for _, x := range r.Refs {
					refs = append(refs, x.Name)
				}
				fmt.Fprintf(out, "offered %s to %s: %s, %s (%s)\n", short(r.ID), to, clean(r.Repo), humanBytes(r.Size), strings.Join(refs, " "))
				if r.Delivered {
					fmt.Fprintf(out, "delivered; %s fetches it now (id %s)\n", to, r.ID)
				} else {
					fmt.Fprintf(out, "queued: %s is not reachable now; the offer is delivered when it is, and the bundle is fetched while this node runs (id %s)\n", to, r.ID)
				}
				return nil
			})
		},
	}
	c.Flags().StringVar(&repo, "repo", ".", "the git repository to hand over from")
	c.Flags().StringVar(&note, "note", "", "a note for the receiver (at most 4096 bytes)")
	return c
}

func bundlesCmd(g *globals) *cobra.Command {
	var wait string
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "bundles [--wait ID]",
		Short: "List git bundles other agents handed to this one, and their state",
		Long: `List the bundles offered to this agent: id, sender, repository, refs, size and
state (queued, fetching N%, waiting to retry, ready, failed: reason, applied).
With --wait ID, wait until that bundle is fetched and verified (or failed),
showing progress: a bar on a terminal, JSON lines {"type":"progress",...}
on stdout otherwise. Repository names, notes and ref names are chosen by the
sender.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			return withNode(cmd, g, func(c *wsgateway.Client) error {
				if wait != "" {
					b, err := waitBundle(ctx, cmd, c, wait, true)
					if err != nil {
						return err
					}
					return printBundles(cmd, g, []wsgateway.WireBundle{b})
				}
				list, err := c.Bundles(ctx, "")
				if err != nil {
					return err
				}
				return printBundles(cmd, g, list)
			})
		},
	}
	c.Flags().StringVar(&wait, "wait", "", "wait until bundle ID (or a unique prefix) is fetched, showing progress")
	c.Flags().DurationVar(&timeout, "timeout", 0, "with --wait: give up after this long (0: no limit)")
	return c
}

func applyCmd(g *globals) *cobra.Command {
	var repo, branch, ref string
	c := &cobra.Command{
		Use:   "apply ID",
		Short: "Make a branch from a received bundle (never checks out or merges)",
		Long: `Wait until bundle ID (or a unique prefix) is fetched and verified, import its
refs into the repository's quarantine namespace refs/confab/<sender>/<id>/...
with object checks on, then create BRANCH (default confab/<short id>) at REF
(default: the bundle's only branch). Nothing is checked out or merged and no
hook runs; the branch must not exist yet.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := filepath.Abs(repo)
			if err != nil {
				return err
			}
			return withNode(cmd, g, func(c *wsgateway.Client) error {
				b, err := waitBundle(cmd.Context(), cmd, c, args[0], false)
				if err != nil {
					return err
				}
				r, err := c.ApplyBundle(cmd.Context(), b.ID, dir, ref, branch)
				if err != nil {
					return err
				}
				if g.json {
					printJSON(cmd, struct {
						*wsgateway.ApplyReply
						Req   string `json:"req,omitempty"`
						Short string `json:"short"`
					}{ApplyReply: r, Short: short(r.ID)})
					return nil
				}
				fmt.Fprintf(cmd.OutOrStdout(), "branch %s at %s in %s (from %s of bundle %s)\n", r.Branch, r.Commit, r.Repo, clean(r.Ref), short(r.ID))
				return nil
			})
		},
	}
	c.Flags().StringVar(&repo, "repo", ".", "the git repository to apply to")
	c.Flags().StringVar(&branch, "branch", "", "the branch to create (default confab/<short id>)")
	c.Flags().StringVar(&ref, "ref", "", "which of the bundle's refs (e.g. main or refs/tags/v1); needed when it carries several branches")
	return c
}

// waitBundle polls the node until bundle id is ready (or applied), showing
// progress, and fails if it failed. Unless always is set, a bundle that is
// ready at once shows no progress.
func waitBundle(ctx context.Context, cmd *cobra.Command, c *wsgateway.Client, id string, always bool) (wsgateway.WireBundle, error) {
	p := newProgress(cmd)
	defer p.finish()
	t := time.NewTicker(bundlePoll)
	defer t.Stop()
	// An offer just delivered may not be read from the inbox yet.
	unknownUntil := time.Now().Add(bundleUnknownGrace)
	for {
		list, err := c.Bundles(ctx, id)
		if err != nil {
			return wsgateway.WireBundle{}, err
		}
		switch len(list) {
		case 0:
			if time.Now().Before(unknownUntil) {
				select {
				case <-ctx.Done():
					return wsgateway.WireBundle{}, ctx.Err()
				case <-t.C:
				}
				continue
			}
			return wsgateway.WireBundle{}, fmt.Errorf("no bundle with id %s was offered to this agent (see confab bundles)", id)
		case 1:
		default:
			return wsgateway.WireBundle{}, fmt.Errorf("id %s matches %d bundles; give more digits", id, len(list))
		}
		b := list[0]
		switch b.State {
		case wsgateway.BundleReady, wsgateway.BundleApplied:
			if always || p.lastDone >= 0 {
				p.update(b)
			}
			return b, nil
		case wsgateway.BundleFailed:
			return b, fmt.Errorf("bundle %s failed: %s", short(b.ID), clean(b.Error))
		}
		p.update(b)
		select {
		case <-ctx.Done():
			return b, fmt.Errorf("bundle %s is still %s (%d of %d bytes): %w", short(b.ID), b.State, b.Done, b.Size, ctx.Err())
		case <-t.C:
		}
	}
}

// progress shows a transfer: a bar on stderr when it is a terminal, else
// JSON lines on stdout, at most one per percent and half second.
type progress struct {
	cmd      *cobra.Command
	tty      bool
	last     time.Time
	lastPct  int
	lastDone int64
	shown    bool
}

func newProgress(cmd *cobra.Command) *progress {
	return &progress{cmd: cmd, tty: isTerminal(cmd.ErrOrStderr()), lastPct: -1, lastDone: -1}
}

func (p *progress) update(b wsgateway.WireBundle) {
	pct := 100
	if b.Size > 0 {
		pct = int(b.Done * 100 / b.Size)
	}
	final := b.Done >= b.Size
	if b.Done == p.lastDone || (!final && (pct == p.lastPct || time.Since(p.last) < 500*time.Millisecond)) {
		return
	}
	p.last, p.lastPct, p.lastDone = time.Now(), pct, b.Done
	if !p.tty {
		printJSON(p.cmd, map[string]any{"type": "progress", "id": b.ID, "state": b.State, "done": b.Done, "total": b.Size})
		return
	}
	const width = 30
	fill := width * pct / 100
	fmt.Fprintf(p.cmd.ErrOrStderr(), "\r%s [%s%s] %3d%% %s / %s ", short(b.ID), strings.Repeat("#", fill), strings.Repeat(".", width-fill),
		pct, humanBytes(b.Done), humanBytes(b.Size))
	p.shown = true
}

func (p *progress) finish() {
	if p.tty && p.shown {
		fmt.Fprintln(p.cmd.ErrOrStderr())
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func printBundles(cmd *cobra.Command, g *globals, list []wsgateway.WireBundle) error {
	if g.json {
		for i := range list {
			printJSON(cmd, struct {
				*wsgateway.WireBundle
				Short string `json:"short"`
			}{&list[i], short(list[i].ID)})
		}
		return nil
	}
	out := cmd.OutOrStdout()
	if len(list) == 0 {
		fmt.Fprintln(out, "no bundles received")
		return nil
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tFROM\tREPO\tREFS\tSIZE\tSTATE")
	for _, b := range list {
		var refs []string
		for _, r := range b.Refs {
			refs = append(refs, strings.TrimPrefix(strings.TrimPrefix(r.Name, "refs/heads/"), "refs/"))
		}
		if len(refs) > 3 {
			refs = append(refs[:3], fmt.Sprintf("+%d", len(refs)-3))
		}
		from := b.From
		if len(from) > 12 {
			from = "…" + from[len(from)-8:]
		}
		if b.Name != "" {
			from = clean(b.Name) + " (" + from + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", short(b.ID), from, clean(b.Repo), clean(strings.Join(refs, ",")), humanBytes(b.Size), stateText(b))
	}
	return tw.Flush()
}

func stateText(b wsgateway.WireBundle) string {
	switch b.State {
	case wsgateway.BundleFetching:
		if b.Size > 0 {
			return fmt.Sprintf("fetching %d%%", b.Done*100/b.Size)
		}
	case wsgateway.BundleWaiting:
		return "waiting to retry: " + clean(b.Error)
	case wsgateway.BundleFailed:
		return "failed: " + clean(b.Error)
	case wsgateway.BundleApplied:
		return "applied to " + b.AppliedRepo + " as " + clean(b.Branch)
	}
	return b.State
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// clean drops control characters from text another agent chose, so that it
// cannot move the cursor or recolour the terminal.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return -1
		}
		return r
	}, s)
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
