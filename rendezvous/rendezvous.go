package rendezvous

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"

	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/node"
	"github.com/confabhq/confab/store"
	"github.com/confabhq/confab/web"
	"github.com/confabhq/confab/wsgateway"
)

// ErrRunning means another rendezvous (or agent) already uses the directory.
var ErrRunning = errors.New("rendezvous: another node is already running with this directory")

// Rendezvous is a running rendezvous node. See doc.go.
type Rendezvous struct {
	cfg    Config
	log    *slog.Logger
	db     *store.DB
	host   *node.Host
	mesh   *mesh.Mesh
	follow *follower
	relay  *members // the relay service's ACL (relay.go)
	gw     *wsgateway.Server
	gwLn   net.Listener
	opsSrv *http.Server
	opsLn  net.Listener
	lag    *lagWatcher
	page   *web.Server
	webURL string

	wg   sync.WaitGroup // serving goroutines
	once sync.Once
}

// New opens cfg.Dir (identity.key, store/, state.json), starts the libp2p
// node (DHT server, relay service with cfg.Relay, AutoNAT service, per-IP
// limit cfg.ConnPerIP, mDNS off), the archive mesh (rejoining the channels of
// state.json), the follow protocol, and binds and serves the gateway (cfg.WS)
// and operations (cfg.Metrics) listeners if set. Defaults are those of
// DefaultConfig: Name "rendezvous", Listen DefaultListen, ConnPerIP 64,
// Relay DefaultRelayResources for mesh members only (MemberWindow 10 min),
// MaxChannels 1024, MaxFollowPerPeer 64,
// gateway and metrics off, no join secret, logs discarded.
// The caller must call Close.
func New(cfg Config) (_ *Rendezvous, err error) {
	if err := cfg.fill(); err != nil {
		return nil, fmt.Errorf("rendezvous: config: %w", err)
	}
	r := &Rendezvous{cfg: cfg, log: cfg.Logger}
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("rendezvous: %w", err)
	}
	sc := store.DefaultConfig()
	sc.Dir = filepath.Join(cfg.Dir, StoreDir)
	sc.Logger = r.log
	if r.db, err = store.New(sc); err != nil {
		if errors.Is(err, store.ErrLocked) {
			return nil, fmt.Errorf("%w (%s)", ErrRunning, cfg.Dir)
		}
		return nil, fmt.Errorf("rendezvous: %w", err)
	}
	key, err := node.LoadIdentity(filepath.Join(cfg.Dir, IdentityFile))
	if err != nil {
		return nil, fmt.Errorf("rendezvous: identity: %w", err)
	}
	r.relay = newMembers(cfg.MemberWindow)
	r.host, err = node.New(
		node.WithIdentity(key),
		node.WithListen(cfg.Listen...),
		node.WithDHTServer(true),
		node.WithRelayService(*cfg.Relay, relayv2.WithACL(r.relay)),
		node.WithConnLimitPerIP(cfg.ConnPerIP),
		node.WithMDNS(false),
		node.WithLogger(r.log),
	)
	if err != nil {
		return nil, fmt.Errorf("rendezvous: %w", err)
	}
	r.mesh, err = mesh.New(r.host, r.db, mesh.WithName(cfg.Name), mesh.WithLogger(r.log),
		mesh.WithStateFile(filepath.Join(cfg.Dir, StateFile)))
	if err != nil {
		return nil, fmt.Errorf("rendezvous: %w", err)
	}
	r.relay.attach(r.mesh)
	r.follow = newFollower(r.mesh, cfg.MaxChannels, cfg.MaxFollowPerPeer)
	r.follow.spoke = r.relay.spoke
	r.host.Host().SetStreamHandler(FollowProtocol, r.follow.handle)

	if cfg.WS != "" {
		if err := r.startGateway(); err != nil {
			return nil, err
		}
	}
	if cfg.Web != "" {
		if err := r.startWeb(); err != nil {
			return nil, err
		}
	}
	r.lag = startLagWatcher(r.mesh)
	if cfg.Metrics != "" {
		if err := r.startOps(); err != nil {
			return nil, err
		}
	}
	r.log.Info("rendezvous up", "id", r.host.ID().String(), "addrs", r.Addrs(), "ws", r.WSAddr(), "metrics", r.MetricsAddr())
	return r, nil
}

func (r *Rendezvous) startGateway() error {
	gc := r.cfg.Gateway
	gc.Mode = wsgateway.ModeRemote
	gc.Backend = &backend{Backend: wsgateway.FromMesh(r.mesh), f: r.follow, db: r.db}
	gc.Logger = r.log
	if len(r.cfg.JoinSecret) > 0 {
		gc.Remote.JoinSecret = r.cfg.JoinSecret
	}
	gw, err := wsgateway.New(gc)
	if err != nil {
		return fmt.Errorf("rendezvous: gateway: %w", err)
	}
	r.gw = gw
	r.mesh.SetFront(gw) // knocks for thin hosts go to their connections
	ln, err := net.Listen("tcp", r.cfg.WS)
	if err != nil {
		return fmt.Errorf("rendezvous: gateway listen %s: %w", r.cfg.WS, err)
	}
	r.gwLn = ln
	// The gateway serves its own HTTP server (handshake timeouts counted in
	// its Stats); gw.Close closes it and the listener.
	r.wg.Go(func() {
		if err := gw.Serve(ln); err != nil && !errors.Is(err, wsgateway.ErrServerClosed) {
			r.log.Error("rendezvous listener failed", "listener", "gateway", "err", err)
		}
	})
	return nil
}

// startWeb serves the read-only watch page; private channels never show.
func (r *Rendezvous) startWeb() error {
	tok, err := web.LoadToken(filepath.Join(r.cfg.Dir, WebTokenFile))
	if err != nil {
		return fmt.Errorf("rendezvous: web: %w", err)
	}
	page, err := web.New(web.Config{Backend: &backend{Backend: wsgateway.FromMesh(r.mesh), f: r.follow, db: r.db},
		Token: tok, Hide: web.HidePrivate, Logger: r.log})
	if err != nil {
		return fmt.Errorf("rendezvous: web: %w", err)
	}
	r.page = page
	bound, err := page.Listen(r.cfg.Web)
	if err != nil {
		return fmt.Errorf("rendezvous: %w", err)
	}
	r.webURL = web.URL(bound, tok)
	return nil
}

// WebURL is the watch page's address with its read-only token, or "".
func (r *Rendezvous) WebURL() string { return r.webURL }

func (r *Rendezvous) serve(s *http.Server, ln net.Listener, what string) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		if err := s.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.log.Error("rendezvous listener failed", "listener", what, "err", err)
		}
	}()
}

// Addrs returns the libp2p addresses with /p2p/<id>, ready for
// `confab up --rendezvous`.
func (r *Rendezvous) Addrs() []string {
	var out []string
	for _, a := range r.host.Addrs() {
		out = append(out, a.String())
	}
	return out
}

// ID returns the rendezvous's peer id.
func (r *Rendezvous) ID() string { return r.host.ID().String() }

// WSAddr returns the gateway's bound TCP address, or "" without a gateway.
func (r *Rendezvous) WSAddr() string {
	if r.gwLn == nil {
		return ""
	}
	return r.gwLn.Addr().String()
}

// MetricsAddr returns the operations listener's bound address, or "".
func (r *Rendezvous) MetricsAddr() string {
	if r.opsLn == nil {
		return ""
	}
	return r.opsLn.Addr().String()
}

// RelayStats returns the relay ACL's counters.
func (r *Rendezvous) RelayStats() RelayStats { return r.relay.stats() }

// Mesh returns the archive mesh.
func (r *Rendezvous) Mesh() *mesh.Mesh { return r.mesh }

// Close stops everything New started, in dependency order, and waits.
// Idempotent.
func (r *Rendezvous) Close() error {
	var errs []error
	r.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if r.opsSrv != nil {
			errs = append(errs, r.opsSrv.Shutdown(ctx))
		}
		if r.page != nil {
			errs = append(errs, r.page.Close())
		}
		if r.gw != nil {
			// Closes the gateway's listener, HTTP server and every WebSocket
			// (1001): http.Server.Shutdown does not track hijacked ones.
			errs = append(errs, r.gw.Close())
		}
		r.wg.Wait()
		if r.host != nil {
			r.host.Host().RemoveStreamHandler(FollowProtocol)
		}
		if r.follow != nil {
			r.follow.close()
		}
		if r.lag != nil {
			r.lag.close()
		}
		if r.mesh != nil {
			errs = append(errs, r.mesh.Close())
		}
		if r.host != nil {
			errs = append(errs, r.host.Close())
		}
		if r.db != nil {
			errs = append(errs, r.db.Close())
		}
	})
	return errors.Join(errs...)
}
