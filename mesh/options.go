package mesh

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

type config struct {
	name         string
	caps         []string
	logger       *slog.Logger
	rate         float64
	burst        int
	pastWindow   time.Duration
	futureWindow time.Duration
	holdback     int
	gapTimeout   time.Duration
	syncEvery    time.Duration
	presenceTick time.Duration
	presenceTTL  time.Duration
	stateFile    string
	maxBatch     int
	desc         string        // card.go
	version      string        // card.go
	reprovide    time.Duration // discovery.go
	outboxMax    int           // direct.go
	outboxFile   string        // outbox.go
}

// Option configures a Mesh.
type Option func(*config) error

func defaults() config {
	return config{
		name:         "",
		logger:       slog.New(slog.DiscardHandler),
		rate:         1000,
		burst:        4000,
		pastWindow:   5 * time.Minute,
		futureWindow: time.Minute,
		holdback:     8192,
		gapTimeout:   10 * time.Second,
		syncEvery:    10 * time.Second,
		presenceTick: 5 * time.Second,
		presenceTTL:  20 * time.Second,
		maxBatch:     512,
		version:      DefaultVersion,
		reprovide:    DefaultReprovide,
		outboxMax:    DefaultOutbox,
	}
}

// WithName sets the display name put in every envelope this node signs.
func WithName(name string) Option {
	return func(c *config) error {
		e := Envelope{Name: name}
		if len(name) > MaxNameLen || !validName(e.Name) {
			return errors.New("mesh: name must be at most 64 bytes of UTF-8 without control characters")
		}
		c.name = name
		return nil
	}
}

// WithCaps sets the capabilities announced in presence beacons.
func WithCaps(caps ...string) Option {
	return func(c *config) error {
		for _, s := range caps {
			if !kindRE.MatchString(s) {
				return errors.New("mesh: capability " + trunc(s) + " must be lowercase letters, digits, '.', '_' or '-', at most 32 bytes")
			}
		}
		c.caps = append([]string(nil), caps...)
		return nil
	}
}

// WithLogger sets the logger; the default discards.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			return errors.New("mesh: nil logger")
		}
		c.logger = l
		return nil
	}
}

// WithAuthorRate sets the live per-author message rate a node forwards
// (messages per second and burst). Default 1000/s, burst 4000.
func WithAuthorRate(perSecond float64, burst int) Option {
	return func(c *config) error {
		if perSecond <= 0 || burst <= 0 {
			return errors.New("mesh: author rate and burst must be positive")
		}
		c.rate, c.burst = perSecond, burst
		return nil
	}
}

// WithTimeWindow sets how far an envelope's ts may lie behind or ahead of the
// local clock to be accepted live. Default 5 minutes behind, 1 minute ahead.
// Envelopes outside the window still arrive through catch-up.
func WithTimeWindow(past, future time.Duration) Option {
	return func(c *config) error {
		if past <= 0 || future <= 0 {
			return errors.New("mesh: time window must be positive")
		}
		c.pastWindow, c.futureWindow = past, future
		return nil
	}
}

// WithSyncInterval sets how often a channel runs anti-entropy catch-up with
// one random peer. Default 10 s: anti-entropy is what reconciles peers whose
// connections survived a partition, so it bounds convergence after a heal.
func WithSyncInterval(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return errors.New("mesh: sync interval must be positive")
		}
		c.syncEvery = d
		return nil
	}
}

// WithPresence sets the presence beacon interval and how long a silent agent
// stays listed, for channels of up to 100 members. Default 5 s and 20 s.
// Beyond 100 listed members both stretch by members/100 (at most 10 min
// apart), so all members together send about 100 beacons per interval; each
// beacon carries its ttl (ttl_ms), which receivers honour.
func WithPresence(every, ttl time.Duration) Option {
	return func(c *config) error {
		if every <= 0 || ttl < every {
			return errors.New("mesh: presence ttl must be at least the interval")
		}
		c.presenceTick, c.presenceTTL = every, ttl
		return nil
	}
}

// WithGapTimeout sets how long envelopes that follow a missing sequence
// number are held back before they are delivered anyway. Default 10 s.
func WithGapTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return errors.New("mesh: gap timeout must be positive")
		}
		c.gapTimeout = d
		return nil
	}
}

// WithStateFile keeps the set of joined channels in path, so a restarted
// node rejoins them. The default keeps it in memory only.
func WithStateFile(path string) Option {
	return func(c *config) error {
		if path == "" {
			return errors.New("mesh: empty state file path")
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return err
		}
		c.stateFile = path
		return nil
	}
}

// WithOutboxFile keeps the direct messages that wait for offline recipients
// in path (JSON lines of ids; the envelopes stay in history), so they are
// retried after a restart of this node. The default keeps them in memory
// only, lost when the node stops. See outbox.go for the format.
func WithOutboxFile(path string) Option {
	return func(c *config) error {
		if path == "" {
			return errors.New("mesh: empty outbox file path")
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return err
		}
		c.outboxFile = path
		return nil
	}
}
