package rendezvous

import (
	"context"
	"fmt"
	"strings"

	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/store"
	"github.com/confabhq/confab/wsgateway"
)

// backend is what the rendezvous's gateway serves: the archive mesh, with
// joins bounded by the follower's limits and the next-seq lookup thin
// clients need.
type backend struct {
	wsgateway.Backend
	f  *follower
	db *store.DB
}

var _ wsgateway.SeqBackend = (*backend)(nil)

// Join makes the archive follow channel, within MaxChannels.
func (b *backend) Join(ctx context.Context, channel string) error {
	why, err := b.f.join(ctx, channel)
	if why == RefusedTotalLimit {
		return &wsgateway.Error{Code: wsgateway.CodePolicy, Message: err.Error()}
	}
	return err
}

// NextSeq is one past author's contiguous high-water mark on channel: the
// seq the mesh expects next (the mesh derives its expectation from the same
// mark when it loads a channel).
func (b *backend) NextSeq(ctx context.Context, channel, author string) (uint64, error) {
	if !mesh.ValidChannel(channel) {
		return 0, fmt.Errorf("rendezvous: next seq %q: %w", channel, mesh.ErrBadChannel)
	}
	hw, err := b.db.HighWater(ctx, channel)
	if err != nil {
		return 0, fmt.Errorf("rendezvous: next seq %s: %w", channel, err)
	}
	return hw[author] + 1, nil
}

var _ wsgateway.SearchBackend = (*backend)(nil)

// Search runs a full-text query over the archive's public channels (the
// index never holds private ones; direct messages are never archived).
func (b *backend) Search(ctx context.Context, query, channel string, limit int) ([]mesh.Record, error) {
	if channel != "" && !strings.HasPrefix(channel, "#") {
		return nil, &wsgateway.Error{Code: wsgateway.CodeBadChannel, Message: "search covers public #channels only"}
	}
	sb, ok := b.Backend.(wsgateway.SearchBackend)
	if !ok {
		return nil, mesh.ErrNoSearch
	}
	recs, err := sb.Search(ctx, query, channel, limit)
	if err != nil {
		return nil, err
	}
	out := recs[:0]
	for _, r := range recs {
		if strings.HasPrefix(r.Env.Channel, "#") {
			out = append(out, r)
		}
	}
	return out, nil
}

var _ wsgateway.KnockRelayBackend = (*backend)(nil)

// RelayKnock relays a thin client's session knock (signed by the client)
// to its host and hands back the grant sealed to the client and the
// backlog as ciphertext: the rendezvous holds no key for it and stores
// nothing of it.
func (b *backend) RelayKnock(ctx context.Context, knock *mesh.Envelope, front string, pending func(), deliver func(*mesh.Envelope, []*mesh.Envelope, bool) error) (int, error) {
	kb, ok := b.Backend.(wsgateway.KnockRelayBackend)
	if !ok {
		return 0, &wsgateway.Error{Code: wsgateway.CodeUnsupported, Message: "this rendezvous does not relay session knocks"}
	}
	return kb.RelayKnock(ctx, knock, front, pending, deliver)
}

var _ wsgateway.SealedBackend = (*backend)(nil)

// JoinSealed archives a thin host's session without its keys
// (private_follow): the rendezvous stores its ciphertext and serves it as
// the backlog of the knocks it fronts.
func (b *backend) JoinSealed(ctx context.Context, id, topic string) error {
	sb, ok := b.Backend.(wsgateway.SealedBackend)
	if !ok {
		return &wsgateway.Error{Code: wsgateway.CodeUnsupported, Message: "this rendezvous does not follow private channels"}
	}
	return sb.JoinSealed(ctx, id, topic)
}
