package mesh

import (
	"context"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
)

// validator is the gossipsub validator of a channel's topic: schema, size,
// signature (author == signer), channel, timestamp window, per-author rate.
func (m *Mesh) validator(name string) pubsub.ValidatorEx {
	return func(ctx context.Context, from peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
		e, err := Unmarshal(msg.Data)
		if err == nil {
			err = e.Verify()
		}
		if err != nil || e.Channel != name {
			m.stats.add(&m.stats.RejectedInvalid, 1)
			return pubsub.ValidationReject
		}
		if isPrivate(name) && !m.priv.mayPost(name, e) { // private.go: members' ciphertext only
			m.stats.add(&m.stats.RejectedInvalid, 1)
			return pubsub.ValidationIgnore
		}
		now := time.Now()
		ts := time.UnixMilli(e.TS)
		if ts.Before(now.Add(-m.cfg.pastWindow)) || ts.After(now.Add(m.cfg.futureWindow)) {
			m.stats.add(&m.stats.IgnoredWindow, 1)
			return pubsub.ValidationIgnore
		}
		if e.From != m.self && !m.rate.allow(e.From, now) {
			m.stats.add(&m.stats.RateDrops, 1)
			return pubsub.ValidationIgnore
		}
		msg.ValidatorData = e
		return pubsub.ValidationAccept
	}
}
