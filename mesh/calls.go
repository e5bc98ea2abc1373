package mesh

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Calls are direct messages with their own kinds:
//
//	call         content: the topic; its id is the call id
//	call-accept  reply_to: the call id; content: the conversation channel
//	call-reject  reply_to: the call id; content: the reason ("busy", ...)
//
// Accepting joins the conversation channel CallChannel(id); the caller joins
// it when the accept arrives, after checking it answers a call it made. A
// callee whose status is busy rejects every call automatically with reason
// "busy". Pending calls are derived from history (calls received in
// "@<self>" not answered in "@<caller>"), so they survive restarts.
const (
	KindCall       = "call"
	KindCallAccept = "call-accept"
	KindCallReject = "call-reject"
	// inboxScan bounds how many received DMs Inbox looks at.
	inboxScan = 1000
)

// Errors of calls.
var (
	ErrUnknownCall = errors.New("no such pending call")
	ErrNoAgent     = errors.New("no available agent with that capability")
)

// Call is a pending incoming call.
type Call struct {
	ID    string    `json:"id"`
	From  string    `json:"from"`
	Name  string    `json:"name"`
	Topic string    `json:"topic"`
	TS    time.Time `json:"ts"`
}

// CallChannel is the conversation channel of an accepted call.
func CallChannel(callID string) string {
	if len(callID) > 16 {
		callID = callID[:16]
	}
	return "#call-" + callID
}

// Call rings target with topic: a direct message of kind "call" (see
// SendDirect for target, delivery and the outbox). Its id is the call id.
func (m *Mesh) Call(ctx context.Context, target, topic string) (Record, bool, error) {
	return m.SendDirect(ctx, target, KindCall, topic, "")
}

// Inbox lists pending incoming calls, oldest first.
func (m *Mesh) Inbox(ctx context.Context) ([]Call, error) {
	recs, err := m.Before(ctx, "@"+m.self, "", inboxScan)
	if err != nil {
		return nil, fmt.Errorf("mesh: inbox: %w", err)
	}
	var calls []Call
	callers := map[string]bool{}
	for _, r := range recs {
		if r.Env.Kind == KindCall {
			e := r.Env
			calls = append(calls, Call{ID: e.ID, From: e.From, Name: e.Name, Topic: e.Content, TS: time.UnixMilli(e.TS)})
			callers[e.From] = true
		}
	}
	answered := map[string]bool{}
	for c := range callers {
		sent, err := m.Before(ctx, "@"+c, "", inboxScan)
		if err != nil {
			return nil, fmt.Errorf("mesh: inbox: %w", err)
		}
		for _, r := range sent {
			if r.Env.Kind == KindCallAccept || r.Env.Kind == KindCallReject {
				answered[r.Env.ReplyTo] = true
			}
		}
	}
	calls = slices.DeleteFunc(calls, func(c Call) bool { return answered[c.ID] })
	return calls, nil
}

func (m *Mesh) pendingCall(ctx context.Context, id string) (Call, error) {
	calls, err := m.Inbox(ctx)
	if err != nil {
		return Call{}, err
	}
	for _, c := range calls {
		if c.ID == id || (len(id) >= 8 && strings.HasPrefix(c.ID, id)) {
			return c, nil
		}
	}
	return Call{}, fmt.Errorf("mesh: call %s: %w", trunc(id), ErrUnknownCall)
}

// Accept answers pending call id (or a unique prefix of at least 8 hex
// digits): it joins the conversation channel, sends "call-accept" to the
// caller and returns the channel. Errors: ErrUnknownCall, SendDirect's.
func (m *Mesh) Accept(ctx context.Context, id string) (string, error) {
	c, err := m.pendingCall(ctx, id)
	if err != nil {
		return "", err
	}
	ch := CallChannel(c.ID)
	if err := m.Join(ctx, ch); err != nil {
		return "", err
	}
	if _, _, err := m.SendDirect(ctx, "@"+c.From, KindCallAccept, ch, c.ID); err != nil {
		return "", err
	}
	return ch, nil
}

// Reject answers pending call id with "call-reject" and reason.
func (m *Mesh) Reject(ctx context.Context, id, reason string) error {
	c, err := m.pendingCall(ctx, id)
	if err != nil {
		return err
	}
	_, _, err = m.SendDirect(ctx, "@"+c.From, KindCallReject, reason, c.ID)
	return err
}

// Match finds the agents with capability and calls the best available one:
// status available, present in presence before known only from the DHT,
// then by name. Errors: ErrNoAgent, Find's and Call's.
func (m *Mesh) Match(ctx context.Context, capability, topic string) (Card, Record, error) {
	cards, err := m.Find(ctx, capability)
	if err != nil {
		return Card{}, Record{}, err
	}
	present := map[string]bool{}
	for _, p := range m.Who(ctx, "") {
		present[p.ID] = true
	}
	cards = slices.DeleteFunc(cards, func(c Card) bool { return c.ID == m.self || c.Status != StatusAvailable })
	if len(cards) == 0 {
		return Card{}, Record{}, fmt.Errorf("mesh: match %s: %w", capability, ErrNoAgent)
	}
	slices.SortStableFunc(cards, func(a, b Card) int {
		switch {
		case present[a.ID] == present[b.ID]:
			return 0
		case present[a.ID]:
			return -1
		default:
			return 1
		}
	})
	rec, _, err := m.Call(ctx, "@"+cards[0].ID, topic)
	return cards[0], rec, err
}

// callLoop reacts to received call envelopes: a busy agent rejects calls, a
// caller joins the channel of an accepted call. Runs until Close.
func (m *Mesh) callLoop() {
	defer m.wg.Done()
	for {
		select {
		case <-m.ctx.Done():
			return
		case e := <-m.dx.events:
			m.onCallEvent(e)
		}
	}
}

func (m *Mesh) onCallEvent(e *Envelope) {
	ctx, cancel := context.WithTimeout(m.ctx, 2*dmTimeout)
	defer cancel()
	switch e.Kind {
	case KindCall:
		m.presence.mu.Lock()
		busy := m.presence.status == StatusBusy
		m.presence.mu.Unlock()
		if busy {
			if _, _, err := m.SendDirect(ctx, "@"+e.From, KindCallReject, StatusBusy, e.ID); err != nil {
				m.log.Warn("auto-reject", "call", e.ID, "err", err)
			}
		}
	case KindCallAccept:
		if e.Content != CallChannel(e.ReplyTo) || !m.madeCall(ctx, e.From, e.ReplyTo) {
			m.log.Info("ignoring accept of a call we did not make", "from", e.From, "call", e.ReplyTo)
			return
		}
		if err := m.Join(ctx, e.Content); err != nil {
			m.log.Warn("join accepted call", "channel", e.Content, "err", err)
		}
	}
}

// madeCall reports whether we sent call id to callee.
func (m *Mesh) madeCall(ctx context.Context, callee, id string) bool {
	sent, err := m.Before(ctx, "@"+callee, "", inboxScan)
	if err != nil {
		return false
	}
	for _, r := range sent {
		if r.Env.ID == id && r.Env.Kind == KindCall {
			return true
		}
	}
	return false
}
