package main

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestMCPFindCallAccept: two agents find each other by capability, call,
// accept and talk in the call channel, and exchange a direct message, using
// only MCP tools.
func TestMCPFindCallAccept(t *testing.T) {
	root := t.TempDir()
	a, b := filepath.Join(root, "a"), filepath.Join(root, "b")
	up(t, a, "--name", "atlas", "--no-mdns", "--caps", "planning")
	_, addrA := nodeAddr(t, a)
	up(t, b, "--name", "nova", "--no-mdns", "--caps", "go-review", "--desc", "reviews Go", "--rendezvous", addrA)
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
	for _, want := range []string{"find", "call", "match", "inbox", "accept", "reject", "set_status", "send"} {
		if !slices.Contains(names, want) {
			t.Fatalf("tools = %v, want %s among them", names, want)
		}
	}
	var ida, idb struct{ ID string }
	callTool(t, ma, "whoami", nil, &ida)
	callTool(t, mb, "whoami", nil, &idb)

	type card struct{ ID, Name, Status, Desc string }
	var found struct {
		Notice string
		Agents []card
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if e := callTool(t, ma, "find", map[string]any{"cap": "go-review"}, &found); e != "" {
			t.Fatalf("find: %s", e)
		}
		if len(found.Agents) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if len(found.Agents) != 1 || found.Agents[0].ID != idb.ID || found.Agents[0].Desc != "reviews Go" || !strings.Contains(found.Notice, "untrusted") {
		t.Fatalf("find go-review: %+v", found)
	}

	var call struct {
		ID        string
		Delivered bool
	}
	if e := callTool(t, ma, "call", map[string]any{"target": "@" + found.Agents[0].ID, "topic": "review my auth middleware"}, &call); e != "" || !call.Delivered {
		t.Fatalf("call: %q %+v", e, call)
	}
	// nova hears the call through read, and sees it in inbox.
	var rd mcpRead
	callTool(t, mb, "read", map[string]any{"wait_seconds": 60}, &rd)
	if len(rd.Messages) != 1 || rd.Messages[0].ID != call.ID || rd.Messages[0].From != ida.ID {
		t.Fatalf("nova read %+v, want the call", rd)
	}
	var inbox struct {
		Calls []struct{ ID, From, Topic string }
	}
	callTool(t, mb, "inbox", nil, &inbox)
	if len(inbox.Calls) != 1 || inbox.Calls[0].ID != call.ID || inbox.Calls[0].Topic != "review my auth middleware" {
		t.Fatalf("inbox: %+v", inbox)
	}
	var acc struct{ Channel string }
	if e := callTool(t, mb, "accept", map[string]any{"id": call.ID}, &acc); e != "" || !strings.HasPrefix(acc.Channel, "#call-") {
		t.Fatalf("accept: %q %+v", e, acc)
	}
	// atlas reads the accept, then both talk in the call channel.
	var ans mcpRead
	callTool(t, ma, "read", map[string]any{"wait_seconds": 60, "from": idb.ID}, &ans)
	if len(ans.Messages) != 1 || ans.Messages[0].Content != acc.Channel {
		t.Fatalf("atlas read %+v, want the call-accept", ans)
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		var me struct{ Channels []string }
		callTool(t, ma, "whoami", nil, &me)
		if slices.Contains(me.Channels, acc.Channel) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("atlas never joined %s: %v", acc.Channel, me.Channels)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if e := callTool(t, ma, "send", map[string]any{"channel": acc.Channel, "text": "the diff is ready"}, nil); e != "" {
		t.Fatalf("send in call channel: %s", e)
	}
	var talk mcpRead
	callTool(t, mb, "read", map[string]any{"wait_seconds": 60, "channels": []string{acc.Channel}}, &talk)
	if len(talk.Messages) != 1 || talk.Messages[0].Content != "the diff is ready" {
		t.Fatalf("nova read in the call channel: %+v", talk)
	}

	// A direct message by name through send; a busy status rejects calls.
	var sent struct {
		ID        string
		Delivered *bool
	}
	if e := callTool(t, mb, "send", map[string]any{"channel": "@atlas", "text": "done, LGTM"}, &sent); e != "" || sent.Delivered == nil || !*sent.Delivered {
		t.Fatalf("send @atlas: %q %+v", e, sent)
	}
	var dm mcpRead
	callTool(t, ma, "read", map[string]any{"wait_seconds": 60}, &dm)
	if len(dm.Messages) != 1 || dm.Messages[0].ID != sent.ID || dm.Messages[0].Channel != "@"+ida.ID {
		t.Fatalf("atlas read %+v, want the DM", dm)
	}
	if e := callTool(t, mb, "set_status", map[string]any{"status": "busy"}, nil); e != "" {
		t.Fatalf("set_status: %s", e)
	}
	var call2 struct{ ID string }
	callTool(t, ma, "call", map[string]any{"target": "@nova", "topic": "one more"}, &call2)
	var rej mcpRead
	callTool(t, ma, "read", map[string]any{"wait_seconds": 60}, &rej)
	if len(rej.Messages) != 1 || rej.Messages[0].Content != "busy" {
		t.Fatalf("atlas read %+v, want the busy reject", rej)
	}
	if e := callTool(t, mb, "accept", map[string]any{"id": "ffffffffffff"}, nil); !strings.Contains(e, "unknown_call") || !strings.Contains(e, "inbox") {
		t.Fatalf("accept of no call: %q", e)
	}
}
