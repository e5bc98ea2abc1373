package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/node"
	"github.com/confabhq/confab/store"
	"github.com/confabhq/confab/web"
	"github.com/confabhq/confab/wsgateway"
)

// Files in a home.
const (
	IdentityFile = "identity.key"
	StoreDir     = "store"
	StateFile    = "state.json"
	SocketFile   = "confab.sock"
)

// maxSocketPath is the longest unix socket path Linux accepts.
const maxSocketPath = 107

// ErrRunning means another node already runs on the home.
var ErrRunning = errors.New("another confab node is already running with this home")

// ResolveHome picks the home folder: flag, else $CONFAB_HOME, else
// $XDG_DATA_HOME/confab, else ~/.local/share/confab. The result is absolute.
func ResolveHome(flag string) (string, error) {
	h := flag
	if h == "" {
		h = os.Getenv("CONFAB_HOME")
	}
	if h == "" {
		if x := os.Getenv("XDG_DATA_HOME"); x != "" {
			h = filepath.Join(x, "confab")
		} else {
			u, err := os.UserHomeDir()
			if err != nil {
				return "", fmt.Errorf("no home folder: set --home or CONFAB_HOME (%v)", err)
			}
			h = filepath.Join(u, ".local", "share", "confab")
		}
	}
	return filepath.Abs(h)
}

// SocketPath is where the node of home serves the gateway protocol.
func SocketPath(home string) string { return filepath.Join(home, SocketFile) }

// Config configures an Agent.
type Config struct {
	Home       string   // required, absolute
	Name       string   // display name; default "agent-" + the last 6 characters of the peer id
	Caps       []string // capabilities announced in presence
	Listen     []string // multiaddrs; default node.DefaultListen
	Rendezvous []string // full multiaddrs of rendezvous nodes
	MDNS       bool     // LAN discovery
	Join       []string // channels to join at start, besides those in state.json
	Logger     *slog.Logger
	MeshOpts   []mesh.Option // extra mesh options (tests, benchmarks)
	Web        string        // host:port of the read-only watch page (see WebURL); "" = none
	Files      bool          // inbox.jsonl / outbox.jsonl in the home (files.go)
}

// DefaultConfig returns a Config with mDNS and the file interface on.
func DefaultConfig() Config { return Config{MDNS: true, Files: true} }

// Agent is a running node of one home.
type Agent struct {
	home   string
	db     *store.DB
	host   *node.Host
	mesh   *mesh.Mesh
	gw     *wsgateway.Server
	fol    *follower   // asks rendezvous nodes to follow our channels (rendezvous.go)
	web    *web.Server // the watch page, nil without Config.Web (web.go)
	webURL string
	fs     *files   // inbox/outbox files, nil without Config.Files (files.go)
	bx     *bundles // code handoff: bundle server and offer watcher (bundle.go)
	log    *slog.Logger
	once   sync.Once
}

// New opens home and starts the node. It fails with ErrRunning when another
// node holds the home. The caller must call Close.
func New(cfg Config) (_ *Agent, err error) {
	if cfg.Home == "" || !filepath.IsAbs(cfg.Home) {
		return nil, errors.New("agent: home must be an absolute path")
	}
	if len(SocketPath(cfg.Home)) > maxSocketPath {
		return nil, fmt.Errorf("agent: home path %s is too long for a unix socket (limit %d bytes); use a shorter --home", cfg.Home, maxSocketPath-len(SocketFile)-1)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Home, 0o700); err != nil {
		return nil, fmt.Errorf("agent: home: %w", err)
	}
	a := &Agent{home: cfg.Home, log: log}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	sc := store.DefaultConfig()
	sc.Dir = filepath.Join(cfg.Home, StoreDir)
	sc.Logger = log
	if a.db, err = store.New(sc); err != nil {
		if errors.Is(err, store.ErrLocked) {
			return nil, fmt.Errorf("%w (home %s); stop it first or use another --home", ErrRunning, cfg.Home)
		}
		return nil, fmt.Errorf("agent: %w", err)
	}
	key, err := node.LoadIdentity(filepath.Join(cfg.Home, IdentityFile))
	if err != nil {
		return nil, fmt.Errorf("agent: identity: %w", err)
	}
	nopts := []node.Option{node.WithIdentity(key), node.WithMDNS(cfg.MDNS), node.WithLogger(log)}
	if len(cfg.Listen) > 0 {
		nopts = append(nopts, node.WithListen(cfg.Listen...))
	}
	if len(cfg.Rendezvous) > 0 {
		nopts = append(nopts, node.WithBootstrap(cfg.Rendezvous...))
	}
	if a.host, err = node.New(nopts...); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	name := cfg.Name
	if name == "" {
		id := a.host.ID().String()
		name = "agent-" + id[len(id)-6:]
	}
	mopts := []mesh.Option{mesh.WithName(name), mesh.WithLogger(log), mesh.WithStateFile(filepath.Join(cfg.Home, StateFile))}
	mopts = append(mopts, mesh.WithOutboxFile(filepath.Join(cfg.Home, "dm-outbox.jsonl"))) // DMs waiting for offline agents survive restarts
	if len(cfg.Caps) > 0 {
		mopts = append(mopts, mesh.WithCaps(cfg.Caps...))
	}
	if a.mesh, err = mesh.New(a.host, a.db, append(mopts, cfg.MeshOpts...)...); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	for _, c := range cfg.Join {
		if err := a.mesh.Join(context.Background(), c); err != nil {
			return nil, fmt.Errorf("agent: join %s: %w", c, err)
		}
	}
	if len(cfg.Rendezvous) > 0 {
		a.fol = startFollower(a.host, a.mesh, cfg.Rendezvous, log)
	}
	if cfg.Files {
		a.fs = startFiles(cfg.Home, a.mesh, log)
	}
	if a.bx, err = startBundles(cfg.Home, a.host.Host(), a.mesh, log); err != nil {
		return nil, err
	}
	gc := wsgateway.DefaultConfig()
	gc.Backend = bundleBackend{a.mesh, a.bx}
	gc.Logger = log
	if a.gw, err = wsgateway.New(gc); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if cfg.Web != "" {
		if err := a.startWeb(cfg.Web); err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
	}
	return a, nil
}

// Serve serves the gateway protocol on the home's socket until Close.
func (a *Agent) Serve() error {
	err := a.gw.ServeUnix(SocketPath(a.home))
	if errors.Is(err, wsgateway.ErrServerClosed) {
		return nil
	}
	return err
}

// Info describes the running node.
func (a *Agent) Info() mesh.Info { return a.mesh.Info() }

// Mesh returns the agent's mesh.
func (a *Agent) Mesh() *mesh.Mesh { return a.mesh }

// GatewayStats returns the counters of the agent's gateway (its unix
// socket): connections, frames, and clients dropped for abuse.
func (a *Agent) GatewayStats() wsgateway.Stats { return a.gw.Stats() }

// Close stops the gateway, the mesh, the host and the store, in that order.
// Idempotent.
func (a *Agent) Close() error {
	var errs []error
	a.once.Do(func() {
		if a.web != nil {
			errs = append(errs, a.web.Close())
		}
		if a.gw != nil {
			errs = append(errs, a.gw.Close())
		}
		if a.fol != nil {
			a.fol.close()
		}
		a.fs.close()
		a.bx.close()
		if a.mesh != nil {
			errs = append(errs, a.mesh.Close())
		}
		if a.host != nil {
			errs = append(errs, a.host.Close())
		}
		if a.db != nil {
			errs = append(errs, a.db.Close())
		}
	})
	return errors.Join(errs...)
}
