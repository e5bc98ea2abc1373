package mesh

import (
	"context"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TopicOf exposes a private channel's gossipsub topic to tests that play an
// insider-grade eavesdropper.
func TopicOf(m *Mesh, channel string) string { return m.priv.topic(channel) }

// ResendKnock sends an already signed knock envelope again (a replay).
func ResendKnock(ctx context.Context, m *Mesh, host string, e *Envelope) (JoinResult, error) {
	pid, err := peer.Decode(host)
	if err != nil {
		return JoinResult{}, err
	}
	var res JoinResult
	err = m.sendKnock(ctx, pid, e, nil, func(s network.Stream) (err error) {
		res, err = m.receiveAdmission(ctx, s, pid)
		return err
	})
	return res, err
}

// GrantFor returns host's current grant of private channel id for member.
func GrantFor(host *Mesh, id, member string) (*Envelope, error) { return host.grantFor(id, member) }

// RelayGrant sends a grant signed by someone else from via to member over
// /confab/private/1 (what a node fronting a thin host does) and returns
// the member's answer byte.
func RelayGrant(ctx context.Context, via *Mesh, member string, g *Envelope) (byte, error) {
	pid, err := peer.Decode(member)
	if err != nil {
		return 0, err
	}
	return via.sendEnvelope(ctx, pid, privateProtocol, "confab-private", privTimeout, g)
}
