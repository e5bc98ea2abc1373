//go:build !confab_mdns

package node

import (
	"io"

	"github.com/libp2p/go-libp2p/core/host"
)

// mdnsCompiled reports whether this build includes LAN discovery.
//
// go-libp2p's mdns package needs github.com/libp2p/zeroconf/v2 and
// github.com/miekg/dns, which go.mod does not list yet. Until they are
// added, mDNS is compiled in only with -tags confab_mdns (and a go.mod that
// has them); see doc.go.
const mdnsCompiled = false

func startMDNS(host.Host, *discoverer) (io.Closer, error) { return nil, ErrMDNSUnavailable }
