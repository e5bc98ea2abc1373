package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/wsgateway"
)

// A minimal broadcast server in the shape of gorilla/websocket's chat
// example: one hub goroutine owns the client set; each client has a read pump
// (feeds the hub) and a write pump (owns writes, pings and deadlines) with a
// 256-message send queue; a client whose queue is full is dropped. Unlike the
// example, the write pump sends one frame per message instead of joining
// queued messages with newlines, so the benchmark can count frames.
//
// In the fan-out comparison the publisher broadcasts frames of the shape and
// size of the gateway's live events (JSON, an envelope with its id, author,
// signature bytes and cursor), and each receiving client decodes and checks
// them the way wsgateway.Client does (one json.Unmarshal of the whole frame,
// then the envelope's field checks), so both sides' clients do the same work
// per frame. The baseline signs nothing and verifies nothing.

const (
	wsWriteWait  = 10 * time.Second
	wsPongWait   = 60 * time.Second
	wsPingPeriod = wsPongWait * 9 / 10
	wsMaxMessage = 4096
)

type wsHub struct {
	register   chan *wsClient
	unregister chan *wsClient
	broadcast  chan []byte
	quit       chan struct{}
	count      chan chan int
	clients    map[*wsClient]bool // only touched by run
}

type wsClient struct {
	hub  *wsHub
	conn *websocket.Conn
	send chan []byte
}

func (h *wsHub) run() {
	for {
		select {
		case c := <-h.register:
			h.clients[c] = true
		case c := <-h.unregister:
			if h.clients[c] {
				delete(h.clients, c)
				close(c.send)
			}
		case m := <-h.broadcast:
			for c := range h.clients {
				select {
				case c.send <- m:
				default:
					delete(h.clients, c)
					close(c.send)
				}
			}
		case reply := <-h.count:
			reply <- len(h.clients)
		case <-h.quit:
			for c := range h.clients {
				delete(h.clients, c)
				close(c.send)
			}
			return
		}
	}
}

func (c *wsClient) readPump(wg *sync.WaitGroup) {
	defer wg.Done()
	defer func() {
		select {
		case c.hub.unregister <- c:
		case <-c.hub.quit:
		}
		c.conn.Close()
	}()
	c.conn.SetReadLimit(wsMaxMessage)
	c.conn.SetReadDeadline(time.Now().Add(wsPongWait))
	c.conn.SetPongHandler(func(string) error { c.conn.SetReadDeadline(time.Now().Add(wsPongWait)); return nil })
	for {
		_, m, err := c.conn.ReadMessage()
		if err != nil {
			return
		}
		select {
		case c.hub.broadcast <- m:
		case <-c.hub.quit:
			return
		}
	}
}

func (c *wsClient) writePump(wg *sync.WaitGroup) {
	defer wg.Done()
	ticker := time.NewTicker(wsPingPeriod)
	defer func() {
		ticker.Stop()
		c.conn.Close()
	}()
	for {
		select {
		case m, ok := <-c.send:
			c.conn.SetWriteDeadline(time.Now().Add(wsWriteWait))
			if !ok {
				c.conn.WriteMessage(websocket.CloseMessage, []byte{})
				return
			}
			if err := c.conn.WriteMessage(websocket.BinaryMessage, m); err != nil {
				return
			}
		case <-ticker.C:
			c.conn.SetWriteDeadline(time.Now().Add(wsWriteWait))
			if err := c.conn.WriteMessage(websocket.PingMessage, nil); err != nil {
				return
			}
		}
	}
}

// gorillaServer is the hub plus its HTTP server on 127.0.0.1.
type gorillaServer struct {
	hub   *wsHub
	srv   *http.Server
	ln    net.Listener
	URL   string
	wg    sync.WaitGroup // pumps and the hub
	serve chan struct{}
	once  sync.Once
}

func startGorilla() (*gorillaServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: ws listen: %w", err)
	}
	h := &wsHub{
		register: make(chan *wsClient), unregister: make(chan *wsClient), broadcast: make(chan []byte),
		quit: make(chan struct{}), count: make(chan chan int), clients: map[*wsClient]bool{},
	}
	s := &gorillaServer{hub: h, ln: ln, URL: "ws://" + ln.Addr().String() + "/ws", serve: make(chan struct{})}
	up := websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 1024}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		conn, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		c := &wsClient{hub: h, conn: conn, send: make(chan []byte, 256)}
		select {
		case h.register <- c:
		case <-h.quit:
			conn.Close()
			return
		}
		s.wg.Add(2)
		go c.writePump(&s.wg)
		go c.readPump(&s.wg)
	})
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	s.wg.Add(1)
	go func() { defer s.wg.Done(); h.run() }()
	go func() { defer close(s.serve); s.srv.Serve(ln) }()
	return s, nil
}

// clients returns how many clients the hub holds.
func (s *gorillaServer) clients() int {
	r := make(chan int, 1)
	select {
	case s.hub.count <- r:
		return <-r
	case <-s.hub.quit:
		return 0
	}
}

// waitClients polls until the hub holds n clients.
func (s *gorillaServer) waitClients(ctx context.Context, n int) error {
	for s.clients() != n {
		select {
		case <-ctx.Done():
			return fmt.Errorf("bench: hub holds %d clients, want %d: %w", s.clients(), n, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// Close stops the listener, drops every client and waits for every pump.
func (s *gorillaServer) Close() {
	s.once.Do(func() {
		s.srv.Close()
		<-s.serve
		close(s.hub.quit)
		s.wg.Wait()
	})
}

// dialWS opens one client connection.
func dialWS(ctx context.Context, url string) (*websocket.Conn, error) {
	d := websocket.Dialer{HandshakeTimeout: 30 * time.Second, ReadBufferSize: 1024, WriteBufferSize: 1024}
	c, _, err := d.DialContext(ctx, url, nil)
	if err != nil {
		return nil, fmt.Errorf("bench: ws dial: %w", err)
	}
	return c, nil
}

// wsGroup adapts the gorilla server to channelGroup shape for fan-out: member 0
// is the publishing client, members 1..n-1 the receiving clients.
type wsGroup struct {
	srv   *gorillaServer
	conns []*websocket.Conn
	from  string // the author id written into every event
	seq   uint64
	wg    sync.WaitGroup
	once  sync.Once
}

func setupGorillaFanout(ctx context.Context, n int, deliver func(int, []byte)) (*wsGroup, error) {
	_, pub, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return nil, err
	}
	from, err := peer.IDFromPublicKey(pub)
	if err != nil {
		return nil, err
	}
	srv, err := startGorilla()
	if err != nil {
		return nil, err
	}
	g := &wsGroup{srv: srv, from: from.String()}
	for i := 0; i < n; i++ {
		c, err := dialWS(ctx, srv.URL)
		if err != nil {
			g.Close()
			return nil, err
		}
		g.conns = append(g.conns, c)
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			for {
				_, m, err := c.ReadMessage()
				if err != nil {
					return
				}
				if i == 0 {
					continue
				}
				ev, err := decodeBenchEvent(m)
				if err != nil {
					return
				}
				deliver(i, confabPayload(ev.Record.Env.Content))
			}
		}()
	}
	if err := srv.waitClients(ctx, n); err != nil {
		g.Close()
		return nil, err
	}
	return g, nil
}

// benchID and benchSig stand in for an envelope's id and signature: the
// same length on the wire, never checked.
var (
	benchID  = strings.Repeat("0", 64)
	benchSig = make([]byte, 64)
)

// Publish sends p inside a frame shaped like the gateway's live event; the
// server broadcasts it unchanged.
func (g *wsGroup) Publish(ctx context.Context, p []byte) error {
	g.seq++
	env := &mesh.Envelope{ID: benchID, Channel: confabBenchChannel, From: g.from, Name: "bench", Seq: g.seq,
		TS: time.Now().UnixMilli(), Kind: "msg", Content: confabContent(p), Sig: benchSig}
	data, err := wsgateway.EncodeFrame(&wsgateway.Event{Record: mesh.Record{Env: env, Cursor: fmt.Sprintf("%016x", g.seq)}})
	if err != nil {
		return err
	}
	g.conns[0].SetWriteDeadline(time.Now().Add(wsWriteWait))
	return g.conns[0].WriteMessage(websocket.TextMessage, data)
}

// decodeBenchEvent decodes and checks an event frame as wsgateway.Client
// does: the whole frame in one json.Unmarshal, then the record's checks.
func decodeBenchEvent(data []byte) (*wsgateway.Event, error) {
	var x struct {
		Type string `json:"type"`
		Req  string `json:"req"`
		wsgateway.Event
	}
	if err := json.Unmarshal(data, &x); err != nil {
		return nil, err
	}
	r := x.Record
	if x.Type != wsgateway.TypeEvent || r.Env == nil || r.Cursor == "" || len(r.Cursor) > wsgateway.MaxCursorLen {
		return nil, errors.New("bench: not an event")
	}
	if err := r.Env.Validate(); err != nil {
		return nil, err
	}
	return &x.Event, nil
}

func (g *wsGroup) Close() error {
	g.once.Do(func() {
		for _, c := range g.conns {
			c.Close()
		}
		g.wg.Wait()
		g.srv.Close()
	})
	return nil
}

var errNoDelivery = errors.New("bench: nothing delivered")
