//go:build race

package mesh_test

// raceEnabled: the race detector slows libp2p handshakes ~10x; many-node
// tests run fewer nodes under it (two cores cannot hold 20 racing nodes).
const raceEnabled = true
