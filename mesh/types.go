package mesh

import (
	"errors"
	"time"
)

// Record is an envelope as stored by one node, with its cursor there. It is a
// wire type: the gateway sends it to clients as is.
type Record struct {
	Env    *Envelope `json:"envelope"`
	Cursor string    `json:"cursor"`
}

// Peer is what a node knows of another agent from its presence beacons.
type Peer struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	Status   string    `json:"status"`
	Caps     []string  `json:"caps,omitempty"`
	Channels []string  `json:"channels,omitempty"`
	LastSeen time.Time `json:"last_seen"`
}

// Info describes the local node.
type Info struct {
	ID       string   `json:"id"`
	Name     string   `json:"name"`
	Caps     []string `json:"caps,omitempty"`
	Addrs    []string `json:"addrs"`
	Channels []string `json:"channels"`
}

// Errors returned by Mesh methods; match them with errors.Is.
var (
	ErrBadChannel   = errors.New("bad channel name")
	ErrNotJoined    = errors.New("channel not joined")
	ErrUnknownAgent = errors.New("unknown agent")
	ErrClosed       = errors.New("mesh closed")
	ErrRateLimited  = errors.New("rate limited")
	ErrSlowConsumer = errors.New("subscriber too slow: resume from the last cursor")
	ErrSeqGap       = errors.New("sequence gap")
	// ErrBadCursor is wrapped by history stores for a cursor they did not issue.
	ErrBadCursor = errors.New("bad cursor")
	// ErrStorageFull is wrapped by history stores that refuse a write for
	// lack of disk space; nothing was stored.
	ErrStorageFull = errors.New("storage full")
	// ErrUnsupported is returned for an operation this node cannot do.
	ErrUnsupported = errors.New("not supported by this node")
	// ErrBadQuery is wrapped by history stores for a search query they refuse.
	ErrBadQuery = errors.New("bad search query")
)
