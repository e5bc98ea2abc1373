package node

import (
	"context"
	"crypto/sha256"
	"fmt"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pubsubpb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// PubSubOptions returns the gossipsub configuration every confab peer must
// share: our own protocol ids, no pubsub signatures or authors (the envelope
// is signed instead), content message ids, queues of QueueSize, flood
// publish and MaxMessageSize. It returns a fresh slice on every call, so a
// caller may append its own options (a tracer, say) to it.
func PubSubOptions() []pubsub.Option {
	return []pubsub.Option{
		pubsub.WithGossipSubProtocols(
			[]protocol.ID{GossipSubV12, GossipSubV11, GossipSubV10},
			gossipFeatures,
		),
		// Envelopes carry their author's signature, checked by the topic
		// validator mesh registers; pubsub's own signature would sign the
		// same bytes twice and reveal a per-node seqno.
		pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign),
		// StrictNoSign alone still stamps From and a per-node Seqno on every
		// message (pubsub v0.17 topic.go); WithNoAuthor drops them, and
		// with both set incoming messages that carry them are rejected. The
		// forwarding peer is Message.ReceivedFrom; the author is in the
		// envelope.
		pubsub.WithNoAuthor(),
		// With StrictNoSign there is no from/seqno, so the default id
		// (from‖seqno) would make every message collide: content ids are
		// required, and they make re-published duplicates collapse.
		pubsub.WithMessageIdFn(MessageID),
		pubsub.WithPeerOutboundQueueSize(QueueSize),
		pubsub.WithValidateQueueSize(QueueSize),
		pubsub.WithFloodPublish(true),
		pubsub.WithMaxMessageSize(MaxMessageSize),
	}
}

// NewPubSub starts gossipsub on h with PubSubOptions followed by extra (later
// options override earlier ones). The router runs until ctx is cancelled;
// the caller cancels it before closing h. New uses it, and so can anything
// that must speak confab's gossipsub on a host node did not build (a
// simulated network in a benchmark, say).
func NewPubSub(ctx context.Context, h host.Host, extra ...pubsub.Option) (*pubsub.PubSub, error) {
	ps, err := pubsub.NewGossipSub(ctx, h, append(PubSubOptions(), extra...)...)
	if err != nil {
		return nil, fmt.Errorf("node: gossipsub: %w", err)
	}
	return ps, nil
}

// gossipFeatures maps our protocol ids onto gossipsub feature levels the way
// pubsub.GossipSubDefaultFeatures does for the public ids.
func gossipFeatures(feat pubsub.GossipSubFeature, proto protocol.ID) bool {
	switch feat {
	case pubsub.GossipSubFeatureMesh:
		return proto == GossipSubV12 || proto == GossipSubV11 || proto == GossipSubV10
	case pubsub.GossipSubFeaturePX:
		return proto == GossipSubV12 || proto == GossipSubV11
	case pubsub.GossipSubFeatureIdontwant:
		return proto == GossipSubV12
	default:
		return false
	}
}

// MessageID is the gossipsub message id: the raw 32-byte sha256 of the
// message data, so identical envelopes share one id whoever forwards them.
func MessageID(m *pubsubpb.Message) string {
	sum := sha256.Sum256(m.GetData())
	return string(sum[:])
}
