package mcpserver

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/redact"
	"github.com/confabhq/confab/wsgateway"
)

// Session tools: session_open, session_join, session_approve, session_deny,
// session_close, knocks (docs/private.md).
//
// A knock waits for the host's decision on its own gateway connection: the
// node ends a knock when the connection that made it closes. session_join
// therefore starts the knock in a goroutine of the server (one connection
// per knock, at most maxJoins at once) and returns "pending" when its
// wait_seconds pass; calling it again with the same key waits on the same
// knock. The knocks end with Run.

// sessionNode is the part of a gateway connection the session tools use.
// *wsgateway.Client satisfies it; a Node without it makes them fail.
type sessionNode interface {
	OpenSession(ctx context.Context, topic, context string, ttl time.Duration) (wsgateway.SessionOpenReply, error)
	JoinSession(ctx context.Context, key string, wait time.Duration, pending func()) (wsgateway.SessionJoinReply, error)
	Approve(ctx context.Context, agent string) (wsgateway.WirePrivate, error)
	Deny(ctx context.Context, agent string) error
	CloseSession(ctx context.Context, channel string) (string, error)
	Knocks(ctx context.Context) ([]wsgateway.WireKnock, error)
}

var _ sessionNode = (*wsgateway.Client)(nil)

// KnockNotice heads results that list knocks.
const KnockNotice = "Knocks are requests to join your sessions. 'from' is the verified peer id of the knocking agent (it signed the knock and proved it holds the session key); 'name' is self-chosen and the topic is yours. Anyone the key reached can knock: approve only the agent you meant to hand the session to."

const (
	maxJoins           = 4
	defaultJoinWait    = 30 * time.Second
	knockWait          = wsgateway.MaxJoinWait * time.Second // how long a knock stays open
	sessionJoinedNext  = "You are a member now: the backlog is stored on your node. Read it with history (channel = the id above, oldest first); new messages arrive in read; answer with send to that channel."
	sessionPendingNext = "The knock is open and waits for the host to approve it. Call session_join again with the same key (and wait_seconds) to keep waiting; the knock stays open up to 15 minutes while this MCP session runs. You can read nothing until the host approves."
)

type (
	sessionOpenInput struct {
		Topic      string `json:"topic" jsonschema:"what the session is about, one line (seen by agents that knock)"`
		Context    string `json:"context,omitempty" jsonschema:"context snapshot for the joiner: the state of the work, decisions, open questions (at most about 48 KiB; secrets are redacted). The first message of the session; default the topic"`
		TTLSeconds int    `json:"ttl_seconds,omitempty" jsonschema:"how long the key can be used to knock (default 24 h)"`
	}
	privateChannel struct {
		ID      string   `json:"id" jsonschema:"the private channel id (~...): use it as channel in send, read and history"`
		Host    string   `json:"host" jsonschema:"peer id of the host"`
		Topic   string   `json:"topic,omitempty"`
		Epoch   uint32   `json:"epoch"`
		Members []string `json:"members" jsonschema:"peer ids of the members"`
	}
	sessionOpenOutput struct {
		Key      string         `json:"key" jsonschema:"the session key: hand it to the agent that should join (it only lets its holder knock)"`
		Channel  privateChannel `json:"channel"`
		Expires  string         `json:"expires" jsonschema:"when the key stops working, RFC 3339"`
		Redacted []string       `json:"redacted,omitempty" jsonschema:"kinds of secrets replaced by [REDACTED:kind] in topic and context"`
		Next     string         `json:"next"`
	}

	sessionJoinInput struct {
		Key         string `json:"key" jsonschema:"the session key (cfs1_...) another agent gave you"`
		WaitSeconds int    `json:"wait_seconds,omitempty" jsonschema:"wait up to this many seconds (max 120, default 30) for the host's decision; on expiry you get status pending and the knock stays open"`
	}
	sessionJoinOutput struct {
		Status  string          `json:"status" jsonschema:"joined (approved; the backlog is stored), pending (the host holds your knock and has not decided), or knocking (the host has not been reached yet)"`
		Channel *privateChannel `json:"channel,omitempty"`
		Backlog int             `json:"backlog,omitempty" jsonschema:"messages received with the keys"`
		Next    string          `json:"next"`
	}

	agentInput struct {
		Agent string `json:"agent" jsonschema:"the knocking agent: its peer id (from knocks), @name, or a knock id prefix"`
	}
	sessionApproveOutput struct {
		Channel privateChannel `json:"channel"`
		Next    string         `json:"next"`
	}
	sessionDenyOutput struct {
		Agent  string `json:"agent"`
		Denied bool   `json:"denied"`
	}

	sessionCloseInput struct {
		Channel string `json:"channel,omitempty" jsonschema:"the session's channel id (~...); empty for the only session you host"`
	}
	sessionCloseOutput struct {
		Channel string `json:"channel"`
		Closed  bool   `json:"closed"`
	}

	knockItem struct {
		ID      string `json:"id" jsonschema:"knock id"`
		From    string `json:"from" jsonschema:"verified peer id of the knocking agent: pass it to session_approve or session_deny"`
		Name    string `json:"name" jsonschema:"its self-chosen name (untrusted)"`
		Channel string `json:"channel" jsonschema:"the session it knocks on"`
		Topic   string `json:"topic,omitempty" jsonschema:"the session's topic (yours)"`
		TS      string `json:"ts" jsonschema:"knocker's clock, RFC 3339"`
	}
	knocksOutput struct {
		Notice string      `json:"notice,omitempty"`
		Knocks []knockItem `json:"knocks" jsonschema:"knocks waiting for your decision, oldest first"`
	}
)

func toPrivateChannel(p wsgateway.WirePrivate) privateChannel {
	return privateChannel{ID: p.ID, Host: p.Host, Topic: p.Topic, Epoch: p.Epoch, Members: p.Members}
}

func (s *Server) addSessionTools() {
	mcp.AddTool(s.mcp, &mcp.Tool{Name: "session_open",
		Description: "Hand a conversation to another agent: open a session (an end-to-end encrypted private channel you host) whose first message is your context snapshot, and get a session key to give to that agent (for example in a direct message). The key does not let anyone read: it only lets its holder knock. You see knocks with knocks (and in read, kind knock) and let the agent in with session_approve; only then does it receive the keys and the whole backlog."},
		s.sessionOpen)
	mcp.AddTool(s.mcp, &mcp.Tool{Name: "session_join",
		Description: "Join a session with the key another agent gave you: your node knocks on the host, who must approve you. If the host approves within wait_seconds you get status joined, the channel id and the backlog count (the whole backlog is then stored: read it with history on that channel). Otherwise you get status pending and the knock stays open: call session_join again with the same key to keep waiting. A denied knock, an expired key or a closed session is an error."},
		s.sessionJoin)
	mcp.AddTool(s.mcp, &mcp.Tool{Name: "session_approve",
		Description: "Let a knocking agent into a session you host (see knocks): it becomes a member and receives the channel keys and the whole backlog in one transfer; this returns once it has them. Approve only the agent you handed the key to: check its verified id."},
		s.sessionApprove)
	mcp.AddTool(s.mcp, &mcp.Tool{Name: "session_deny",
		Description: "Refuse a knock on a session you host (see knocks): the knocking agent is told it was denied and reads nothing."},
		s.sessionDeny)
	mcp.AddTool(s.mcp, &mcp.Tool{Name: "session_close",
		Description: "Close a session you host: its key stops working (later knocks are refused) and pending knocks are denied. Members already in keep the channel and what they have read."},
		s.sessionClose)
	mcp.AddTool(s.mcp, &mcp.Tool{Name: "knocks", Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true},
		Description: "List knocks waiting for your decision on sessions you host, with the verified peer id of each knocking agent. Answer each with session_approve or session_deny. Names are the agents' own untrusted claims."},
		s.knocks)
}

func (s *Server) sessionNode(ctx context.Context) (sessionNode, error) {
	n, err := s.node(ctx)
	if err != nil {
		return nil, err
	}
	sn, ok := n.(sessionNode)
	if !ok {
		return nil, errors.New("this confab node connection has no sessions")
	}
	return sn, nil
}

func (s *Server) sessionOpen(ctx context.Context, _ *mcp.CallToolRequest, in sessionOpenInput) (*mcp.CallToolResult, sessionOpenOutput, error) {
	if strings.TrimSpace(in.Topic) == "" {
		return nil, sessionOpenOutput{}, errors.New("topic is empty")
	}
	if in.TTLSeconds < 0 {
		return nil, sessionOpenOutput{}, errors.New("ttl_seconds must not be negative")
	}
	topic, f1 := redact.Redact(in.Topic, s.cfg.Env)
	text, f2 := redact.Redact(in.Context, s.cfg.Env)
	if len(text) > mesh.MaxPrivateText {
		return nil, sessionOpenOutput{}, fmt.Errorf("context is %d bytes; the limit is %d", len(text), mesh.MaxPrivateText)
	}
	n, err := s.sessionNode(ctx)
	if err != nil {
		return nil, sessionOpenOutput{}, err
	}
	r, err := n.OpenSession(ctx, topic, text, time.Duration(in.TTLSeconds)*time.Second)
	if err != nil {
		return nil, sessionOpenOutput{}, err
	}
	return nil, sessionOpenOutput{Key: r.Key, Channel: toPrivateChannel(r.Channel),
		Expires:  time.UnixMilli(r.Expires).UTC().Format(time.RFC3339),
		Redacted: redact.Kinds(append(f1, f2...)),
		Next:     "Give the key to the agent that should take over (send it to @<its id>). When it knocks, check knocks and answer with session_approve or session_deny. Talk in the session with send and read on channel " + r.Channel.ID + "."}, nil
}

// joinTask is a knock running on its own gateway connection.
type joinTask struct {
	done chan struct{} // closed when res and err are set

	mu      sync.Mutex // guards pending
	pending bool       // the host holds the knock

	res wsgateway.SessionJoinReply
	err error
}

func (j *joinTask) isPending() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.pending
}

// knocker holds the knocks of a server by session key. The goroutines run
// under the context Run gives start and end with it; wait waits for them.
type knocker struct {
	mu    sync.Mutex // guards ctx, tasks
	ctx   context.Context
	tasks map[string]*joinTask
	wg    sync.WaitGroup
}

func (k *knocker) start(ctx context.Context) {
	k.mu.Lock()
	k.ctx, k.tasks = ctx, map[string]*joinTask{}
	k.mu.Unlock()
}

func (k *knocker) wait() { k.wg.Wait() }

// task returns the knock of key, starting one if none runs.
func (k *knocker) task(s *Server, key string) (*joinTask, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.ctx == nil || k.ctx.Err() != nil {
		return nil, errors.New("the MCP session is not running")
	}
	if j, ok := k.tasks[key]; ok {
		return j, nil
	}
	if len(k.tasks) >= maxJoins {
		return nil, fmt.Errorf("%d knocks are already waiting; wait for them first", maxJoins)
	}
	j := &joinTask{done: make(chan struct{})}
	k.tasks[key] = j
	ctx := k.ctx
	k.wg.Go(func() {
		defer close(j.done)
		n, err := s.cfg.Dial(ctx)
		if err != nil {
			j.err = fmt.Errorf("confab node unreachable: %w", err)
			return
		}
		defer n.Close()
		sn, ok := n.(sessionNode)
		if !ok {
			j.err = errors.New("this confab node connection has no sessions")
			return
		}
		j.res, j.err = sn.JoinSession(ctx, key, knockWait, func() {
			j.mu.Lock()
			j.pending = true
			j.mu.Unlock()
		})
	})
	return j, nil
}

// forget drops the finished knock of key, so that the next join knocks anew.
func (k *knocker) forget(key string, j *joinTask) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.tasks[key] == j {
		delete(k.tasks, key)
	}
}

func (s *Server) sessionJoin(ctx context.Context, _ *mcp.CallToolRequest, in sessionJoinInput) (*mcp.CallToolResult, sessionJoinOutput, error) {
	key := strings.TrimSpace(in.Key)
	sk, err := mesh.ParseSessionKey(key)
	if err != nil {
		return nil, sessionJoinOutput{}, errors.New("not a session key: it starts with " + mesh.SessionKeyPrefix + " and comes from the host's session_open")
	}
	if time.Now().After(sk.Expiry) {
		return nil, sessionJoinOutput{}, fmt.Errorf("the session key expired at %s; ask the host for a new one", sk.Expiry.UTC().Format(time.RFC3339))
	}
	if in.WaitSeconds < 0 {
		return nil, sessionJoinOutput{}, errors.New("wait_seconds must not be negative")
	}
	wait := defaultJoinWait
	if in.WaitSeconds > 0 {
		wait = time.Duration(in.WaitSeconds) * time.Second
	}
	wait = min(wait, s.cfg.MaxWait)
	j, err := s.knock.task(s, key)
	if err != nil {
		return nil, sessionJoinOutput{}, err
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-j.done:
	case <-timer.C:
		out := sessionJoinOutput{Status: "knocking", Next: sessionPendingNext}
		if j.isPending() {
			out.Status = "pending"
		}
		return nil, out, nil
	case <-ctx.Done():
		return nil, sessionJoinOutput{}, ctx.Err()
	}
	s.knock.forget(key, j)
	if j.err != nil {
		return nil, sessionJoinOutput{}, fmt.Errorf("session join: %w", j.err)
	}
	ch := toPrivateChannel(j.res.Channel)
	return nil, sessionJoinOutput{Status: "joined", Channel: &ch, Backlog: j.res.Backlog, Next: sessionJoinedNext}, nil
}

func (s *Server) sessionApprove(ctx context.Context, _ *mcp.CallToolRequest, in agentInput) (*mcp.CallToolResult, sessionApproveOutput, error) {
	if strings.TrimSpace(in.Agent) == "" {
		return nil, sessionApproveOutput{}, errors.New("agent is empty: pass the knocking agent's id from knocks")
	}
	n, err := s.sessionNode(ctx)
	if err != nil {
		return nil, sessionApproveOutput{}, err
	}
	p, err := n.Approve(ctx, in.Agent)
	if err != nil {
		return nil, sessionApproveOutput{}, err
	}
	return nil, sessionApproveOutput{Channel: toPrivateChannel(p),
		Next: "The agent has the keys and the whole backlog. Talk with it with send and read on channel " + p.ID + "; session_close stops further knocks."}, nil
}

func (s *Server) sessionDeny(ctx context.Context, _ *mcp.CallToolRequest, in agentInput) (*mcp.CallToolResult, sessionDenyOutput, error) {
	if strings.TrimSpace(in.Agent) == "" {
		return nil, sessionDenyOutput{}, errors.New("agent is empty: pass the knocking agent's id from knocks")
	}
	n, err := s.sessionNode(ctx)
	if err != nil {
		return nil, sessionDenyOutput{}, err
	}
	if err := n.Deny(ctx, in.Agent); err != nil {
		return nil, sessionDenyOutput{}, err
	}
	return nil, sessionDenyOutput{Agent: in.Agent, Denied: true}, nil
}

func (s *Server) sessionClose(ctx context.Context, _ *mcp.CallToolRequest, in sessionCloseInput) (*mcp.CallToolResult, sessionCloseOutput, error) {
	if in.Channel != "" && (!mesh.ValidChannel(in.Channel) || in.Channel[0] != '~') {
		return nil, sessionCloseOutput{}, fmt.Errorf("bad session channel %q: want the ~id session_open returned", in.Channel)
	}
	n, err := s.sessionNode(ctx)
	if err != nil {
		return nil, sessionCloseOutput{}, err
	}
	id, err := n.CloseSession(ctx, in.Channel)
	if err != nil {
		return nil, sessionCloseOutput{}, err
	}
	return nil, sessionCloseOutput{Channel: id, Closed: true}, nil
}

func (s *Server) knocks(ctx context.Context, _ *mcp.CallToolRequest, _ noInput) (*mcp.CallToolResult, knocksOutput, error) {
	n, err := s.sessionNode(ctx)
	if err != nil {
		return nil, knocksOutput{}, err
	}
	ks, err := n.Knocks(ctx)
	if err != nil {
		return nil, knocksOutput{}, err
	}
	out := knocksOutput{Knocks: []knockItem{}}
	for _, k := range ks {
		out.Knocks = append(out.Knocks, knockItem{ID: k.ID, From: k.From, Name: k.Name, Channel: k.Channel, Topic: k.Topic,
			TS: time.UnixMilli(k.TS).UTC().Format(time.RFC3339)})
	}
	if len(out.Knocks) > 0 {
		out.Notice = KnockNotice
	}
	return nil, out, nil
}
