package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/store"
	"github.com/confabhq/confab/web"
	"github.com/confabhq/confab/wsgateway"
)

// WebTokenFile holds the watch page's read-only token (0600), made on the
// first start with a web address.
const WebTokenFile = "web.token"

// webServer is the watch page of an agent (Config.Web).
type webServer struct {
	page *web.Server
	hs   *http.Server
	l    net.Listener
	url  string
	done chan struct{}
}

// startWeb listens on addr and serves the watch page of the agent's node
// with the token kept in the home. A local node shows all it has, private
// channels included: it is a member of them.
func (a *Agent) startWeb(addr string) error {
	tok, err := web.LoadToken(filepath.Join(a.home, WebTokenFile))
	if err != nil {
		return err
	}
	page, err := web.New(web.Config{Backend: searchable{wsgateway.FromMesh(a.mesh), a.db}, Token: tok, Logger: a.log})
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		page.Close()
		return fmt.Errorf("web: listen %s: %w", addr, err)
	}
	w := &webServer{
		page: page,
		hs:   &http.Server{Handler: page.Handler(), ReadHeaderTimeout: 10 * time.Second},
		l:    l,
		url:  "http://" + l.Addr().String() + "/#token=" + tok,
		done: make(chan struct{}),
	}
	go func() {
		defer close(w.done)
		if err := w.hs.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("web page stopped", "err", err)
		}
	}()
	a.web = w
	a.log.Info("web page", "addr", l.Addr().String())
	return nil
}

// WebURL is the address of the watch page with its token, or "" when the
// agent serves none. Whoever holds it can read everything the node has.
func (a *Agent) WebURL() string {
	if a.web == nil {
		return ""
	}
	return a.web.url
}

func (w *webServer) close() error {
	err := w.hs.Close() // closes the listener and plain connections
	w.page.Close()      // hijacked WebSocket connections
	<-w.done
	return err
}

// searchable gives the page's gateway the home store's full-text index.
type searchable struct {
	wsgateway.Backend
	db *store.DB
}

var _ wsgateway.SearchBackend = searchable{}

func (s searchable) Search(ctx context.Context, query, channel string, limit int) ([]mesh.Record, error) {
	envs, curs, err := s.db.Search(ctx, query, channel, limit)
	if errors.Is(err, store.ErrInvalid) {
		return nil, &wsgateway.Error{Code: wsgateway.CodeBadFrame, Message: err.Error()}
	}
	if err != nil {
		return nil, fmt.Errorf("agent: search: %w", err)
	}
	out := make([]mesh.Record, len(envs))
	for i, e := range envs {
		out[i] = mesh.Record{Env: e, Cursor: curs[i]}
	}
	return out, nil
}
