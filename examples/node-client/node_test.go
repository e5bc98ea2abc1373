// Package nodeclient_test runs the Node.js thin client (client.js) against
// a real rendezvous and checks, from a Go thin client, that its message
// arrives signed by its own key, and that it receives the Go client's reply.
package nodeclient_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/confabhq/confab/internal/netnstest"
	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/rendezvous"
	"github.com/confabhq/confab/wsgateway"
)

// TestMain installs the ws package (npm ci) while the network is still
// reachable, then runs the tests in a private network namespace.
func TestMain(m *testing.M) {
	if !netnstest.Isolated() {
		if _, err := exec.LookPath("npm"); err == nil {
			if _, err := os.Stat("node_modules/ws"); err != nil {
				cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund")
				cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
				if err := cmd.Run(); err != nil {
					fmt.Fprintln(os.Stderr, "npm ci failed:", err)
				}
			}
		}
	}
	netnstest.Main(m)
}

type line struct {
	Event    string         `json:"event"`
	Peer     string         `json:"peer"`
	ID       string         `json:"id"`
	Verified bool           `json:"verified"`
	Envelope *mesh.Envelope `json:"envelope"`
	Message  string         `json:"message"`
}

func TestNodeClientThroughRendezvous(t *testing.T) {
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node is not installed: skipping the Node.js thin-client example")
	}
	if _, err := os.Stat("node_modules/ws"); err != nil {
		t.Fatalf("node_modules/ws missing: run npm ci in examples/node-client (%v)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := rendezvous.DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.WS = "127.0.0.1:0"
	cfg.JoinSecret = []byte("letmein")
	r, err := rendezvous.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	secretFile := t.TempDir() + "/secret"
	os.WriteFile(secretFile, []byte("letmein\n"), 0o600)

	// The Go thin client listens on #general.
	k, _, _ := crypto.GenerateEd25519Key(nil)
	goID, _ := peer.IDFromPrivateKey(k)
	c, err := wsgateway.Dial(ctx, "ws://"+r.WSAddr()+"/")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Authenticate(ctx, k, "letmein"); err != nil {
		t.Fatal(err)
	}
	if err := c.Join(ctx, "#general"); err != nil {
		t.Fatal(err)
	}
	events, err := c.Subscribe(ctx, nil, "")
	if err != nil {
		t.Fatal(err)
	}

	cmd := exec.CommandContext(ctx, "node", "client.js", "--url", "ws://"+r.WSAddr()+"/", "--channel", "#general",
		"--content", "hello from node ✓", "--name", "nodejs", "--secret-file", secretFile, "--wait", "30", "--until-from-other")
	stdout, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan line, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var l line
			if json.Unmarshal(sc.Bytes(), &l) == nil {
				lines <- l
			}
		}
	}()
	var nodeID string
	for nodeID == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("node client ended before authenticating: %s", stderr.String())
			}
			if l.Event == "error" {
				t.Fatalf("node client: %s", l.Message)
			}
			if l.Event == "authenticated" {
				nodeID = l.Peer
			}
		case <-ctx.Done():
			t.Fatal("node client never authenticated")
		}
	}
	if !strings.HasPrefix(nodeID, "12D3KooW") {
		t.Errorf("node peer id %q is not an Ed25519 libp2p id", nodeID)
	}
	// Its message reaches the Go client, signed by the Node client's key.
	select {
	case ev := <-events:
		e := ev.Record.Env
		if e.From != nodeID || e.Content != "hello from node ✓" || e.Name != "nodejs" {
			t.Errorf("Go client got %+v, want the Node client's message from %s", e, nodeID)
		}
		if err := e.Verify(); err != nil {
			t.Errorf("Node-signed envelope does not verify in Go: %v", err)
		}
	case <-ctx.Done():
		t.Fatalf("Go client never got the Node client's message: %s", stderr.String())
	}
	// The Go client's reply reaches the Node client, which verifies it.
	reply := &mesh.Envelope{Channel: "#general", Name: "go", Seq: 1, TS: time.Now().UnixMilli(), Kind: "msg", Content: "hello from go"}
	if err := reply.Sign(k); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Publish(ctx, reply); err != nil {
		t.Fatal(err)
	}
	got := false
	for l := range lines {
		if l.Event == "message" && l.Envelope != nil && l.Envelope.From == goID.String() {
			got = true
			if !l.Verified || l.Envelope.Content != "hello from go" {
				t.Errorf("Node client got %+v (verified %v)", l.Envelope, l.Verified)
			}
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("node client: %v: %s", err, stderr.String())
	}
	if !got {
		t.Error("Node client never got the Go client's reply")
	}
}
