package main

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestMCPSessionHandoff: a host opens a session through MCP, another agent
// joins with the key through MCP (pending until approved), the host sees the
// knock and approves through MCP, and the joiner reads the backlog with MCP
// history and a live message with read.
func TestMCPSessionHandoff(t *testing.T) {
	root := t.TempDir()
	a, b := filepath.Join(root, "a"), filepath.Join(root, "b")
	up(t, a, "--name", "atlas", "--no-mdns")
	_, addrA := nodeAddr(t, a)
	up(t, b, "--name", "nova", "--no-mdns", "--rendezvous", addrA)
	ma, _ := mcpSession(t, a)
	mb, _ := mcpSession(t, b)

	tools, err := ma.ListTools(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range tools.Tools {
		names = append(names, tl.Name)
	}
	for _, want := range []string{"session_open", "session_join", "session_approve", "session_deny", "session_close", "knocks"} {
		if !slices.Contains(names, want) {
			t.Fatalf("tools = %v, want %s among them", names, want)
		}
	}
	var ida, idb struct{ ID string }
	callTool(t, ma, "whoami", nil, &ida)
	callTool(t, mb, "whoami", nil, &idb)

	const snapshot = "state: auth middleware half done; next: token refresh-4471"
	var open struct {
		Key     string
		Channel struct{ ID, Host string }
		Next    string
	}
	if e := callTool(t, ma, "session_open", map[string]any{"topic": "auth refactor", "context": snapshot}, &open); e != "" {
		t.Fatalf("session_open: %s", e)
	}
	if !strings.HasPrefix(open.Key, "cfs1_") || !strings.HasPrefix(open.Channel.ID, "~") || open.Channel.Host != ida.ID {
		t.Fatalf("session_open: %+v", open)
	}
	if e := callTool(t, ma, "send", map[string]any{"channel": open.Channel.ID, "text": "tests are red in pkg/auth"}, nil); e != "" {
		t.Fatalf("send to the session: %s", e)
	}

	// Before approval the joiner reads nothing.
	var none struct{ Messages []mcpMessage }
	if e := callTool(t, mb, "history", map[string]any{"channel": open.Channel.ID}, &none); e == "" && len(none.Messages) > 0 {
		t.Fatalf("unapproved joiner read %+v", none.Messages)
	}

	// The knock stays open across calls: a short wait returns pending.
	type joinOut struct {
		Status  string
		Channel *struct{ ID string }
		Backlog int
		Next    string
	}
	var j joinOut
	if e := callTool(t, mb, "session_join", map[string]any{"key": open.Key, "wait_seconds": 2}, &j); e != "" {
		t.Fatalf("session_join: %s", e)
	}
	if (j.Status != "pending" && j.Status != "knocking") || j.Channel != nil || !strings.Contains(j.Next, "session_join again") {
		t.Fatalf("first session_join: %+v", j)
	}

	// The host sees the knock with nova's verified id and approves it.
	type knock struct{ ID, From, Name, Channel, Topic string }
	var ks struct {
		Notice string
		Knocks []knock
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		callTool(t, ma, "knocks", nil, &ks)
		if len(ks.Knocks) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(ks.Knocks) != 1 || ks.Knocks[0].From != idb.ID || ks.Knocks[0].Name != "nova" || ks.Knocks[0].Channel != open.Channel.ID ||
		ks.Knocks[0].Topic != "auth refactor" || !strings.Contains(ks.Notice, "verified") {
		t.Fatalf("knocks: %+v", ks)
	}
	var appr struct {
		Channel struct {
			ID      string
			Members []string
		}
	}
	if e := callTool(t, ma, "session_approve", map[string]any{"agent": ks.Knocks[0].From}, &appr); e != "" {
		t.Fatalf("session_approve: %s", e)
	}
	if appr.Channel.ID != open.Channel.ID || !slices.Contains(appr.Channel.Members, idb.ID) {
		t.Fatalf("session_approve: %+v", appr)
	}

	// The same key's knock finishes: joined, with the backlog.
	if e := callTool(t, mb, "session_join", map[string]any{"key": open.Key, "wait_seconds": 60}, &j); e != "" {
		t.Fatalf("second session_join: %s", e)
	}
	if j.Status != "joined" || j.Channel == nil || j.Channel.ID != open.Channel.ID || j.Backlog != 2 {
		t.Fatalf("second session_join: %+v", j)
	}
	var h struct {
		Notice   string
		Messages []struct{ From, Kind, Content string }
	}
	if e := callTool(t, mb, "history", map[string]any{"channel": open.Channel.ID}, &h); e != "" {
		t.Fatalf("history: %s", e)
	}
	var got []string
	for _, m := range h.Messages {
		if m.From != ida.ID {
			t.Fatalf("backlog message from %s, want the host", m.From)
		}
		got = append(got, m.Kind+":"+m.Content)
	}
	if want := []string{"context:" + snapshot, ":tests are red in pkg/auth"}; !slices.Equal(got, want) {
		t.Fatalf("joiner's history = %q, want %q", got, want)
	}

	// Live after approval: the host writes, the joiner reads.
	if e := callTool(t, ma, "send", map[string]any{"channel": open.Channel.ID, "text": "welcome nova"}, nil); e != "" {
		t.Fatalf("send: %s", e)
	}
	deadline = time.Now().Add(60 * time.Second)
	for {
		var rd mcpRead
		callTool(t, mb, "read", map[string]any{"wait_seconds": 30, "channels": []string{open.Channel.ID}}, &rd)
		if len(rd.Messages) == 1 && rd.Messages[0].Content == "welcome nova" {
			break
		}
		if len(rd.Messages) > 0 || time.Now().After(deadline) {
			t.Fatalf("joiner read %+v, want the live message", rd)
		}
	}

	// Close: a later knock is refused with a clear error.
	var cl struct {
		Channel string
		Closed  bool
	}
	if e := callTool(t, ma, "session_close", nil, &cl); e != "" || cl.Channel != open.Channel.ID || !cl.Closed {
		t.Fatalf("session_close: %q %+v", e, cl)
	}
	if e := callTool(t, mb, "session_join", map[string]any{"key": open.Key, "wait_seconds": 30}, &j); !strings.Contains(e, "closed") {
		t.Fatalf("knock after close: %q %+v", e, j)
	}
	if e := callTool(t, mb, "session_join", map[string]any{"key": "cfs1_nope"}, &j); !strings.Contains(e, "not a session key") {
		t.Fatalf("bad key: %q", e)
	}
}
