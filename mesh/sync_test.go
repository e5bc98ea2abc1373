package mesh_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/node"
)

// TestCatchUpManyPages: a node that joins empty pulls a backlog of several
// store pages from one author (more than one stream of an older responder)
// and stores and delivers it exactly once, in order.
func TestCatchUpManyPages(t *testing.T) {
	const ch, n = "#backlog", 2500
	a := startAgentWith(t, t.TempDir(), "atlas", nil)
	joinAll(t, ch, a)
	author, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	var envs []*mesh.Envelope
	for seq := uint64(1); seq <= n; seq++ {
		e := &mesh.Envelope{Channel: ch, Name: "author", Seq: seq, TS: time.Now().UnixMilli(), Kind: "msg", Content: "backlog"}
		if err := e.Sign(author); err != nil {
			t.Fatal(err)
		}
		envs = append(envs, e)
	}
	if _, err := a.db.Append(context.Background(), envs); err != nil {
		t.Fatal(err)
	}
	from, _ := peer.IDFromPrivateKey(author)
	b := startAgentWith(t, t.TempDir(), "nova", nil)
	sub := b.mesh.Subscribe([]string{ch}, 2*n)
	defer sub.Close()
	got := collect(sub)
	joinAll(t, ch, b)
	if err := b.node.Host().Connect(context.Background(), peer.AddrInfo{ID: a.node.Host().ID(), Addrs: a.node.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "the backlog at b", func() bool {
		hw, _ := b.db.HighWater(context.Background(), ch)
		return hw[from.String()] == n
	})
	waitFor(t, 10*time.Second, "delivery of the backlog", func() bool { return got.len() >= n })
	checkExactlyOnceInOrder(t, "b", got.snapshot(), n)
}

// TestCatchUpStopsAtInvalidEnvelope: a peer that answers catch-up with a
// forged envelope in the middle of a stream gets the verified envelopes
// before it stored, and nothing from the forged one on.
func TestCatchUpStopsAtInvalidEnvelope(t *testing.T) {
	const ch, good = "#forged", 300
	author, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	var frames [][]byte
	for seq := uint64(1); seq <= good+50; seq++ {
		e := &mesh.Envelope{Channel: ch, Name: "author", Seq: seq, TS: time.Now().UnixMilli(), Kind: "msg", Content: "stream"}
		if err := e.Sign(author); err != nil {
			t.Fatal(err)
		}
		b := e.Marshal()
		if seq == good+1 {
			b[len(b)-1] ^= 1 // a bad signature
		}
		frames = append(frames, b)
	}
	// The forger: a bare node in the channel's topic serving the stream.
	fk, _, _ := crypto.GenerateEd25519Key(nil)
	f, err := node.New(node.WithIdentity(fk), node.WithListen("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	topic, err := f.PubSub().Join("/confab/chan/1/" + ch)
	if err != nil {
		t.Fatal(err)
	}
	defer topic.Close()
	fsub, err := topic.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	defer fsub.Cancel()
	f.Host().SetStreamHandler("/confab/sync/1", func(s network.Stream) {
		defer s.Close()
		br := bufio.NewReader(s)
		var l [4]byte
		if _, err := io.ReadFull(br, l[:]); err != nil {
			return
		}
		if _, err := io.CopyN(io.Discard, br, int64(binary.BigEndian.Uint32(l[:]))); err != nil {
			return
		}
		bw := bufio.NewWriter(s)
		for _, b := range append(frames, nil) {
			binary.BigEndian.PutUint32(l[:], uint32(len(b)))
			bw.Write(l[:])
			bw.Write(b)
		}
		bw.WriteByte(0)
		bw.Flush()
	})

	b := startAgentWith(t, t.TempDir(), "nova", nil)
	joinAll(t, ch, b)
	if err := b.node.Host().Connect(context.Background(), peer.AddrInfo{ID: f.Host().ID(), Addrs: f.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	from, _ := peer.IDFromPrivateKey(author)
	waitFor(t, 60*time.Second, "the forged stream refused", func() bool { return b.mesh.Stats().RejectedInvalid > 0 })
	waitFor(t, 30*time.Second, "the verified prefix stored", func() bool {
		hw, _ := b.db.HighWater(context.Background(), ch)
		return hw[from.String()] == good
	})
	if after, err := b.db.Since(context.Background(), ch, from.String(), good, 0); err != nil || len(after) != 0 {
		t.Errorf("stored past the forged envelope: %d envelopes, err %v", len(after), err)
	}
	if held := b.mesh.Stats().HeldBack; held != 0 {
		t.Errorf("%d envelopes past the forged one were queued (held back)", held)
	}
}
