package rendezvous_test

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/confabhq/confab/rendezvous"
)

// TestGatewayAbuseMetrics: a socket that never sends its upgrade request
// and a plain HTTP request to the gateway show in the Prometheus metrics by
// reason.
func TestGatewayAbuseMetrics(t *testing.T) {
	leakCheck(t)
	r := startRendezvous(t, func(c *rendezvous.Config) { c.Gateway.HandshakeTimeout = 100 * time.Millisecond })
	c, err := net.Dial("tcp", r.WSAddr())
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	io.Copy(io.Discard, c) // the gateway hangs up after HandshakeTimeout
	c.Close()
	resp, err := http.Get("http://" + r.WSAddr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	wants := []string{`confab_gateway_connections_refused_total{reason="handshake_timeout"} 1`,
		`confab_gateway_connections_refused_total{reason="bad_upgrade"} 1`,
		`confab_gateway_closed_total{reason="write_timeout"} 0`,
		`confab_gateway_closed_total{reason="read_timeout"} 0`,
		`confab_gateway_closed_total{reason="too_large"} 0`}
	var body string
	waitFor(t, "abuse metrics", func() bool {
		body = get(t, "http://"+r.MetricsAddr()+"/metrics")
		for _, w := range wants {
			if !strings.Contains(body, w) {
				return false
			}
		}
		return true
	})
}
