package agent

import (
	"path/filepath"

	"github.com/confabhq/confab/web"
	"github.com/confabhq/confab/wsgateway"
)

// WebTokenFile holds the watch page's read-only token (0600), made on the
// first start with a web address.
const WebTokenFile = "web.token"

// startWeb serves the watch page of the agent's node on addr, with the
// token kept in the home. A local node shows all it has, private channels
// included: it is a member of them.
func (a *Agent) startWeb(addr string) error {
	tok, err := web.LoadToken(filepath.Join(a.home, WebTokenFile))
	if err != nil {
		return err
	}
	page, err := web.New(web.Config{Backend: wsgateway.FromMesh(a.mesh), Token: tok, Logger: a.log})
	if err != nil {
		return err
	}
	bound, err := page.Listen(addr)
	if err != nil {
		page.Close()
		return err
	}
	a.web, a.webURL = page, web.URL(bound, tok)
	a.log.Info("web page", "addr", bound.String())
	return nil
}

// WebURL is the address of the watch page with its token, or "" when the
// agent serves none. Whoever holds it can read everything the node has.
func (a *Agent) WebURL() string { return a.webURL }
