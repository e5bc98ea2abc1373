package node

import (
	"sync/atomic"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// countTracer counts received RPCs.
type countTracer struct{ recv atomic.Int64 }

func (c *countTracer) OnNewOutboundStream(peer.ID, protocol.ID) {}
func (c *countTracer) OnClosedOutboundStream(peer.ID)           {}
func (c *countTracer) Join(string)                              {}
func (c *countTracer) Leave(string)                             {}
func (c *countTracer) Graft(peer.ID, string)                    {}
func (c *countTracer) Prune(peer.ID, string)                    {}
func (c *countTracer) ValidateMessage(*pubsub.Message)          {}
func (c *countTracer) DeliverMessage(*pubsub.Message)           {}
func (c *countTracer) RejectMessage(*pubsub.Message, string)    {}
func (c *countTracer) DuplicateMessage(*pubsub.Message)         {}
func (c *countTracer) ThrottlePeer(peer.ID)                     {}
func (c *countTracer) RecvRPC(*pubsub.RPC)                      { c.recv.Add(1) }
func (c *countTracer) SendRPC(*pubsub.RPC, peer.ID)             {}
func (c *countTracer) DropRPC(*pubsub.RPC, peer.ID)             {}
func (c *countTracer) UndeliverableMessage(*pubsub.Message)     {}
