package wsgateway

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// RemoteConfig holds the settings that only apply in ModeRemote, where the
// gateway faces untrusted thin clients on TCP. Zero fields take the defaults
// listed on DefaultRemoteConfig.
type RemoteConfig struct {
	// MaxConnsPerIP caps concurrent connections (including ones still
	// authenticating) from one remote IP address. Beyond it the upgrade is
	// refused with HTTP 429. Default 16.
	MaxConnsPerIP int
	// AuthTimeout is how long a connection may stay unauthenticated after
	// its welcome. Then it gets an auth_timeout error and close 4001.
	// Default 10 s.
	AuthTimeout time.Duration
	// Rate is the sustained number of requests per second one identity may
	// make (publish, join, history, ...; ping and auth are free). Burst is
	// the bucket size. The bucket belongs to the identity: a connection
	// that displaces another inherits it. Over the rate a request gets
	// rate_limited and is not executed; the connection stays. Default 20/s,
	// burst 100.
	Rate  float64
	Burst int
	// MaxJoins caps the channels one connection may join (each join also
	// makes the node follow the channel). Default 64.
	MaxJoins int
	// AllowedOrigins lists the browser origins ("https://app.example.com",
	// scheme://host[:port]) allowed to open connections; "*" allows any.
	// Requests without an Origin header (non-browser clients) and requests
	// whose Origin host equals the request's Host are always allowed.
	// Default none.
	AllowedOrigins []string
	// JoinSecret, if set, must be sent in the auth frame's "secret" field.
	// It is compared in constant time. Default none (open gateway).
	JoinSecret []byte
}

// DefaultRemoteConfig returns the remote-mode defaults: MaxConnsPerIP 16,
// AuthTimeout 10 s, Rate 20/s, Burst 100, MaxJoins 64, no extra allowed
// origins, no join secret.
func DefaultRemoteConfig() RemoteConfig {
	return RemoteConfig{
		MaxConnsPerIP: 16,
		AuthTimeout:   10 * time.Second,
		Rate:          20,
		Burst:         100,
		MaxJoins:      64,
	}
}

func (r *RemoteConfig) fill() error {
	d := DefaultRemoteConfig()
	if r.MaxConnsPerIP == 0 {
		r.MaxConnsPerIP = d.MaxConnsPerIP
	}
	if r.AuthTimeout == 0 {
		r.AuthTimeout = d.AuthTimeout
	}
	if r.Rate == 0 {
		r.Rate = d.Rate
	}
	if r.Burst == 0 {
		r.Burst = d.Burst
	}
	if r.MaxJoins == 0 {
		r.MaxJoins = d.MaxJoins
	}
	switch {
	case r.MaxConnsPerIP < 1, r.Burst < 1, r.MaxJoins < 1:
		return errors.New("remote: MaxConnsPerIP, Burst and MaxJoins must be positive")
	case r.AuthTimeout < 0, r.Rate < 0:
		return errors.New("remote: AuthTimeout and Rate must be positive")
	}
	for _, o := range r.AllowedOrigins {
		if o == "*" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return fmt.Errorf("remote: allowed origin %q is not scheme://host[:port]", o)
		}
	}
	return nil
}

// checkOrigin is the remote-mode origin policy (see RemoteConfig.AllowedOrigins).
func (r *RemoteConfig) checkOrigin(req *http.Request) bool {
	origin := req.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	if strings.EqualFold(u.Host, req.Host) {
		return true
	}
	for _, o := range r.AllowedOrigins {
		if o == "*" || strings.EqualFold(strings.TrimSuffix(o, "/"), u.Scheme+"://"+u.Host) {
			return true
		}
	}
	return false
}

// remoteIP returns the IP of the request's peer, or "" for transports
// without one (unix sockets), which are not limited per IP.
func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); ip != nil {
		return ip.String()
	}
	return ""
}
