package wsgateway

import (
	"context"
	"errors"

	"github.com/confabhq/confab/mesh"
)

// Frames of capability discovery and agent cards (local mode): find, card,
// status. Each request and its reply share the type name; status is
// answered with ok.
const (
	TypeFind   = "find"
	TypeCard   = "card"
	TypeStatus = "status"
)

// Error codes of the discovery, direct-message and call frames.
const (
	CodeUnknownCall = "unknown_call" // accept/reject: no pending call with that id (or unique prefix)
	CodeNoAgent     = "no_agent"     // match: no available agent has the capability
	CodeOutboxFull  = "outbox_full"  // direct/call: too many messages already wait for offline agents
	CodeRefused     = "refused"      // direct/call: the recipient refused the message for good
	CodeBadCard     = "bad_card"     // card: the agent's card is invalid or not signed by it
	CodeUnreachable = "unreachable"  // card: the agent could not be reached
)

// Limits of the discovery frames.
const (
	MaxCapLen = mesh.MaxKindLen // bytes of a capability name
	maxIDLen  = 128             // bytes of a peer id, call id or target
)

// FindRequest asks for the agents whose signed card lists Cap (a DHT and
// presence search, confirmed card by card; it can take ten seconds).
// Reply: FindReply, available agents first.
type FindRequest struct {
	Req string `json:"req"`
	Cap string `json:"cap"`
}

// FindReply lists the cards of the agents found.
type FindReply struct {
	Req   string     `json:"req"`
	Cards []WireCard `json:"cards"`
}

// CardRequest asks for the verified signed card of agent ID ("" = this
// node's own). Reply: CardReply.
type CardRequest struct {
	Req string `json:"req"`
	ID  string `json:"id,omitempty"`
}

// CardReply carries one card.
type CardReply struct {
	Req  string   `json:"req"`
	Card WireCard `json:"card"`
}

// StatusRequest sets the node's announced status: available, busy (calls
// are rejected automatically) or away. Reply: OK.
type StatusRequest struct {
	Req    string `json:"req"`
	Status string `json:"status"`
}

// WireCard is the wire form of mesh.Card. TS is the author's clock when it
// signed the card, unix milliseconds.
type WireCard struct {
	ID      string   `json:"id"`
	Name    string   `json:"name"`
	Caps    []string `json:"caps,omitempty"`
	Desc    string   `json:"desc,omitempty"`
	Status  string   `json:"status"`
	Addrs   []string `json:"addrs,omitempty"`
	Version string   `json:"version,omitempty"`
	TS      int64    `json:"ts"`
}

func (*FindRequest) Type() string   { return TypeFind }
func (*FindReply) Type() string     { return TypeFind }
func (*CardRequest) Type() string   { return TypeCard }
func (*CardReply) Type() string     { return TypeCard }
func (*StatusRequest) Type() string { return TypeStatus }

// CardToWire converts a mesh.Card to its wire form.
func CardToWire(c mesh.Card) WireCard {
	return WireCard{ID: c.ID, Name: c.Name, Caps: c.Caps, Desc: c.Desc, Status: c.Status, Addrs: c.Addrs, Version: c.Version, TS: c.TS}
}

// Card converts the wire form back to a mesh.Card.
func (w WireCard) Card() mesh.Card {
	return mesh.Card{ID: w.ID, Name: w.Name, Caps: w.Caps, Desc: w.Desc, Status: w.Status, Addrs: w.Addrs, Version: w.Version, TS: w.TS}
}

// DiscoveryBackend is implemented by Backends that can find agents by
// capability (FromMesh's adapter does). Without it the server answers
// find, card and status with unsupported.
type DiscoveryBackend interface {
	Find(ctx context.Context, capability string) ([]mesh.Card, error)
	Card(ctx context.Context, id string) (mesh.Card, error)
	SetStatus(status string) error
}

func validateFind(f *FindRequest) *Error {
	if f.Cap == "" || len(f.Cap) > MaxCapLen {
		return first(needReq(f.Req), errorf(CodeBadFrame, "find: cap must be 1..%d bytes", MaxCapLen))
	}
	return needReq(f.Req)
}

func validateCard(f *CardRequest) *Error {
	if len(f.ID) > maxIDLen {
		return first(needReq(f.Req), errorf(CodeBadFrame, "card: id longer than %d bytes", maxIDLen))
	}
	return needReq(f.Req)
}

func validateStatus(f *StatusRequest) *Error {
	switch f.Status {
	case mesh.StatusAvailable, mesh.StatusBusy, mesh.StatusAway:
		return needReq(f.Req)
	}
	return first(needReq(f.Req), errorf(CodeBadFrame, "status: want available, busy or away"))
}

func validCard(w WireCard) *Error {
	if w.ID == "" || len(w.ID) > maxIDLen || len(w.Caps) > maxListItems || len(w.Addrs) > maxListItems {
		return errorf(CodeBadFrame, "card: id, caps or addrs")
	}
	return nil
}

// localOnly refuses the agent frames outside local mode: they act with the
// node's own key (direct messages, calls, status) or make it search the
// network on the client's behalf (find, card). write says whether the
// frame changes anything, for the read-only answer.
func (c *conn) localOnly(write bool) error {
	switch c.s.cfg.Mode {
	case ModeLocal:
		return nil
	case ModeReadOnly:
		if write {
			return errReadOnly
		}
	}
	return &Error{Code: CodeUnsupported, Message: "needs a local-mode connection to the agent's own node"}
}

func (c *conn) discoveryBackend(write bool) (DiscoveryBackend, error) {
	if err := c.localOnly(write); err != nil {
		return nil, err
	}
	b, ok := c.s.cfg.Backend.(DiscoveryBackend)
	if !ok {
		return nil, &Error{Code: CodeUnsupported, Message: "this node has no capability discovery"}
	}
	return b, nil
}

func (c *conn) find(ctx context.Context, f *FindRequest) (Frame, error) {
	b, err := c.discoveryBackend(false)
	if err != nil {
		return nil, err
	}
	cards, err := b.Find(ctx, f.Cap)
	if err != nil {
		return nil, err
	}
	r := &FindReply{Req: f.Req, Cards: make([]WireCard, 0, len(cards))}
	for _, cd := range cards {
		r.Cards = append(r.Cards, CardToWire(cd))
	}
	return r, nil
}

func (c *conn) card(ctx context.Context, f *CardRequest) (Frame, error) {
	b, err := c.discoveryBackend(false)
	if err != nil {
		return nil, err
	}
	cd, err := b.Card(ctx, f.ID)
	if err != nil {
		if codeOf(err) == CodeInternal && ctx.Err() == nil {
			// The card stream failed: the agent is offline or unreachable,
			// which the client should hear as such.
			return nil, &Error{Code: CodeUnreachable, Message: err.Error()}
		}
		return nil, err
	}
	return &CardReply{Req: f.Req, Card: CardToWire(cd)}, nil
}

func (c *conn) setStatus(_ context.Context, f *StatusRequest) (Frame, error) {
	b, err := c.discoveryBackend(true)
	if err != nil {
		return nil, err
	}
	if err := b.SetStatus(f.Status); err != nil {
		return nil, &Error{Code: CodeBadFrame, Message: err.Error()}
	}
	return &OK{Req: f.Req}, nil
}

// agentCode maps the errors of the agent frames (discovery, direct
// messages, calls) to codes; "" if err is none of them.
func agentCode(err error) string {
	switch {
	case errors.Is(err, mesh.ErrUnknownCall):
		return CodeUnknownCall
	case errors.Is(err, mesh.ErrNoAgent):
		return CodeNoAgent
	case errors.Is(err, mesh.ErrOutboxFull):
		return CodeOutboxFull
	case errors.Is(err, mesh.ErrRefused):
		return CodeRefused
	case errors.Is(err, mesh.ErrBadCard):
		return CodeBadCard
	}
	return ""
}

// Find returns the agents whose signed card lists capability.
func (c *Client) Find(ctx context.Context, capability string) ([]mesh.Card, error) {
	r, err := expect[*FindReply](c.call(ctx, func(req string) Frame { return &FindRequest{Req: req, Cap: capability} }))
	if err != nil {
		return nil, err
	}
	out := make([]mesh.Card, len(r.Cards))
	for i, w := range r.Cards {
		out[i] = w.Card()
	}
	return out, nil
}

// Card returns the verified card of agent id ("" = the node's own).
func (c *Client) Card(ctx context.Context, id string) (mesh.Card, error) {
	r, err := expect[*CardReply](c.call(ctx, func(req string) Frame { return &CardRequest{Req: req, ID: id} }))
	if err != nil {
		return mesh.Card{}, err
	}
	return r.Card.Card(), nil
}

// SetStatus sets the node's announced status (available, busy or away).
func (c *Client) SetStatus(ctx context.Context, status string) error {
	_, err := expect[*OK](c.call(ctx, func(req string) Frame { return &StatusRequest{Req: req, Status: status} }))
	return err
}
