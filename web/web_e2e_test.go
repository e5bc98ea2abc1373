package web_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/confabhq/confab/agent"
	"github.com/confabhq/confab/internal/netnstest"
)

// Every test here starts libp2p nodes: run them in a private network
// namespace with only loopback.
func TestMain(m *testing.M) { netnstest.Main(m) }

const chromiumPath = "/usr/bin/chromium"

// startAgent runs a real agent in a temporary home on loopback.
func startAgent(t *testing.T, name string, cfg agent.Config) *agent.Agent {
	t.Helper()
	cfg.Home = filepath.Join(t.TempDir(), name)
	cfg.Name = name
	cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.MDNS = false
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatalf("agent %s: %v", name, err)
	}
	errc := make(chan error, 1)
	go func() { errc <- a.Serve() }()
	t.Cleanup(func() {
		a.Close()
		if err := <-errc; err != nil {
			t.Errorf("agent %s serve: %v", name, err)
		}
	})
	return a
}

// TestWatchPage drives a real headless Chromium against a node whose agents
// talk: messages appear live, scrollback loads older ones, search finds
// one, markup shows as text, and the page cannot write.
func TestWatchPage(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("needs Debian's chromium at %s (apt-get install -y chromium): %v", chromiumPath, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	alice := startAgent(t, "alice", agent.Config{Join: []string{"#general"}, Caps: []string{"go", "review"}, Web: "127.0.0.1:0"})
	bob := startAgent(t, "bob", agent.Config{Join: []string{"#general"}, Caps: []string{"tests"}, Rendezvous: alice.Info().Addrs[:1]})
	url := alice.WebURL()
	if !strings.Contains(url, "#token=") {
		t.Fatalf("web url %q has no token", url)
	}
	base := strings.SplitN(url, "#", 2)[0]
	tok := strings.SplitN(url, "#token=", 2)[1]

	// History the page must page back through: more than one page (50).
	const old = 72
	for i := range old {
		a := alice
		if i%2 == 1 {
			a = bob
		}
		text := fmt.Sprintf("old-%03d", i)
		if i == 5 {
			text = "needle-in-haystack: the flaky test is TestReplay"
		}
		if _, err := a.Mesh().Send(ctx, "#general", "msg", text, ""); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	// Other kinds get their own cards.
	for _, k := range []struct{ kind, content string }{
		{"call", `{"topic":"review the gateway PR"}`},
		{"bundle-offer", `{"repo":"confab","refs":"main","size":"48 KiB"}`},
		{"knock", "bob would like to join the session"},
	} {
		if _, err := bob.Mesh().Send(ctx, "#general", k.kind, k.content, ""); err != nil {
			t.Fatalf("send %s: %v", k.kind, err)
		}
	}
	waitFor(t, ctx, "alice stores bob's messages", func() bool {
		recs, err := alice.Mesh().Before(ctx, "#general", "", 1000)
		return err == nil && len(recs) == old+3
	})

	br := startChromium(t, ctx)
	page := br.page
	defer page.close()
	if _, err := page.call(ctx, "Emulation.setDeviceMetricsOverride", map[string]any{"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": false}); err != nil {
		t.Fatal(err)
	}
	if _, err := page.call(ctx, "Page.navigate", map[string]any{"url": url}); err != nil {
		t.Fatal(err)
	}
	page.waitJS(t, ctx, "page live with the newest page of history",
		`document.getElementById('status').dataset.state === 'live' && document.querySelectorAll('#messages .msg').length >= 50`)
	if page.evalBool(t, ctx, `location.hash.includes('token=')`) {
		t.Error("the token stays in the address bar")
	}
	if page.evalBool(t, ctx, contentIs("old-000")) {
		t.Error("the oldest message is shown before scrolling back: the first page should be the newest 50")
	}
	page.waitJS(t, ctx, "channel list and presence",
		`[...document.querySelectorAll('#channels button')].some(b => b.dataset.channel === '#general') &&
		 document.querySelectorAll('#agents li').length >= 1`)

	// Scrollback: scrolling to the top loads older pages.
	page.waitJS(t, ctx, "scrollback reaches the first message",
		`(() => { const c = document.getElementById('conversation'); c.scrollTop = 0; c.dispatchEvent(new Event('scroll'));
		  return `+contentIs("old-000")+`; })()`)

	// Live: messages sent by the agents now appear.
	if _, err := bob.Mesh().Send(ctx, "#general", "msg", "live hello from bob", ""); err != nil {
		t.Fatal(err)
	}
	page.waitJS(t, ctx, "bob's live message", contentIs("live hello from bob"))
	const markup = `<img src=x onerror=alert(1)><b>bold</b><script>alert(2)</script>`
	if _, err := bob.Mesh().Send(ctx, "#general", "msg", markup, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Mesh().Send(ctx, "#general", "msg", "alice: I'll take the review 👀\nsecond line stays a second line", ""); err != nil {
		t.Fatal(err)
	}
	page.waitJS(t, ctx, "markup shown as text", contentIs(markup))
	if n := page.evalInt(t, ctx, `document.querySelectorAll('#messages img, #messages b, #messages script').length`); n != 0 {
		t.Errorf("markup became %d elements", n)
	}
	page.waitJS(t, ctx, "alice's live message", `[...document.querySelectorAll('#messages .content')].some(e => e.textContent.startsWith("alice: I'll take"))`)
	page.waitJS(t, ctx, "call, bundle offer and knock cards",
		`['kind-call','kind-bundle','kind-knock'].every(k => document.querySelector('#messages .msg.'+k+' .event-card .kind-badge'))`)

	// Search finds a message outside the loaded page... search all history.
	page.eval(t, ctx, `document.getElementById('search-input').value = 'needle'; document.getElementById('search').requestSubmit(); true`)
	page.waitJS(t, ctx, "search result",
		`[...document.querySelectorAll('#result-list .msg .content')].some(e => e.textContent.includes('needle-in-haystack'))`)
	if n := page.evalInt(t, ctx, `document.querySelectorAll('#result-list .msg').length`); n != 1 {
		t.Errorf("search for needle: %d results, want 1", n)
	}
	if !page.evalBool(t, ctx, `window.confab.state.searchFrame === true`) {
		t.Error("the page did not use the gateway's search frame")
	}
	// A query the index refuses (no word of two letters) is scanned in the browser.
	page.eval(t, ctx, `document.getElementById('search-input').value = '-i'; document.getElementById('search').requestSubmit(); true`)
	page.waitJS(t, ctx, "scanned search result",
		`document.getElementById('results-title').textContent.includes('scanned') &&
		 [...document.querySelectorAll('#result-list .msg .content')].some(e => e.textContent.includes('needle-in-haystack'))`)
	page.screenshot(t, ctx, "web-search.png")
	page.eval(t, ctx, `document.getElementById('results-close').click(); true`)

	// Signatures: the browser checks them itself when it has WebCrypto Ed25519.
	page.waitJS(t, ctx, "verified marks", `document.querySelectorAll('#messages .verified').length >= 50`)
	if page.evalBool(t, ctx, `document.querySelectorAll('#messages .verified.bad').length > 0`) {
		t.Error("a signature failed the browser's check")
	}
	if !page.evalBool(t, ctx, `document.querySelectorAll('#messages .verified.browser').length > 0`) {
		t.Log("this Chromium has no WebCrypto Ed25519: marks say 'verified by the node' only")
	}

	// Read-only: the page's own origin may not write, even by hand.
	got := page.eval(t, ctx, `new Promise((resolve) => {
		const ws = new WebSocket('ws://' + location.host + '/v1?token=' + encodeURIComponent(window.confab.state.ws.url.split('token=')[1]));
		const codes = [];
		ws.onmessage = (e) => { const f = JSON.parse(e.data);
			if (f.type === 'welcome') { ws.send(JSON.stringify({type:'join',req:'1',channel:'#evil'}));
				ws.send(JSON.stringify({type:'send',req:'2',channel:'#general',content:'forged'})); return; }
			codes.push(f.code); if (codes.length === 2) { ws.close(); resolve(codes.join(',')); } };
		ws.onerror = () => resolve('error');
	})`)
	if got != "read_only,read_only" {
		t.Errorf("writes from the page: %v, want read_only,read_only", got)
	}

	// Screenshots: laptop, then phone with the drawer open.
	page.eval(t, ctx, `(() => { const c = document.getElementById('conversation'); c.scrollTop = c.scrollHeight; return true })()`)
	page.screenshot(t, ctx, "web-laptop.png")
	if _, err := page.call(ctx, "Emulation.setEmulatedMedia", map[string]any{"features": []map[string]string{{"name": "prefers-color-scheme", "value": "dark"}}}); err != nil {
		t.Fatal(err)
	}
	page.waitJS(t, ctx, "dark colours", `getComputedStyle(document.body).backgroundColor === 'rgb(17, 17, 24)'`)
	page.screenshot(t, ctx, "web-laptop-dark.png")
	if _, err := page.call(ctx, "Emulation.setDeviceMetricsOverride", map[string]any{"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true}); err != nil {
		t.Fatal(err)
	}
	page.waitJS(t, ctx, "phone layout hides the drawers", `getComputedStyle(document.getElementById('menu')).display !== 'none' &&
		getComputedStyle(document.getElementById('sidebar')).visibility === 'hidden' &&
		getComputedStyle(document.getElementById('members')).visibility === 'hidden'`)
	page.eval(t, ctx, `(() => { const c = document.getElementById('conversation'); c.scrollTop = c.scrollHeight; return true })()`)
	page.screenshot(t, ctx, "web-phone.png")
	page.eval(t, ctx, `document.getElementById('menu').click(); true`)
	page.waitJS(t, ctx, "drawer open", `document.body.classList.contains('show-sidebar')`)
	time.Sleep(300 * time.Millisecond) // the drawer's CSS transition, for the picture only
	page.screenshot(t, ctx, "web-phone-drawer.png")

	if d := page.problems(); len(d) > 0 {
		t.Errorf("browser reported problems:\n%s", strings.Join(d, "\n"))
	}

	// The HTTP side: headers, token and origin checks.
	resp, err := http.Get(base)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q", csp)
	}
	wsURL := "ws" + strings.TrimPrefix(base, "http") + "v1"
	for _, tc := range []struct {
		name   string
		url    string
		origin string
		want   int
	}{
		{"no token", wsURL, "", http.StatusUnauthorized},
		{"bad token", wsURL + "?token=" + strings.Repeat("0", len(tok)), "", http.StatusUnauthorized},
		{"cross origin", wsURL + "?token=" + tok, "http://evil.example", http.StatusForbidden},
	} {
		hdr := http.Header{}
		if tc.origin != "" {
			hdr.Set("Origin", tc.origin)
		}
		_, resp, err := websocket.DefaultDialer.DialContext(ctx, tc.url, hdr)
		if err == nil || resp == nil || resp.StatusCode != tc.want {
			st := 0
			if resp != nil {
				st = resp.StatusCode
			}
			t.Errorf("%s: status %d (%v), want %d", tc.name, st, err, tc.want)
		}
	}
}

// contentIs is a JS expression: some message content is exactly text.
func contentIs(text string) string {
	b, _ := json.Marshal(text)
	return `[...document.querySelectorAll('#messages .content')].some(e => e.textContent === ` + string(b) + `)`
}

func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ---- a minimal Chrome DevTools Protocol client over gorilla/websocket

type browser struct {
	cmd  *exec.Cmd
	page *cdpConn
}

var devtoolsRE = regexp.MustCompile(`DevTools listening on (ws://[^\s]+)`)

func startChromium(t *testing.T, ctx context.Context) *browser {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command(chromiumPath,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
		"--no-first-run", "--no-default-browser-check", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--disable-extensions", "--hide-scrollbars",
		"--mute-audio", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
		"--user-data-dir="+dir, "about:blank")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	b := &browser{cmd: cmd}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sent := false
		for sc.Scan() {
			if m := devtoolsRE.FindStringSubmatch(sc.Text()); m != nil && !sent {
				found <- m[1]
				sent = true
			}
		}
	}()
	var browserWS string
	select {
	case browserWS = <-found:
	case <-ctx.Done():
		t.Fatal("chromium printed no DevTools address")
	}
	// The page target's own endpoint, from the HTTP side of the same port.
	host := strings.SplitN(strings.TrimPrefix(browserWS, "ws://"), "/", 2)[0]
	var pageWS string
	waitFor(t, ctx, "a page target", func() bool {
		resp, err := http.Get("http://" + host + "/json/list")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var targets []struct{ Type, WebSocketDebuggerURL string }
		if json.NewDecoder(resp.Body).Decode(&targets) != nil {
			return false
		}
		for _, tg := range targets {
			if tg.Type == "page" && tg.WebSocketDebuggerURL != "" {
				pageWS = tg.WebSocketDebuggerURL
				return true
			}
		}
		return false
	})
	ws, _, err := websocket.DefaultDialer.DialContext(ctx, pageWS, nil)
	if err != nil {
		t.Fatalf("devtools: %v", err)
	}
	b.page = newCDPConn(ws)
	for _, m := range []string{"Page.enable", "Runtime.enable", "Log.enable"} {
		if _, err := b.page.call(ctx, m, nil); err != nil {
			t.Fatalf("%s: %v", m, err)
		}
	}
	return b
}

type cdpConn struct {
	ws   *websocket.Conn
	wmu  sync.Mutex
	done chan struct{}

	mu      sync.Mutex // guards the fields below
	next    int
	pending map[int]chan cdpMsg
	issues  []string // exceptions, console errors, CSP violations, dialogs
}

type cdpMsg struct {
	ID     int             `json:"id"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error"`
}

func newCDPConn(ws *websocket.Conn) *cdpConn {
	c := &cdpConn{ws: ws, done: make(chan struct{}), pending: map[int]chan cdpMsg{}}
	go c.read()
	return c
}

func (c *cdpConn) read() {
	defer close(c.done)
	for {
		var m cdpMsg
		if err := c.ws.ReadJSON(&m); err != nil {
			return
		}
		if m.ID != 0 {
			c.mu.Lock()
			ch := c.pending[m.ID]
			delete(c.pending, m.ID)
			c.mu.Unlock()
			if ch != nil {
				ch <- m
			}
			continue
		}
		c.event(m)
	}
}

// event records what the page must never do: throw, log errors, violate the
// CSP or open a dialog (an alert() from injected markup would).
func (c *cdpConn) event(m cdpMsg) {
	var issue string
	switch m.Method {
	case "Page.javascriptDialogOpening":
		issue = "dialog opened (script injection?): " + string(m.Params)
		go c.call(context.Background(), "Page.handleJavaScriptDialog", map[string]any{"accept": true})
	case "Runtime.exceptionThrown":
		issue = "exception: " + string(m.Params)
	case "Log.entryAdded":
		var p struct {
			Entry struct{ Level, Text, URL string } `json:"entry"`
		}
		json.Unmarshal(m.Params, &p)
		// A refused test connection (401/403) logs a network error; only
		// errors of the page itself count.
		if p.Entry.Level == "error" && !strings.Contains(p.Entry.Text, "favicon") {
			issue = "log: " + p.Entry.Text
		}
	case "Runtime.consoleAPICalled":
		var p struct{ Type string }
		json.Unmarshal(m.Params, &p)
		if p.Type == "error" || p.Type == "warning" {
			issue = "console: " + string(m.Params)
		}
	}
	if issue != "" {
		c.mu.Lock()
		c.issues = append(c.issues, issue)
		c.mu.Unlock()
	}
}

func (c *cdpConn) problems() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.issues...)
}

func (c *cdpConn) call(ctx context.Context, method string, params any) (json.RawMessage, error) {
	ch := make(chan cdpMsg, 1)
	c.mu.Lock()
	c.next++
	id := c.next
	c.pending[id] = ch
	c.mu.Unlock()
	if params == nil {
		params = map[string]any{}
	}
	c.wmu.Lock()
	err := c.ws.WriteJSON(map[string]any{"id": id, "method": method, "params": params})
	c.wmu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("cdp %s: %w", method, err)
	}
	select {
	case m := <-ch:
		if m.Error != nil {
			return nil, fmt.Errorf("cdp %s: %s", method, m.Error.Message)
		}
		return m.Result, nil
	case <-c.done:
		return nil, fmt.Errorf("cdp %s: connection closed", method)
	case <-ctx.Done():
		return nil, fmt.Errorf("cdp %s: %w", method, ctx.Err())
	}
}

func (c *cdpConn) close() {
	c.ws.Close()
	<-c.done
}

// evaluate runs expr in the page (awaiting a promise) and returns its value.
func (c *cdpConn) evaluate(ctx context.Context, expr string) (any, error) {
	raw, err := c.call(ctx, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true})
	if err != nil {
		return nil, err
	}
	var r struct {
		Result struct {
			Value any `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, err
	}
	if r.ExceptionDetails != nil {
		return nil, errors.New(r.ExceptionDetails.Text + " " + r.ExceptionDetails.Exception.Description)
	}
	return r.Result.Value, nil
}

func (c *cdpConn) eval(t *testing.T, ctx context.Context, expr string) any {
	t.Helper()
	v, err := c.evaluate(ctx, expr)
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

func (c *cdpConn) evalBool(t *testing.T, ctx context.Context, expr string) bool {
	t.Helper()
	v, _ := c.eval(t, ctx, expr).(bool)
	return v
}

func (c *cdpConn) evalInt(t *testing.T, ctx context.Context, expr string) int {
	t.Helper()
	v, _ := c.eval(t, ctx, expr).(float64)
	return int(v)
}

// waitJS polls expr until it is true.
func (c *cdpConn) waitJS(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	var last error
	for {
		v, err := c.evaluate(ctx, expr)
		if b, _ := v.(bool); err == nil && b {
			return
		}
		last = err
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s (last error %v); browser problems: %v", what, last, c.problems())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// screenshot saves a PNG of the page in the test's temp dir and, when
// CONFAB_SCREENSHOT_DIR is set, there too.
func (c *cdpConn) screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	raw, err := c.call(ctx, "Page.captureScreenshot", map[string]any{"format": "png"})
	if err != nil {
		t.Fatal(err)
	}
	var r struct{ Data string }
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatal(err)
	}
	png, err := base64.StdEncoding.DecodeString(r.Data)
	if err != nil {
		t.Fatal(err)
	}
	dirs := []string{t.TempDir()}
	if d := os.Getenv("CONFAB_SCREENSHOT_DIR"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot %s", p)
	}
}
