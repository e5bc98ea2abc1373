package mesh

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/multiformats/go-multihash"
)

// Router is the optional part of Node that gives mesh the Kademlia DHT;
// *node.Host satisfies it. A Node without it still finds agents known from
// presence.
type Router interface {
	DHT() *dht.IpfsDHT
}

// Capability discovery. Each agent puts one provider record per capability
// under CapKey(cap) and re-provides it every reprovide interval (default
// DefaultReprovide, well inside the DHT's 48 h record lifetime), and again
// 10 s after a provide made while its routing table held fewer than 20
// peers if it has grown since (so records reach the right peers while a
// network forms). Provides run in the
// background with provideTimeout each, never on a request path.
const (
	capKeyPrefix   = "confab/cap/v1/"
	provideTimeout = 30 * time.Second
	findTimeout    = 10 * time.Second
	// DefaultReprovide is how often capabilities are provided again.
	DefaultReprovide = 22 * time.Hour
	maxFindResults   = 100
	findParallel     = 8
	regrowCheck      = 10 * time.Second
	regrowBelow      = 20 // the DHT's bucket size: below it, records may miss peers that join later
)

// WithReprovide sets how often the agent's capability records are provided
// again. Default DefaultReprovide; it must stay below the DHT's 48 h record
// lifetime.
func WithReprovide(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 || d >= 48*time.Hour {
			return errors.New("mesh: reprovide interval must be positive and below 48 h")
		}
		c.reprovide = d
		return nil
	}
}

// CapKey is the DHT key of a capability: CIDv1 (raw codec) of
// sha256("confab/cap/v1/" + capability).
func CapKey(capability string) (cid.Cid, error) {
	if !kindRE.MatchString(capability) {
		return cid.Undef, fmt.Errorf("mesh: capability %q: %w", trunc(capability), ErrMalformed)
	}
	h, err := multihash.Sum([]byte(capKeyPrefix+capability), multihash.SHA2_256, -1)
	if err != nil {
		return cid.Undef, err
	}
	return cid.NewCidV1(cid.Raw, h), nil
}

func (m *Mesh) dht() *dht.IpfsDHT {
	if r, ok := m.node.(Router); ok {
		return r.DHT()
	}
	return nil
}

// provideLoop keeps our capability records in the DHT. Runs until Close.
func (m *Mesh) provideLoop(d *dht.IpfsDHT) {
	defer m.wg.Done()
	keys := make([]cid.Cid, 0, len(m.cfg.caps))
	for _, c := range m.cfg.caps {
		if k, err := CapKey(c); err == nil {
			keys = append(keys, k)
		}
	}
	backoff := time.Second
	for {
		size := d.RoutingTable().Size()
		err := m.provide(d, keys)
		var wait time.Duration
		if err != nil {
			m.log.Debug("provide failed; retrying", "err", err, "in", backoff)
			wait = backoff
			backoff = min(2*backoff, time.Minute)
		} else {
			backoff = time.Second
			wait = m.cfg.reprovide
		}
		deadline := time.Now().Add(wait)
		for time.Now().Before(deadline) {
			step := min(time.Until(deadline), regrowCheck)
			select {
			case <-m.ctx.Done():
				return
			case <-time.After(step):
			}
			if err == nil && size < regrowBelow && d.RoutingTable().Size() > size {
				break // a small network grew: provide again so records reach the new closest peers
			}
		}
	}
}

func (m *Mesh) provide(d *dht.IpfsDHT, keys []cid.Cid) error {
	var errs []error
	for _, k := range keys {
		ctx, cancel := context.WithTimeout(m.ctx, provideTimeout)
		err := d.Provide(ctx, k, true)
		cancel()
		if err != nil {
			errs = append(errs, err)
		}
		if m.ctx.Err() != nil {
			return m.ctx.Err()
		}
	}
	return errors.Join(errs...)
}

// Find returns the agents whose verified signed card lists capability,
// available ones first, then by name and id. Candidates come from presence
// beacons and from DHT provider records (at most 100, searched for at most
// 10 s); each candidate's card is fetched over /confab/card/1 (cached for
// CardTTL) and a candidate is kept only if its card, signed by its own key,
// lists capability: a provider record or beacon alone is never enough. The
// local agent is included if it has the capability. Status is taken from the
// presence beacon when that is newer than the card.
func (m *Mesh) Find(ctx context.Context, capability string) ([]Card, error) {
	key, err := CapKey(capability)
	if err != nil {
		return nil, err
	}
	var (
		mu    sync.Mutex
		out   []Card
		seen  = map[peer.ID]bool{m.node.Host().ID(): true}
		wg    sync.WaitGroup
		slots = make(chan struct{}, findParallel)
	)
	if slices.Contains(m.cfg.caps, capability) {
		if c, err := m.Card(ctx, ""); err == nil {
			out = append(out, c)
		}
	}
	present := map[string]Peer{}
	for _, p := range m.Who(ctx, "") {
		present[p.ID] = p
	}
	confirm := func(pid peer.ID) {
		defer wg.Done()
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		defer func() { <-slots }()
		// A cached card is trusted only while we are connected to its
		// author: an agent that vanished must not be found from the cache.
		connected := m.node.Host().Network().Connectedness(pid) == network.Connected
		c, err := m.fetchCard(ctx, pid, connected)
		if err != nil {
			m.log.Debug("find: no card", "peer", pid, "err", err)
			return
		}
		if !slices.Contains(c.Caps, capability) {
			return
		}
		mu.Lock()
		out = append(out, c)
		mu.Unlock()
	}
	consider := func(pid peer.ID) {
		if seen[pid] || len(seen) > maxFindResults {
			return
		}
		seen[pid] = true
		wg.Add(1)
		go confirm(pid)
	}
	for _, p := range present {
		if !slices.Contains(p.Caps, capability) {
			continue
		}
		if pid, err := peer.Decode(p.ID); err == nil {
			consider(pid)
		}
	}
	if d := m.dht(); d != nil {
		fctx, cancel := context.WithTimeout(ctx, findTimeout)
		ps := m.node.Host().Peerstore()
		for ai := range d.FindProvidersAsync(fctx, key, maxFindResults) {
			if ai.ID == "" || seen[ai.ID] {
				continue
			}
			if len(ai.Addrs) > 0 {
				ps.AddAddrs(ai.ID, ai.Addrs, peerstore.TempAddrTTL)
			}
			consider(ai.ID)
		}
		cancel()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil && len(out) == 0 {
		return nil, fmt.Errorf("mesh: find %s: %w", capability, err)
	}
	for i := range out {
		if p, ok := present[out[i].ID]; ok && p.LastSeen.UnixMilli() > out[i].TS {
			out[i].Status = p.Status
		}
	}
	slices.SortFunc(out, func(a, b Card) int {
		if (a.Status == StatusAvailable) != (b.Status == StatusAvailable) {
			if a.Status == StatusAvailable {
				return -1
			}
			return 1
		}
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}
