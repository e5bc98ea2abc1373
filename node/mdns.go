package node

import (
	"fmt"
	"io"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
)

// startMDNS advertises h under MDNSService and reports peers to d.
func startMDNS(h host.Host, d *discoverer) (io.Closer, error) {
	s := mdns.NewMdnsService(h, MDNSService, d)
	if err := s.Start(); err != nil {
		s.Close()
		return nil, fmt.Errorf("node: mdns: %w", err)
	}
	return s, nil
}
