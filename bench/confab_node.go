package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/node"
	"github.com/confabhq/confab/store"
)

// confabNode is one confab agent as the product runs it, minus the gateway:
// node.Host (127.0.0.1 TCP, mDNS off) + store.DB + mesh.Mesh.
type confabNode struct {
	h    *node.Host
	db   *store.DB
	m    *mesh.Mesh
	dir  string // temp dir of an on-disk store, removed by Close
	once sync.Once
	err  error
}

// confabOpts selects how a benchmark node is built.
type confabOpts struct {
	disk   bool          // store on disk (under benchDir) instead of in memory
	mesh   []mesh.Option // appended to the benchmark defaults
	extraN []node.Option
}

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// benchMeshOptions are the mesh options every confab benchmark node uses:
// the per-author live rate limit (default 1000/s, burst 4000) is raised so
// the lossless-rate search measures delivery, not the abuse limit.
func benchMeshOptions() []mesh.Option {
	return []mesh.Option{mesh.WithAuthorRate(1e6, 1<<20), mesh.WithLogger(discard)}
}

func newConfabNode(o confabOpts) (*confabNode, error) {
	c := &confabNode{}
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return nil, fmt.Errorf("bench: key: %w", err)
	}
	cfg := store.DefaultConfig()
	cfg.Logger = discard
	if o.disk {
		c.dir, err = os.MkdirTemp(benchDir, "confab-bench-store-")
		if err != nil {
			return nil, fmt.Errorf("bench: store dir: %w", err)
		}
		cfg.Dir = filepath.Join(c.dir, "store")
	} else {
		cfg.InMemory = true
	}
	c.db, err = store.New(cfg)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("bench: store: %w", err)
	}
	nopts := append([]node.Option{node.WithIdentity(key), node.WithListen("/ip4/127.0.0.1/tcp/0"), node.WithMDNS(false)}, o.extraN...)
	c.h, err = node.New(nopts...)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("bench: node: %w", err)
	}
	c.m, err = mesh.New(c.h, c.db, append(benchMeshOptions(), o.mesh...)...)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("bench: mesh: %w", err)
	}
	return c, nil
}

// connectConfab dials b from a.
func connectConfab(ctx context.Context, a, b *confabNode) error {
	return connect(ctx, a.h.Host(), b.h.Host())
}

// Close stops the mesh, then the node, then the store, and removes an
// on-disk store's directory.
func (c *confabNode) Close() error {
	c.once.Do(func() {
		var errs []error
		if c.m != nil {
			errs = append(errs, c.m.Close())
		}
		if c.h != nil {
			errs = append(errs, c.h.Close())
		}
		if c.db != nil {
			errs = append(errs, c.db.Close())
		}
		if c.dir != "" {
			errs = append(errs, os.RemoveAll(c.dir))
		}
		c.err = errors.Join(errs...)
	})
	return c.err
}

// closeConfab closes nodes concurrently (each Close waits for libp2p's
// loops, which takes a while per node at 50 nodes).
func closeConfab(nodes []*confabNode) error {
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		if n == nil {
			continue
		}
		wg.Go(func() { errs[i] = n.Close() })
	}
	wg.Wait()
	return errors.Join(errs...)
}
