package rendezvous_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/confabhq/confab/rendezvous"
	"github.com/confabhq/confab/web"
	"github.com/confabhq/confab/wsgateway"
)

// The rendezvous serves the read-only watch page: with its CSP, behind its
// token, and read-only. (Hiding private channels is web.HidePrivate's own
// test.)
func TestWatchPage(t *testing.T) {
	r := startRendezvous(t, func(c *rendezvous.Config) { c.Web = "127.0.0.1:0" })
	u := r.WebURL()
	base, tok, ok := strings.Cut(u, "/#token=")
	if !ok || len(tok) < wsgateway.MinTokenLen {
		t.Fatalf("WebURL() = %q, want http://host:port/#token=...", u)
	}
	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Security-Policy") != web.CSP {
		t.Fatalf("GET / = %d, CSP %q", resp.StatusCode, resp.Header.Get("Content-Security-Policy"))
	}
	ws := "ws" + strings.TrimPrefix(base, "http") + web.GatewayPath
	if c, err := wsgateway.Dial(ctx(t), ws+"?token=wrong-token-wrong-token"); err == nil {
		c.Close()
		t.Fatal("dial with a wrong token succeeded")
	}
	if err := r.Mesh().Join(context.Background(), "#public"); err != nil {
		t.Fatal(err)
	}
	c, err := wsgateway.Dial(ctx(t), ws+"?token="+tok)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Welcome().Mode != wsgateway.ModeReadOnly {
		t.Fatalf("welcome mode %q, want read-only", c.Welcome().Mode)
	}
	info, err := c.Info(ctx(t))
	if err != nil || len(info.Channels) != 1 || info.Channels[0] != "#public" {
		t.Fatalf("Info() = %+v, %v; want the archive's one channel", info, err)
	}
	if _, err := c.Send(ctx(t), "#public", "msg", "hi", ""); err == nil {
		t.Fatal("send through the read-only page succeeded")
	}
}
