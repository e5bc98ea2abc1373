package agent

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/node"
	"github.com/confabhq/confab/rendezvous"
)

// followEvery is how often the agent checks whether its rendezvous nodes
// follow its current channels. A request is sent only when the channel set
// changed or the connection to the rendezvous was re-established, so a quiet
// agent costs nothing.
const followEvery = time.Second

// follower asks the agent's rendezvous nodes to follow (archive and relay
// gossip for) the agent's channels over rendezvous.FollowProtocol: public
// channels by name, private channels by id and current gossip topic (the
// rendezvous archives their ciphertext only; docs/private.md). One
// goroutine; close stops and waits for it.
type follower struct {
	host   *node.Host
	mesh   *mesh.Mesh
	peers  []peer.ID
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// startFollower starts following for the rendezvous addresses given (full
// multiaddrs with /p2p/<id>; unparseable ones were already refused by node).
func startFollower(h *node.Host, m *mesh.Mesh, addrs []string, log *slog.Logger) *follower {
	f := &follower{host: h, mesh: m, log: log, done: make(chan struct{})}
	for _, a := range addrs {
		maddr, err := ma.NewMultiaddr(a)
		if err != nil {
			continue
		}
		if ai, err := peer.AddrInfoFromP2pAddr(maddr); err == nil && !slices.Contains(f.peers, ai.ID) {
			f.peers = append(f.peers, ai.ID)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	go f.run(ctx)
	return f
}

func (f *follower) run(ctx context.Context) {
	defer close(f.done)
	sent := map[peer.ID][]string{} // request last acknowledged, per rendezvous
	t := time.NewTicker(followEvery)
	defer t.Stop()
	for {
		chans, private, state := f.request()
		for _, p := range f.peers {
			if f.host.Host().Network().Connectedness(p) != network.Connected {
				delete(sent, p) // ask again after reconnecting: it may have restarted
				continue
			}
			if len(state) == 0 || slices.Equal(sent[p], state) {
				continue
			}
			// Let the archive pull what was said before it subscribes: it
			// gets ciphertext, which it would get from gossip anyway.
			for _, e := range private {
				if err := f.mesh.AllowArchive(e.Channel, p.String()); err != nil {
					f.log.Debug("allow archive", "channel", e.Channel, "rendezvous", p, "err", err)
				}
			}
			rep, err := rendezvous.FollowPrivate(ctx, f.host.Host(), p, chans, private)
			if err != nil {
				f.log.Debug("follow request failed", "rendezvous", p, "err", err)
				continue
			}
			if len(rep.Refused) > 0 {
				f.log.Warn("rendezvous refused to follow some channels", "rendezvous", p, "refused", rep.Refused)
			}
			sent[p] = state
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// request returns the public channels and the private channels (with their
// current gossip topics) to ask for, and a summary that changes whenever
// either does: a key rotation moves a private channel to a new topic, which
// is sent again. At most rendezvous.MaxFollowRequest of each.
func (f *follower) request() (chans []string, private []rendezvous.PrivateEntry, state []string) {
	for _, ch := range f.mesh.Channels() {
		switch {
		case strings.HasPrefix(ch, "#") && len(chans) < rendezvous.MaxFollowRequest:
			chans = append(chans, ch)
			state = append(state, ch)
		case strings.HasPrefix(ch, "~") && len(private) < rendezvous.MaxFollowRequest:
			if t := f.mesh.PrivateTopic(ch); t != "" {
				private = append(private, rendezvous.PrivateEntry{Channel: ch, Topic: t})
				state = append(state, ch+" "+t)
			}
		}
	}
	return chans, private, state
}

func (f *follower) close() {
	f.once.Do(f.cancel)
	<-f.done
}
