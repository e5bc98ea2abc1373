package rendezvous

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/confabhq/confab/mesh"
)

// lagWatcher measures history lag: for every record the archive stores,
// how long after its author signed it (author clock) it was stored. Live
// traffic shows network delay plus clock skew; catch-up after an outage
// shows how far behind the archive was.
type lagWatcher struct {
	hist   prometheus.Histogram
	last   prometheus.Gauge
	cancel context.CancelFunc
	done   chan struct{}
}

func startLagWatcher(m *mesh.Mesh) *lagWatcher {
	w := &lagWatcher{
		hist: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "confab_history_lag_seconds",
			Help:    "Time from an envelope's author timestamp to its storage in the archive.",
			Buckets: []float64{.01, .05, .1, .5, 1, 5, 30, 60, 300, 3600, 86400},
		}),
		last: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "confab_history_last_stored_timestamp_seconds",
			Help: "Unix time at which the archive last stored an envelope.",
		}),
		done: make(chan struct{}),
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go w.run(ctx, m)
	return w
}

func (w *lagWatcher) run(ctx context.Context, m *mesh.Mesh) {
	defer close(w.done)
	for ctx.Err() == nil {
		sub := m.Subscribe(nil, 0)
		w.drain(ctx, sub)
		sub.Close()
	}
}

func (w *lagWatcher) drain(ctx context.Context, sub *mesh.Subscription) {
	for {
		select {
		case <-ctx.Done():
			return
		case rec, ok := <-sub.C():
			if !ok {
				if sub.Err() != nil && !errors.Is(sub.Err(), mesh.ErrSlowConsumer) {
					<-ctx.Done() // mesh closed: wait for Close
				}
				return
			}
			now := time.Now()
			w.last.Set(float64(now.UnixMilli()) / 1000)
			if rec.Env != nil {
				w.hist.Observe(now.Sub(time.UnixMilli(rec.Env.TS)).Seconds())
			}
		}
	}
}

func (w *lagWatcher) close() {
	w.cancel()
	<-w.done
}

var (
	descGWConns     = prometheus.NewDesc("confab_gateway_connections", "Open gateway connections.", nil, nil)
	descGWAccepted  = prometheus.NewDesc("confab_gateway_connections_accepted_total", "Gateway connections upgraded.", nil, nil)
	descGWRefused   = prometheus.NewDesc("confab_gateway_connections_refused_total", "Gateway connections refused before the upgrade, by reason: full, per_ip, origin, bad_upgrade (not a WebSocket upgrade), handshake_timeout (request headers not in within HandshakeTimeout).", []string{"reason"}, nil)
	descGWAuth      = prometheus.NewDesc("confab_gateway_auth_total", "Gateway authentications, by result.", []string{"result"}, nil)
	descGWClosed    = prometheus.NewDesc("confab_gateway_closed_total", "Gateway connections closed by the gateway for abuse or death, by reason: write_timeout (a client not reading), read_timeout (no frame or pong within PongTimeout), too_large (a frame over MaxFrame).", []string{"reason"}, nil)
	descGWDisplaced = prometheus.NewDesc("confab_gateway_displaced_total", "Gateway connections displaced by a newer one of the same identity.", nil, nil)
	descGWFrames    = prometheus.NewDesc("confab_gateway_frames_total", "Gateway frames, by direction.", []string{"dir"}, nil)
	descPeers       = prometheus.NewDesc("confab_p2p_peers", "Connected libp2p peers.", nil, nil)
	descChannels    = prometheus.NewDesc("confab_channels_followed", "Channels the archive follows.", nil, nil)
	descMsgs        = prometheus.NewDesc("confab_messages_total", "Envelopes: in = stored from the network or clients, out = published by this node for gateway clients, served = sent to peers by catch-up.", []string{"dir"}, nil)
	descDrops       = prometheus.NewDesc("confab_drops_total", "Envelopes, frames and deliveries dropped, by reason.", []string{"reason"}, nil)
	descStoreBytes  = prometheus.NewDesc("confab_store_bytes", "Badger size on disk, by part.", []string{"part"}, nil)
	descStoreEnvs   = prometheus.NewDesc("confab_store_appends_total", "Envelopes stored since start.", nil, nil)
	descRelayACL    = prometheus.NewDesc("confab_relay_acl_total", "Relay requests by membership decision: op reserve or connect, result allowed or refused (not a mesh member).", []string{"op", "result"}, nil)
	descRelayMember = prometheus.NewDesc("confab_relay_members", "Peers that proved they speak confab within the member window.", nil, nil)
	descStoreOffset = prometheus.NewDesc("confab_store_last_offset", "Highest arrival offset assigned (envelopes ever stored).", nil, nil)
)

// collector reads the counters of the mesh, gateway, store and host at
// scrape time, so metrics cost nothing between scrapes.
type collector struct{ r *Rendezvous }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descGWConns, descGWAccepted, descGWRefused, descGWAuth, descGWDisplaced, descGWClosed,
		descGWFrames, descPeers, descChannels, descMsgs, descDrops, descStoreBytes, descStoreEnvs, descStoreOffset,
		descRelayACL, descRelayMember} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	r := c.r
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	ms := r.mesh.Stats()
	var gwDrops [3]uint64
	var published uint64
	if r.gw != nil {
		gs := r.gw.Stats()
		gauge(descGWConns, float64(gs.Conns))
		counter(descGWAccepted, gs.Accepted)
		counter(descGWRefused, gs.RefusedFull, "full")
		counter(descGWRefused, gs.RefusedPerIP, "per_ip")
		counter(descGWRefused, gs.RefusedOrigin, "origin")
		counter(descGWRefused, gs.RefusedUpgrade, "bad_upgrade")
		counter(descGWRefused, gs.HandshakeTimeouts, "handshake_timeout")
		counter(descGWClosed, gs.WriteTimeouts, "write_timeout")
		counter(descGWClosed, gs.ReadTimeouts, "read_timeout")
		counter(descGWClosed, gs.TooLarge, "too_large")
		counter(descGWAuth, gs.AuthOK, "ok")
		counter(descGWAuth, gs.AuthFailures, "failed")
		counter(descGWAuth, gs.AuthTimeouts, "timeout")
		counter(descGWDisplaced, gs.Displaced)
		counter(descGWFrames, gs.FramesIn, "in")
		counter(descGWFrames, gs.FramesOut, "out")
		gwDrops = [3]uint64{gs.BadFrames, gs.RateLimited, gs.SlowSubscribers}
		published = gs.Published
	}
	gauge(descPeers, float64(len(r.host.Host().Network().Peers())))
	gauge(descChannels, float64(len(r.mesh.Channels())))
	counter(descMsgs, ms.Delivered, "in")
	counter(descMsgs, published, "out")
	counter(descMsgs, ms.SyncEnvelopesIn, "caught_up")
	for reason, v := range map[string]uint64{
		"invalid": ms.RejectedInvalid, "time_window": ms.IgnoredWindow, "author_rate": ms.RateDrops,
		"slow_subscriber": ms.SubscriberDrops, "duplicate": ms.Duplicates, "gap_skipped": ms.GapsSkipped,
		"store_error": ms.StoreErrors, "gateway_bad_frame": gwDrops[0], "gateway_rate": gwDrops[1],
		"gateway_slow_client": gwDrops[2],
	} {
		counter(descDrops, v, reason)
	}
	rs := r.relay.stats()
	counter(descRelayACL, rs.ReserveAllowed, "reserve", "allowed")
	counter(descRelayACL, rs.ReserveRefused, "reserve", "refused")
	counter(descRelayACL, rs.ConnectAllowed, "connect", "allowed")
	counter(descRelayACL, rs.ConnectRefused, "connect", "refused")
	gauge(descRelayMember, float64(rs.Members))
	ss := r.db.Stats()
	gauge(descStoreBytes, float64(ss.LSMBytes), "lsm")
	gauge(descStoreBytes, float64(ss.VlogBytes), "vlog")
	counter(descStoreEnvs, ss.Appends)
	gauge(descStoreOffset, float64(ss.LastOffset))
}

// startOps binds the operations listener: /healthz and /metrics.
func (r *Rendezvous) startOps() error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{r}, r.lag.hist, r.lag.last,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(r.log.Handler(), slog.LevelWarn)}))
	mux.HandleFunc("GET /healthz", r.healthz)
	ln, err := net.Listen("tcp", r.cfg.Metrics)
	if err != nil {
		return fmt.Errorf("rendezvous: metrics listen %s: %w", r.cfg.Metrics, err)
	}
	r.opsLn = ln
	r.opsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(r.log.Handler(), slog.LevelDebug)}
	r.serve(r.opsSrv, ln, "metrics")
	return nil
}

// healthz answers 200 "ok" when the store answers a read, 503 otherwise.
func (r *Rendezvous) healthz(w http.ResponseWriter, req *http.Request) {
	ctx, cancel := context.WithTimeout(req.Context(), 2*time.Second)
	defer cancel()
	if _, err := r.db.Channels(ctx); err != nil {
		http.Error(w, "store: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintf(w, "ok %s peers=%d channels=%d\n", r.ID(), len(r.host.Host().Network().Peers()), len(r.mesh.Channels()))
}
