package wsgateway

import (
	"context"
	"errors"

	"github.com/confabhq/confab/mesh"
)

// TypeSearch names the search request and its reply.
const TypeSearch = "search"

// Limits of a search request.
const (
	MaxSearchQuery     = 256 // bytes of a query
	DefaultSearchLimit = 50  // results when the request gives 0
	MaxSearchLimit     = 500 // larger limits are clamped to this
)

// SearchRequest asks for stored envelopes containing every word of Query
// (a trailing '*' makes the last word a prefix), in Channel or, if empty,
// every channel. Reply: SearchReply, newest first.
type SearchRequest struct {
	Req     string `json:"req"`
	Query   string `json:"query"`
	Channel string `json:"channel,omitempty"`
	Limit   int    `json:"limit,omitempty"`
}

// SearchReply lists matching records, newest first.
type SearchReply struct {
	Req     string        `json:"req"`
	Records []mesh.Record `json:"records"`
}

func (*SearchRequest) Type() string { return TypeSearch }
func (*SearchReply) Type() string   { return TypeSearch }

// SearchBackend is implemented by Backends with a full-text index. Without
// it the server answers "search" with unsupported.
type SearchBackend interface {
	Search(ctx context.Context, query, channel string, limit int) ([]mesh.Record, error)
}

func validateSearch(f *SearchRequest) *Error {
	switch {
	case f.Query == "" || len(f.Query) > MaxSearchQuery:
		return errorf(CodeBadFrame, "search: query must be 1..%d bytes", MaxSearchQuery)
	case f.Limit < 0:
		return errorf(CodeBadFrame, "search: negative limit")
	case f.Limit == 0:
		f.Limit = DefaultSearchLimit
	case f.Limit > MaxSearchLimit:
		f.Limit = MaxSearchLimit
	}
	if f.Channel != "" {
		return first(needReq(f.Req), needChannel(f.Channel))
	}
	return needReq(f.Req)
}

// search answers a search request within the HistoryBytes budget.
func (c *conn) search(ctx context.Context, f *SearchRequest) (Frame, error) {
	sb, ok := c.s.cfg.Backend.(SearchBackend)
	if !ok {
		return nil, &Error{Code: CodeUnsupported, Message: "this node has no search index"}
	}
	recs, err := sb.Search(ctx, f.Query, f.Channel, f.Limit)
	switch {
	case errors.Is(err, mesh.ErrBadQuery):
		return nil, &Error{Code: CodeBadFrame, Message: err.Error()}
	case errors.Is(err, mesh.ErrUnsupported):
		return nil, &Error{Code: CodeUnsupported, Message: "this node has no search index"}
	case err != nil:
		return nil, err
	}
	budget := c.s.cfg.HistoryBytes - 256
	for i, r := range recs {
		if budget -= recordSize(r); budget < 0 {
			recs = recs[:i]
			break
		}
	}
	if recs == nil {
		recs = []mesh.Record{}
	}
	return &SearchReply{Req: f.Req, Records: recs}, nil
}

// Search returns stored records matching query (see SearchRequest), newest
// first.
func (c *Client) Search(ctx context.Context, query, channel string, limit int) ([]mesh.Record, error) {
	r, err := expect[*SearchReply](c.call(ctx, func(req string) Frame {
		return &SearchRequest{Req: req, Query: query, Channel: channel, Limit: limit}
	}))
	if err != nil {
		return nil, err
	}
	return r.Records, nil
}
