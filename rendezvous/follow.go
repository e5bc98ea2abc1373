package rendezvous

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/confabhq/confab/mesh"
)

// FollowProtocol is the stream protocol by which an agent asks a rendezvous
// to follow (join and archive) its channels. One request and one reply per
// stream, each one JSON object:
//
//	→ {"type":"follow","v":1,"channels":["#general","#dev"],
//	   "private":[{"channel":"~<32 hex>","topic":"/confab/chan/1/<64 hex>"}]}
//	← {"type":"follow","v":1,"following":["#dev","#general","~<32 hex>"],"refused":{"#x":"total_limit"}}
//
// following lists the requested channels the rendezvous now follows;
// refused maps the others to a reason: "bad_channel" (not a public
// #channel, or not a private ~id), "bad_topic" (a private entry whose topic
// is not a private channel's gossip topic), "peer_limit"
// (MaxFollowPerPeer, public and private together), "total_limit"
// (MaxChannels) or "error". Requests are idempotent; asking again for
// followed channels is free.
//
// private (optional, at most MaxFollowRequest entries) asks the rendezvous
// to archive private channels of which the requester is a member, by id and
// current gossip topic (mesh.PrivateTopic). The rendezvous holds no keys:
// it joins the topic with mesh.JoinSealed, stores the members' ciphertext as
// signed and serves it over /confab/sync/1 to whoever asks by id. The
// confidentiality of a private channel rests on its encryption; the archive
// sees ciphertext, channel ids, authors, sizes and times. After a key
// rotation members send the new topic and the archive moves to it. The
// rendezvous cannot check that a requester is a member: a peer that knows an
// id can point the archive at a wrong topic for it (the archive then misses
// live messages until a member sends the right topic again, which members do
// whenever their topic changes or they reconnect).
const FollowProtocol = protocol.ID("/confab/follow/1")

// Limits of the follow protocol.
const (
	MaxFollowRequest  = 64               // channels in one request, and private entries
	maxFollowBytes    = 32 << 10         // bytes of a request or reply
	followTimeout     = 10 * time.Second // one exchange, both sides
	followRefusalSize = MaxFollowRequest // reasons in one reply
)

// Refusal reasons in a follow reply.
const (
	RefusedBadChannel = "bad_channel"
	RefusedBadTopic   = "bad_topic"
	RefusedPeerLimit  = "peer_limit"
	RefusedTotalLimit = "total_limit"
	RefusedError      = "error"
)

// ErrFollowRefused is wrapped by Follow when the reply is malformed.
var ErrFollowRefused = errors.New("rendezvous: follow refused")

// FollowRequest is the request of FollowProtocol.
type FollowRequest struct {
	Type     string         `json:"type"` // "follow"
	V        int            `json:"v"`    // 1
	Channels []string       `json:"channels"`
	Private  []PrivateEntry `json:"private,omitempty"`
}

// PrivateEntry asks for the ciphertext archive of a private channel: its id
// ("~" + 32 hex) and its current gossip topic (see mesh.ValidSealedTopic).
type PrivateEntry struct {
	Channel string `json:"channel"`
	Topic   string `json:"topic"`
}

// FollowReply is the reply of FollowProtocol.
type FollowReply struct {
	Type      string            `json:"type"` // "follow"
	V         int               `json:"v"`    // 1
	Following []string          `json:"following"`
	Refused   map[string]string `json:"refused,omitempty"`
}

// DecodeFollowRequest parses and bounds a request read from the network.
func DecodeFollowRequest(b []byte) (*FollowRequest, error) {
	if len(b) > maxFollowBytes {
		return nil, fmt.Errorf("follow request: %d bytes, limit %d", len(b), maxFollowBytes)
	}
	var r FollowRequest
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("follow request: %w", err)
	}
	switch {
	case r.Type != "follow" || r.V != 1:
		return nil, fmt.Errorf("follow request: type %q v %d", r.Type, r.V)
	case len(r.Channels) > MaxFollowRequest:
		return nil, fmt.Errorf("follow request: %d channels, limit %d", len(r.Channels), MaxFollowRequest)
	case len(r.Private) > MaxFollowRequest:
		return nil, fmt.Errorf("follow request: %d private entries, limit %d", len(r.Private), MaxFollowRequest)
	}
	return &r, nil
}

// Follow asks the rendezvous p (already connected or dialable through h's
// peerstore) to follow channels and returns its reply.
func Follow(ctx context.Context, h host.Host, p peer.ID, channels []string) (*FollowReply, error) {
	return FollowPrivate(ctx, h, p, channels, nil)
}

// FollowPrivate is Follow with private channels to archive as ciphertext
// (at most MaxFollowRequest of each; the rest is not sent).
func FollowPrivate(ctx context.Context, h host.Host, p peer.ID, channels []string, private []PrivateEntry) (*FollowReply, error) {
	if len(channels) > MaxFollowRequest {
		channels = channels[:MaxFollowRequest]
	}
	if len(private) > MaxFollowRequest {
		private = private[:MaxFollowRequest]
	}
	ctx, cancel := context.WithTimeout(ctx, followTimeout)
	defer cancel()
	s, err := h.NewStream(ctx, p, FollowProtocol)
	if err != nil {
		return nil, fmt.Errorf("rendezvous: follow %s: %w", p, err)
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(followTimeout))
	req, _ := json.Marshal(FollowRequest{Type: "follow", V: 1, Channels: channels, Private: private})
	if _, err := s.Write(req); err != nil {
		s.Reset()
		return nil, fmt.Errorf("rendezvous: follow %s: %w", p, err)
	}
	if err := s.CloseWrite(); err != nil {
		s.Reset()
		return nil, fmt.Errorf("rendezvous: follow %s: %w", p, err)
	}
	b, err := io.ReadAll(io.LimitReader(s, maxFollowBytes+1))
	if err != nil {
		s.Reset()
		return nil, fmt.Errorf("rendezvous: follow %s: %w", p, err)
	}
	var r FollowReply
	if len(b) > maxFollowBytes || json.Unmarshal(b, &r) != nil || r.Type != "follow" {
		return nil, fmt.Errorf("rendezvous: follow %s: %w: bad reply", p, ErrFollowRefused)
	}
	return &r, nil
}

// follower serves FollowProtocol and the gateway's joins: it makes the
// archive mesh join channels within MaxChannels in total and
// MaxFollowPerPeer per peer.
type follower struct {
	m        *mesh.Mesh
	max      int
	perPeer  int
	wg       sync.WaitGroup // running stream handlers
	joinMu   sync.Mutex     // serialises the total-limit check with Join
	mu       sync.Mutex     // guards the fields below (leaf)
	closed   bool
	byPeer   map[peer.ID][]string
	refusals uint64

	spoke func(peer.ID) // told of every well-formed request's sender (relay membership); may be nil
}

func newFollower(m *mesh.Mesh, max, perPeer int) *follower {
	return &follower{m: m, max: max, perPeer: perPeer, byPeer: make(map[peer.ID][]string)}
}

// join makes the archive follow channel, within MaxChannels. It returns a
// refusal reason, or "".
func (f *follower) join(ctx context.Context, channel string) (string, error) {
	if !mesh.ValidChannel(channel) || channel[0] != '#' {
		return RefusedBadChannel, fmt.Errorf("follow %q: %w", channel, mesh.ErrBadChannel)
	}
	f.joinMu.Lock()
	defer f.joinMu.Unlock()
	chs := f.m.Channels()
	if slices.Contains(chs, channel) {
		return "", nil
	}
	if len(chs) >= f.max {
		f.refused()
		return RefusedTotalLimit, fmt.Errorf("follow %s: the rendezvous follows %d channels, its limit", channel, f.max)
	}
	if err := f.m.Join(ctx, channel); err != nil {
		return RefusedError, err
	}
	return "", nil
}

func (f *follower) refused() {
	f.mu.Lock()
	f.refusals++
	f.mu.Unlock()
}

// handle serves one follow stream.
func (f *follower) handle(s network.Stream) {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		s.Reset()
		return
	}
	f.wg.Add(1)
	f.mu.Unlock()
	defer f.wg.Done()
	defer s.Close()
	s.SetDeadline(time.Now().Add(followTimeout))
	b, err := io.ReadAll(io.LimitReader(s, maxFollowBytes+1))
	if err != nil {
		s.Reset()
		return
	}
	req, err := DecodeFollowRequest(b)
	if err != nil {
		s.Reset()
		return
	}
	if f.spoke != nil {
		f.spoke(s.Conn().RemotePeer())
	}
	ctx, cancel := context.WithTimeout(context.Background(), followTimeout)
	defer cancel()
	rep := f.follow(ctx, s.Conn().RemotePeer(), req.Channels, req.Private)
	out, _ := json.Marshal(rep)
	s.Write(out)
}

// follow applies one request of peer p.
func (f *follower) follow(ctx context.Context, p peer.ID, channels []string, private []PrivateEntry) *FollowReply {
	rep := &FollowReply{Type: "follow", V: 1, Following: []string{}}
	refuse := func(ch, why string) {
		if rep.Refused == nil {
			rep.Refused = map[string]string{}
		}
		if len(rep.Refused) < followRefusalSize {
			rep.Refused[ch] = why
		}
	}
	for _, ch := range channels {
		if !mesh.ValidChannel(ch) || ch[0] != '#' {
			refuse(ch, RefusedBadChannel)
			continue
		}
		if !f.count(p, ch) {
			refuse(ch, RefusedPeerLimit)
			continue
		}
		if why, _ := f.join(ctx, ch); why != "" {
			refuse(ch, why)
			continue
		}
		rep.Following = append(rep.Following, ch)
	}
	for _, e := range private {
		if !mesh.ValidChannel(e.Channel) || e.Channel[0] != '~' {
			refuse(e.Channel, RefusedBadChannel)
			continue
		}
		if !mesh.ValidSealedTopic(e.Topic) {
			refuse(e.Channel, RefusedBadTopic)
			continue
		}
		if !f.count(p, e.Channel) {
			refuse(e.Channel, RefusedPeerLimit)
			continue
		}
		if why, _ := f.joinSealed(ctx, e.Channel, e.Topic); why != "" {
			refuse(e.Channel, why)
			continue
		}
		rep.Following = append(rep.Following, e.Channel)
	}
	slices.Sort(rep.Following)
	return rep
}

// count records that p asked for ch and reports whether p is within
// MaxFollowPerPeer.
func (f *follower) count(p peer.ID, ch string) bool {
	f.mu.Lock()
	mine := f.byPeer[p]
	known := slices.Contains(mine, ch)
	full := !known && len(mine) >= f.perPeer
	if !known && !full {
		f.byPeer[p] = append(mine, ch)
	}
	f.mu.Unlock()
	if full {
		f.refused()
	}
	return !full
}

// joinSealed makes the archive follow private channel id on topic without
// keys (ciphertext only), within MaxChannels. It returns a refusal reason,
// or "".
func (f *follower) joinSealed(ctx context.Context, id, topic string) (string, error) {
	f.joinMu.Lock()
	defer f.joinMu.Unlock()
	if chs := f.m.Channels(); !slices.Contains(chs, id) && len(chs) >= f.max {
		f.refused()
		return RefusedTotalLimit, fmt.Errorf("follow %s: the rendezvous follows %d channels, its limit", id, f.max)
	}
	if err := f.m.JoinSealed(ctx, id, topic); err != nil {
		return RefusedError, err
	}
	return "", nil
}

// close stops accepting streams and waits for the running ones.
func (f *follower) close() {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.wg.Wait()
}
