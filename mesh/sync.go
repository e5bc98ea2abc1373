package mesh

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Catch-up stream protocol. The requester sends one JSON SyncRequest,
// prefixed by its 4-byte big-endian length; the responder answers with
// envelopes in binary form, each prefixed by its 4-byte length, then a zero
// length and one byte: 1 if more remain (ask again with updated marks), 0 if
// not. See docs/protocol.md.
const (
	syncProtocol   = "/confab/sync/1"
	maxSyncRequest = 256 << 10
	maxSyncAuthors = 4096
	syncPage       = 1000
	maxSyncPages   = 1000
	syncTimeout    = 30 * time.Second
)

// SyncRequest asks a peer for a channel's envelopes past the requester's
// per-author high-water marks.
type SyncRequest struct {
	Type    string            `json:"type"` // "sync"
	V       int               `json:"v"`    // 1
	Channel string            `json:"channel"`
	Have    map[string]uint64 `json:"have"`
	Limit   int               `json:"limit"`
}

// DecodeSyncRequest parses and bounds a request read from the network.
func DecodeSyncRequest(b []byte) (*SyncRequest, error) {
	if len(b) > maxSyncRequest {
		return nil, fmt.Errorf("%w: sync request of %d bytes", ErrTooLarge, len(b))
	}
	var r SyncRequest
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%w: sync request: %v", ErrMalformed, err)
	}
	if r.Type != "sync" || r.V != 1 || !ValidChannel(r.Channel) || len(r.Have) > maxSyncAuthors {
		return nil, fmt.Errorf("%w: sync request fields", ErrMalformed)
	}
	for a := range r.Have {
		if _, err := AuthorKey(a); err != nil {
			return nil, err
		}
	}
	if r.Limit <= 0 || r.Limit > syncPage {
		r.Limit = syncPage
	}
	return &r, nil
}

func writeFrame(w io.Writer, b []byte) error {
	var l [4]byte
	binary.BigEndian.PutUint32(l[:], uint32(len(b)))
	if _, err := w.Write(l[:]); err != nil {
		return err
	}
	_, err := w.Write(b)
	return err
}

// readFrame reads one length-prefixed frame of at most limit bytes.
func readFrame(r io.Reader, limit int) ([]byte, error) {
	var l [4]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(l[:])
	if int64(n) > int64(limit) {
		return nil, fmt.Errorf("%w: frame of %d bytes", ErrTooLarge, n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	return b, nil
}

// serveSync answers one catch-up request for a joined public channel.
func (m *Mesh) serveSync(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(syncTimeout))
	br := bufio.NewReader(s)
	b, err := readFrame(br, maxSyncRequest)
	if err != nil {
		_ = s.Reset()
		return
	}
	req, err := DecodeSyncRequest(b)
	if err != nil {
		m.stats.add(&m.stats.RejectedInvalid, 1)
		_ = s.Reset()
		return
	}
	if _, err := m.channel(req.Channel); err != nil {
		_ = s.Reset() // we do not serve channels we are not in
		return
	}
	if isPrivate(req.Channel) && !m.priv.maySync(req.Channel, s.Conn().RemotePeer().String()) {
		_ = s.Reset() // private.go: only members (and archives they allowed) pull a private channel
		return
	}
	m.stats.add(&m.stats.SyncServed, 1)
	ctx, cancel := context.WithTimeout(m.ctx, syncTimeout)
	defer cancel()
	hw, err := m.hist.HighWater(ctx, req.Channel)
	if err != nil {
		_ = s.Reset()
		return
	}
	authors := slices.Sorted(maps.Keys(hw))
	bw := bufio.NewWriter(s)
	budget := req.Limit
	more := false
	for _, a := range authors {
		if hw[a] <= req.Have[a] {
			continue
		}
		if budget == 0 {
			more = true
			break
		}
		envs, err := m.hist.Since(ctx, req.Channel, a, req.Have[a], budget)
		if err != nil {
			_ = s.Reset()
			return
		}
		for _, e := range envs {
			if err := writeFrame(bw, e.Marshal()); err != nil {
				_ = s.Reset()
				return
			}
		}
		budget -= len(envs)
		if budget == 0 && hw[a] > req.Have[a]+uint64(len(envs)) {
			more = true
		}
	}
	flag := byte(0)
	if more {
		flag = 1
	}
	if writeFrame(bw, nil) != nil || bw.WriteByte(flag) != nil || bw.Flush() != nil {
		_ = s.Reset()
	}
}

// catchUp pulls from p everything of c it lacks, page by page, and feeds it
// through c's ordering loop.
func (m *Mesh) catchUp(c *channel, p peer.ID) error {
	m.stats.add(&m.stats.SyncRequests, 1)
	ctx, cancel := context.WithTimeout(c.ctx, 10*syncTimeout)
	defer cancel()
	have, err := m.hist.HighWater(ctx, c.name)
	if err != nil {
		return err
	}
	for page := 0; page < maxSyncPages; page++ {
		more, err := m.syncPage(ctx, c, p, have)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

func (m *Mesh) syncPage(ctx context.Context, c *channel, p peer.ID, have map[string]uint64) (bool, error) {
	if len(have) > maxSyncAuthors {
		return false, errors.New("too many authors to sync")
	}
	s, err := m.node.Host().NewStream(network.WithAllowLimitedConn(ctx, "confab-sync"), p, syncProtocol)
	if err != nil {
		return false, err
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(syncTimeout))
	req, _ := json.Marshal(SyncRequest{Type: "sync", V: 1, Channel: c.name, Have: have, Limit: syncPage})
	if err := writeFrame(s, req); err != nil {
		_ = s.Reset()
		return false, err
	}
	_ = s.CloseWrite()
	br := bufio.NewReader(s)
	n := 0
	for {
		b, err := readFrame(br, MaxEnvelopeLen)
		if err != nil {
			_ = s.Reset()
			return false, err
		}
		if len(b) == 0 {
			break
		}
		if n++; n > syncPage {
			_ = s.Reset()
			return false, fmt.Errorf("%w: peer sent more than a page", ErrMalformed)
		}
		e, err := Unmarshal(b)
		if err == nil {
			err = e.Verify()
		}
		if err == nil && isPrivate(c.name) && !sealedForm(e) {
			err = fmt.Errorf("%w: not a private channel's ciphertext", ErrMalformed)
		}
		if err != nil || e.Channel != c.name {
			m.stats.add(&m.stats.RejectedInvalid, 1)
			_ = s.Reset()
			return false, fmt.Errorf("peer sent an invalid envelope: %v", err)
		}
		if e.Seq > have[e.From] {
			have[e.From] = e.Seq
		}
		m.stats.add(&m.stats.SyncEnvelopesIn, 1)
		select {
		case c.in <- &item{env: e}:
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	flag, err := br.ReadByte()
	if err != nil {
		return false, err
	}
	return flag == 1 && n > 0, nil
}
