package store

import (
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/confabhq/confab/mesh"
)

func newKey(tb testing.TB) crypto.PrivKey {
	tb.Helper()
	priv, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return priv
}

// signed returns an envelope signed by priv.
func signed(tb testing.TB, priv crypto.PrivKey, channel string, seq uint64, content string) *mesh.Envelope {
	tb.Helper()
	e := &mesh.Envelope{
		Channel: channel,
		Name:    "tester",
		Seq:     seq,
		TS:      time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli() + int64(seq),
		Kind:    "msg",
		Content: content,
	}
	if err := e.Sign(priv); err != nil {
		tb.Fatal(err)
	}
	return e
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// open opens a store on dir (a temp dir if ""), closed at cleanup.
func open(tb testing.TB, dir string) *DB {
	tb.Helper()
	if dir == "" {
		dir = tb.TempDir()
	}
	cfg := DefaultConfig()
	cfg.Dir = dir
	cfg.Logger = quietLogger()
	db, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

func ids(envs []*mesh.Envelope) []string {
	out := make([]string, len(envs))
	for i, e := range envs {
		out[i] = e.ID
	}
	return out
}

func contents(envs []*mesh.Envelope) []string {
	out := make([]string, len(envs))
	for i, e := range envs {
		out[i] = e.Content
	}
	return out
}

func seqs(envs []*mesh.Envelope) []uint64 {
	out := make([]uint64, len(envs))
	for i, e := range envs {
		out[i] = e.Seq
	}
	return out
}

func nth(prefix string, n int) string { return fmt.Sprintf("%s%d", prefix, n) }
