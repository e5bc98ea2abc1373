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
// publish, MaxMessageSize and a mesh degree of 4 (GossipSubParams). It returns a fresh slice on every call, so a
// caller may append its own options (a tracer, say) to it.
func PubSubOptions() []pubsub.Option {
	return []pubsub.Option{
		// First: it replaces the router's whole parameter set.
		pubsub.WithGossipSubParams(GossipSubParams()),
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

// GossipSubParams are gossipsub's defaults with a mesh degree of 4 (D 4,
// Dlo 3, Dhi 8, Dout 1, Dscore 2) instead of 6 (5, 12, 2, 4). Every member
// that receives a message forwards it to all its mesh peers but the sender,
// and flood publishing already hands the author's message to every connected
// topic peer, so in a small, well-connected channel nearly every forward is
// a duplicate the receiver reads, decrypts and drops. Measured with 10
// agents in one process (bench topology, 500 messages at 100 msg/s, pubsub
// tracer): duplicates per delivery fell from 6.6 to 4.0, RPCs sent per
// delivery from 7.6 to 5.1, process CPU by 5–17% (noisy machine); with 50
// agents duplicates per delivery fell from 7.4 to 4.7 and CPU per delivery
// from 268 to 223 µs. Two cores are the limit of the channel benchmarks, so
// that is latency and throughput. What it costs: fewer redundant paths
// (at least 3 mesh peers instead of 5), repaired as before by gossip (IHAVE
// to 6 other peers every heartbeat) and by mesh's catch-up. Each node
// chooses its own degree; peers with other settings interoperate.
func GossipSubParams() pubsub.GossipSubParams {
	p := pubsub.DefaultGossipSubParams()
	p.D, p.Dlo, p.Dhi, p.Dout, p.Dscore = 4, 3, 8, 1, 2
	return p
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
