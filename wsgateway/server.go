package wsgateway

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
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/confabhq/confab/mesh"
)

// Backend is what the gateway serves: *mesh.Mesh satisfies it.
type Backend interface {
	Info() mesh.Info
	Join(ctx context.Context, channel string) error
	Leave(ctx context.Context, channel string) error
	Send(ctx context.Context, channel, kind, content, replyTo string) (mesh.Record, error)
	// Publish must verify env (mesh.Envelope.Verify, as mesh.Publish
	// does) before it stores or forwards anything; the gateway does not.
	Publish(ctx context.Context, env *mesh.Envelope) (mesh.Record, error)
	Subscribe(channels []string, queue int) Subscription
	After(ctx context.Context, channel, cursor string, limit int) ([]mesh.Record, error)
	Before(ctx context.Context, channel, cursor string, limit int) ([]mesh.Record, error)
	Who(ctx context.Context, channel string) []mesh.Peer
}

// Subscription is a live feed of stored records (*mesh.Subscription). C is
// closed when it ends; Err then returns mesh.ErrSlowConsumer if its queue
// overflowed.
type Subscription interface {
	C() <-chan mesh.Record
	Err() error
	Close()
}

// Errors returned by Server methods.
var (
	ErrServerClosed = errors.New("wsgateway: server closed")
	ErrSocketInUse  = errors.New("wsgateway: socket in use by a running server")
)

// Config configures a Server. Zero fields take the defaults listed on
// DefaultConfig.
type Config struct {
	Backend Backend      // required
	Logger  *slog.Logger // default: discard
	Mode    Mode         // default ModeLocal
	Remote  RemoteConfig // ModeRemote only: auth, per-IP and per-identity limits; see RemoteConfig

	MaxFrame          int           // largest client frame in bytes; default 256 KiB
	SendQueue         int           // frames queued for one connection's writer; default 1024
	SubscriptionQueue int           // live records held during a replay, and frames queued beyond SendQueue once live; default 1024
	MaxConns          int           // concurrent connections; default 256
	MaxBadFrames      int           // bad frames in a row before closing with 1008; default 32
	WriteTimeout      time.Duration // deadline of one frame write; default 10 s
	PingInterval      time.Duration // WebSocket ping period; default 30 s
	PongTimeout       time.Duration // silence after which a connection is dead; default 60 s
	HandshakeTimeout  time.Duration // HTTP upgrade and welcome; default 10 s
	HistoryBytes      int           // byte budget of one history reply; default 4 MiB
	ReplayPage        int           // records fetched per channel per history page during replay; default 256
}

// DefaultConfig returns the defaults: ModeLocal, MaxFrame 256 KiB, SendQueue
// 1024, SubscriptionQueue 1024, MaxConns 256, MaxBadFrames 32, WriteTimeout
// 10 s, PingInterval 30 s, PongTimeout 60 s, HandshakeTimeout 10 s,
// HistoryBytes 4 MiB, ReplayPage 256. Backend must still be set.
func DefaultConfig() Config {
	return Config{
		Mode:              ModeLocal,
		MaxFrame:          256 << 10,
		SendQueue:         1024,
		SubscriptionQueue: 1024,
		MaxConns:          256,
		MaxBadFrames:      32,
		WriteTimeout:      10 * time.Second,
		PingInterval:      30 * time.Second,
		PongTimeout:       60 * time.Second,
		HandshakeTimeout:  10 * time.Second,
		HistoryBytes:      4 << 20,
		ReplayPage:        256,
	}
}

func (c *Config) fill() error {
	d := DefaultConfig()
	if c.Backend == nil {
		return errors.New("backend is required")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Mode == "" {
		c.Mode = d.Mode
	}
	switch c.Mode {
	case ModeLocal:
	case ModeRemote:
		if err := c.Remote.fill(); err != nil {
			return err
		}
	default:
		return fmt.Errorf("mode %q: %w", c.Mode, errors.ErrUnsupported)
	}
	setInt := func(p *int, def int) {
		if *p == 0 {
			*p = def
		}
	}
	setDur := func(p *time.Duration, def time.Duration) {
		if *p == 0 {
			*p = def
		}
	}
	setInt(&c.MaxFrame, d.MaxFrame)
	setInt(&c.SendQueue, d.SendQueue)
	setInt(&c.SubscriptionQueue, d.SubscriptionQueue)
	setInt(&c.MaxConns, d.MaxConns)
	setInt(&c.MaxBadFrames, d.MaxBadFrames)
	setInt(&c.HistoryBytes, d.HistoryBytes)
	setInt(&c.ReplayPage, d.ReplayPage)
	setDur(&c.WriteTimeout, d.WriteTimeout)
	setDur(&c.PingInterval, d.PingInterval)
	setDur(&c.PongTimeout, d.PongTimeout)
	setDur(&c.HandshakeTimeout, d.HandshakeTimeout)
	switch {
	case c.MaxFrame < 1024 || c.MaxFrame > maxDecodeLen:
		return fmt.Errorf("MaxFrame %d out of [1024, %d]", c.MaxFrame, maxDecodeLen)
	case c.SendQueue < 1, c.SubscriptionQueue < 1, c.MaxConns < 1, c.MaxBadFrames < 1, c.ReplayPage < 1:
		return errors.New("queues, MaxConns, MaxBadFrames and ReplayPage must be positive")
	case c.HistoryBytes < 1<<20:
		return fmt.Errorf("HistoryBytes %d below 1 MiB: a single record must fit", c.HistoryBytes)
	case c.WriteTimeout < 0, c.PingInterval < 0, c.PongTimeout <= c.PingInterval, c.HandshakeTimeout < 0:
		return errors.New("timeouts must be positive and PongTimeout longer than PingInterval")
	}
	return nil
}

// Server serves the gateway protocol to WebSocket clients. All methods are
// safe for concurrent use.
type Server struct {
	cfg      Config
	log      *slog.Logger
	upgrader websocket.Upgrader
	ctx      context.Context // cancelled by Close; parent of every connection
	cancel   context.CancelFunc
	wg       sync.WaitGroup // one per running connection handler
	once     sync.Once

	metrics metrics
	events  eventCache // live events encoded once for every connection (writer.go)

	mu      sync.Mutex // guards the fields below
	closed  bool
	active  int // connections admitted, including ones still upgrading
	conns   map[*conn]struct{}
	servers []*unixServer
	perIP   map[string]int   // remote mode: admitted connections per IP
	peers   map[string]*conn // remote mode: the connection of each authenticated identity
}

type unixServer struct {
	hs   *http.Server
	path string
	fi   os.FileInfo // the socket file we created, to remove only our own
}

// New validates cfg, fills defaults (see DefaultConfig) and returns a
// Server. It starts nothing; the caller serves with ServeUnix or Handler and
// must call Close.
func New(cfg Config) (*Server, error) {
	if err := cfg.fill(); err != nil {
		return nil, fmt.Errorf("wsgateway: new: %w", err)
	}
	s := &Server{cfg: cfg, log: cfg.Logger, conns: make(map[*conn]struct{}),
		perIP: make(map[string]int), peers: make(map[string]*conn)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.upgrader = websocket.Upgrader{
		HandshakeTimeout: cfg.HandshakeTimeout,
		// Small per-connection memory (writer.go): a 1 KiB read buffer, and
		// write buffers lent from a pool for one message at a time.
		ReadBufferSize:  readBufferSize,
		WriteBufferSize: writeBufferSize,
		WriteBufferPool: &sync.Pool{},
		// A local-mode server is reached through a 0600 unix socket that
		// browsers cannot dial, so no legitimate request carries an Origin.
		// Refusing any Origin keeps a page from abusing a local-mode Handler
		// mounted on TCP by mistake (cross-site WebSocket hijacking).
		CheckOrigin: func(r *http.Request) bool { return r.Header.Get("Origin") == "" },
	}
	if cfg.Mode == ModeRemote {
		s.upgrader.CheckOrigin = s.cfg.Remote.checkOrigin
	}
	return s, nil
}

// Handler returns the HTTP handler that upgrades requests on any path to
// gateway connections. In ModeLocal whoever reaches it acts as the node:
// mount it only where the operating system already restricts access.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// ServeUnix listens on a unix socket at path, created with mode 0600, and
// serves until Close, then returns nil. A stale socket file left by a dead
// server is replaced; one a live server answers on gives ErrSocketInUse;
// any other file at path is an error. Close removes the socket file.
func (s *Server) ServeUnix(path string) error {
	if err := removeStale(path); err != nil {
		return fmt.Errorf("wsgateway: serve %s: %w", path, err)
	}
	l, fi, err := listenUnix0600(path)
	if err != nil {
		return fmt.Errorf("wsgateway: serve %s: %w", path, err)
	}
	us := &unixServer{hs: s.httpServer(), path: path, fi: fi}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		us.remove()
		return ErrServerClosed
	}
	s.servers = append(s.servers, us)
	s.mu.Unlock()
	s.log.Info("gateway listening", "socket", path)
	err = us.hs.Serve(handshakeListener{l, s})
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	us.hs.Close()
	us.remove()
	return fmt.Errorf("wsgateway: serve %s: %w", path, err)
}

// removeStale removes a socket file at path that nothing answers on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return ErrSocketInUse
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("probe existing socket: %w", err)
	}
	return os.Remove(path)
}

// listenUnix0600 creates the socket inside a fresh 0700 directory next to
// path, makes it 0600 and renames it into place, so that no other user can
// connect in the window between bind and chmod (the umask is per process and
// cannot be changed safely from a library).
func listenUnix0600(path string) (*net.UnixListener, os.FileInfo, error) {
	dir, err := os.MkdirTemp(filepath.Dir(path), ".gw-")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "s")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, nil, err
	}
	l.SetUnlinkOnClose(false) // the file moves; ServeUnix and Close remove it
	fail := func(err error) (*net.UnixListener, os.FileInfo, error) {
		l.Close()
		return nil, nil, err
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fail(err)
	}
	return l, fi, nil
}

func (u *unixServer) remove() {
	if u.path == "" { // a listener handed to Serve
		return
	}
	if fi, err := os.Lstat(u.path); err == nil && os.SameFile(fi, u.fi) {
		os.Remove(u.path)
	}
}

// Close stops every listener, closes every connection (with close code
// 1001 and, after a short grace, by force), removes socket files, and waits
// for every goroutine of the server. Idempotent.
func (s *Server) Close() error {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		servers := s.servers
		s.mu.Unlock()
		s.cancel()
		for _, us := range servers {
			us.hs.Close()
			us.remove()
		}
		done := make(chan struct{})
		go func() { s.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(closeGrace + s.cfg.WriteTimeout):
			s.mu.Lock()
			for c := range s.conns {
				c.ws.Close()
			}
			s.mu.Unlock()
			<-done
		}
	})
	return nil
}

// admit reserves a connection slot for a request from ip ("" = not
// limited per IP). It returns the HTTP status to refuse with, or 0.
func (s *Server) admit(ip string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.active >= s.cfg.MaxConns {
		s.metrics.refusedFull.Add(1)
		return http.StatusServiceUnavailable
	}
	if s.cfg.Mode == ModeRemote && ip != "" {
		if s.perIP[ip] >= s.cfg.Remote.MaxConnsPerIP {
			s.metrics.refusedPerIP.Add(1)
			return http.StatusTooManyRequests
		}
		s.perIP[ip]++
	}
	s.active++
	s.wg.Add(1)
	return 0
}

func (s *Server) release(c *conn, ip string) {
	s.mu.Lock()
	if s.cfg.Mode == ModeRemote && ip != "" {
		if s.perIP[ip]--; s.perIP[ip] <= 0 {
			delete(s.perIP, ip)
		}
	}
	s.active--
	if c != nil {
		delete(s.conns, c)
	}
	s.mu.Unlock()
	s.wg.Done()
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	served(r) // listen.go: the request arrived in time
	ip := remoteIP(r)
	if status := s.admit(ip); status != 0 {
		http.Error(w, "gateway full or closing, or too many connections from your address", status)
		return
	}
	originOK := s.upgrader.CheckOrigin(r)
	if !originOK {
		s.metrics.refusedOrigin.Add(1)
	}
	bc := &batchConn{}
	ws, err := s.upgrader.Upgrade(hijackWrap{w, bc}, r, nil) // replies to the client itself on error
	if err != nil {
		if originOK {
			s.metrics.refusedUpgrade.Add(1)
		}
		s.release(nil, ip)
		s.log.Debug("gateway upgrade failed", "err", err)
		return
	}
	s.metrics.accepted.Add(1)
	c := newConn(s, ws, bc)
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	// The connection runs on a goroutine of its own so that this one (and
	// with it net/http's per-connection state and buffers) ends now.
	go func() {
		defer s.release(c, ip)
		c.serve()
	}()
}

// FromMesh adapts a *mesh.Mesh to Backend: Go has no covariant results, so
// Mesh.Subscribe's *mesh.Subscription is returned as a Subscription here.
func FromMesh(m *mesh.Mesh) Backend { return meshBackend{m} }

type meshBackend struct{ *mesh.Mesh }

func (b meshBackend) Subscribe(channels []string, queue int) Subscription {
	return b.Mesh.Subscribe(channels, queue)
}

var (
	_ Backend      = meshBackend{}
	_ Subscription = (*mesh.Subscription)(nil)
)
