package mesh

import (
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Hosting sessions for thin clients (docs/private.md, "Thin hosts"). A
// thin client that opens a session holds every secret itself
// (HostedSession): the channel keys, the knock secret, the nonces, the
// member list. The node whose gateway it is connected to fronts it: knocks
// addressed to the client arrive here (the session key names this node as
// its Front), the Front hands each to the client's connection, the client
// checks it and decides, and on approval hands back the joiner's grant,
// sealed to the joiner and signed by the client. This node then writes the
// grant and the channel's backlog from its own archive (ciphertext as
// signed by its authors; the client asked the node to follow the channel
// keylessly, JoinSealed) exactly as a hosting node would, so a joiner
// cannot tell a fronted host from a node. The node never holds a key or
// sees a plaintext; it can drop a knock (availability), not forge a grant
// (the channel id binds the host's key).

// maxFrontGrants bounds FrontAnswer.Grants (a session's other members
// that learn the new member list at once; more learn it when they ask).
const maxFrontGrants = 256

// FrontAnswer is a fronted host's approval of a knock.
type FrontAnswer struct {
	// Grant is the joiner's grant: sealed to the joiner, signed by the host.
	Grant *Envelope
	// Grants are fresh grants for the channel's other members, carrying
	// the new member list; they are pushed best effort after the joiner
	// confirmed (members that are not reachable ask for keys later).
	Grants []*Envelope
	// Done, if not nil, is called once: with the number of backlog
	// envelopes after the joiner confirmed, or with the error that ended
	// the admission (the joiner then holds nothing it can use beyond the
	// grant it may have read; the host should take it out again).
	Done func(backlog int, err error)
}

// Front is implemented by the gateway of a node that fronts thin clients.
type Front interface {
	// Fronts reports whether host has a connection here.
	Fronts(host string) bool
	// FrontKnock hands knock (verified, addressed to host) to host's
	// connection and waits until the host decides or ctx ends. pending is
	// called once the host holds the knock. A refusal is an error wrapping
	// one of the knock errors (ErrDenied, ErrKnockReplayed, ...);
	// ErrHostOffline when host has no connection, ErrHostBusy when it has
	// too many knocks waiting.
	FrontKnock(ctx context.Context, host string, knock *Envelope, pending func()) (FrontAnswer, error)
}

// SetFront makes this node front thin clients' sessions through f (nil:
// no longer). A rendezvous sets its remote gateway.
func (m *Mesh) SetFront(f Front) {
	m.priv.mu.Lock()
	m.priv.front = f
	m.priv.mu.Unlock()
}

func (p *private) getFront() Front {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.front
}

// admissionSink is the joiner's end of a fronted knock: a stream to a node
// (streamSink) or a thin joiner on this node's own gateway (relaySink).
type admissionSink interface {
	pending()
	refuse(err error)
	approved(grant *Envelope) error
	page(envs []*Envelope) error
	finish(n int) error
}

// frontKnock runs a knock on a session of host, a thin client this node
// fronts, and writes its outcome to sink. It returns the number of backlog
// envelopes sent and nil once the joiner confirmed.
func (m *Mesh) frontKnock(ctx context.Context, f Front, host string, knock *Envelope, sink admissionSink) (int, error) {
	k, err := parseKnock(knock)
	if err != nil || !isPrivate(k.Channel) {
		err = fmt.Errorf("%w: malformed", ErrBadKnock)
		sink.refuse(err)
		return 0, err
	}
	kctx, cancel := context.WithTimeout(ctx, knockTimeout)
	defer cancel()
	ans, err := f.FrontKnock(kctx, host, knock, sink.pending)
	if err != nil {
		if kctx.Err() != nil && ctx.Err() == nil {
			err = ErrKnockTimeout
		}
		m.log.Info("session: fronted knock refused", "host", host, "from", knock.From, "err", err)
		sink.refuse(err)
		return 0, err
	}
	n, err := m.frontAdmit(ctx, host, knock.From, k.Channel, ans.Grant, sink)
	if ans.Done != nil {
		ans.Done(n, err)
	}
	if err != nil {
		return n, err
	}
	for i, g := range ans.Grants {
		if i == maxFrontGrants || ctx.Err() != nil {
			break
		}
		if g == nil || len(g.Channel) < 2 || g.Verify() != nil {
			continue
		}
		member, err := peer.Decode(g.Channel[1:])
		if err != nil || member.String() == knock.From || member.String() == m.self {
			continue
		}
		if _, err := relayedGrant(g, host, member.String()); err == nil {
			m.pushRelayedGrant(ctx, member, g)
		}
	}
	return n, nil
}

// frontAdmit checks the host's grant for joiner on channel and writes it
// and the archived backlog of channel to sink (writeAdmission).
func (m *Mesh) frontAdmit(ctx context.Context, host, joiner, channel string, g *Envelope, sink admissionSink) (int, error) {
	fail := func(err error) (int, error) {
		return 0, fmt.Errorf("mesh: front admission for %s: %w", joiner, err)
	}
	if g == nil {
		return fail(fmt.Errorf("%w: no grant", ErrMalformed))
	}
	if err := g.Verify(); err != nil {
		return fail(err)
	}
	wg, err := relayedGrant(g, host, joiner)
	if err != nil {
		return fail(err)
	}
	if wg.Channel != channel {
		return fail(fmt.Errorf("%w: grant for another channel", ErrMalformed))
	}
	n, err := m.writeAdmission(ctx, sink, channel, g)
	if err != nil {
		return fail(err)
	}
	return n, nil
}

// pushRelayedGrant delivers a grant signed by a fronted host to member over
// /confab/private/1, best effort.
func (m *Mesh) pushRelayedGrant(ctx context.Context, member peer.ID, g *Envelope) {
	ack, err := m.sendEnvelope(ctx, member, privateProtocol, "confab-private", privTimeout, g)
	if err != nil || ack != dmOK {
		m.log.Info("private: relayed grant not delivered", "member", member, "ack", ack, "err", err)
	}
}

// streamSink writes a fronted admission to a joiner's knock stream, in the
// format of a hosting node (serveKnock, admit).
type streamSink struct{ s network.Stream }

func (k streamSink) pending() { _ = writeReply(k.s, knockReply{Status: "pending"}) }

func (k streamSink) refuse(err error) {
	_ = writeReply(k.s, knockReply{Status: "refused", Code: knockCode(err), Error: err.Error()})
}

func (k streamSink) approved(g *Envelope) error {
	_ = k.s.SetDeadline(time.Now().Add(5 * time.Minute))
	if err := writeReply(k.s, knockReply{Status: "approved"}); err != nil {
		return err
	}
	return writeFrame(k.s, g.Marshal())
}

func (k streamSink) page(envs []*Envelope) error {
	for _, e := range envs {
		if err := writeFrame(k.s, e.Marshal()); err != nil {
			return err
		}
	}
	return nil
}

func (k streamSink) finish(int) error {
	if err := writeFrame(k.s, nil); err != nil {
		return err
	}
	var ack [1]byte
	if _, err := k.s.Read(ack[:]); err != nil || ack[0] != dmOK {
		_ = k.s.Reset()
		return fmt.Errorf("joiner did not confirm: %v", err)
	}
	return nil
}

// relaySink hands a fronted admission to a thin joiner on this node's own
// gateway (RelayKnock's callbacks).
type relaySink struct {
	onPending func()
	deliver   func(grant *Envelope, page []*Envelope, done bool) error
	grant     *Envelope
}

func (k *relaySink) pending() {
	if k.onPending != nil {
		k.onPending()
		k.onPending = nil
	}
}

func (k *relaySink) refuse(error) {}

func (k *relaySink) approved(g *Envelope) error { k.grant = g; return nil }

func (k *relaySink) page(envs []*Envelope) error {
	if len(envs) == 0 {
		return nil
	}
	return k.deliver(k.grant, envs, false)
}

func (k *relaySink) finish(int) error { return k.deliver(k.grant, nil, true) }

// serveFrontKnock answers a knock stream addressed to host, a peer other
// than this node: through the Front if there is one, refused otherwise.
func (m *Mesh) serveFrontKnock(s network.Stream, e *Envelope) {
	host, err := peer.Decode(e.Channel[1:])
	f := m.priv.getFront()
	if err != nil || f == nil {
		_ = s.Reset()
		return
	}
	_ = s.SetDeadline(time.Now().Add(knockTimeout + privTimeout))
	if _, err := m.frontKnock(m.ctx, f, host.String(), e, streamSink{s}); err != nil {
		m.log.Debug("session: fronted knock ended", "host", host, "from", e.From, "err", err)
	}
}
