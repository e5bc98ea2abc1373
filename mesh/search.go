package mesh

import (
	"context"
	"fmt"
)

// Searcher is the optional full-text index of a History; *store.DB has one.
type Searcher interface {
	Search(ctx context.Context, query, channel string, limit int) ([]*Envelope, []string, error)
}

// ErrNoSearch is returned by Search when the history has no index.
var ErrNoSearch = fmt.Errorf("search: %w", ErrUnsupported)

// Search runs a full-text query over this node's history: every word must
// match, newest first, channel "" meaning every channel. Private channels
// are never indexed. A query the index refuses wraps ErrBadQuery.
func (m *Mesh) Search(ctx context.Context, query, channel string, limit int) ([]Record, error) {
	s, ok := m.hist.(Searcher)
	if !ok {
		return nil, ErrNoSearch
	}
	if channel != "" && !ValidChannel(channel) {
		return nil, fmt.Errorf("mesh: search %q: %w", trunc(channel), ErrBadChannel)
	}
	envs, curs, err := s.Search(ctx, query, channel, limit)
	if err != nil {
		return nil, fmt.Errorf("mesh: search: %w", err)
	}
	return records(envs, curs), nil
}
