package store

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
)

// Key prefixes; doc.go describes the layout. Channel names and peer ids never
// contain 0x00, so it terminates variable-length parts unambiguously.
const (
	prefixMsg     = "m/"
	prefixLog     = "l/"
	prefixAuthor  = "a/"
	prefixHigh    = "h/"
	prefixChannel = "c/"
)

var keyLastOffset = []byte("o/last")

// msgVersion is the first byte of every m/ value.
const msgVersion = 1

func be64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

func msgKey(id []byte) []byte {
	return append([]byte(prefixMsg), id...)
}

func logPrefix(channel string) []byte {
	b := make([]byte, 0, len(prefixLog)+len(channel)+1+8)
	b = append(b, prefixLog...)
	b = append(b, channel...)
	return append(b, 0)
}

func logKey(channel string, off uint64) []byte {
	return binary.BigEndian.AppendUint64(logPrefix(channel), off)
}

func authorPrefix(channel, author string) []byte {
	b := make([]byte, 0, len(prefixAuthor)+len(channel)+len(author)+2+8)
	b = append(b, prefixAuthor...)
	b = append(b, channel...)
	b = append(b, 0)
	b = append(b, author...)
	return append(b, 0)
}

func authorKey(channel, author string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(authorPrefix(channel, author), seq)
}

func highPrefix(channel string) []byte {
	b := make([]byte, 0, len(prefixHigh)+len(channel)+1+64)
	b = append(b, prefixHigh...)
	b = append(b, channel...)
	return append(b, 0)
}

func highKey(channel, author string) []byte {
	return append(highPrefix(channel), author...)
}

func channelKey(channel string) []byte {
	return append([]byte(prefixChannel), channel...)
}

// FormatCursor renders an arrival offset as a cursor: 16 lowercase hex
// characters, so cursors compare as strings in arrival order.
func formatCursor(off uint64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], off)
	return hex.EncodeToString(b[:])
}

// parseCursor parses a cursor; "" is offset 0 with ok=false.
func parseCursor(c string) (off uint64, ok bool, err error) {
	if c == "" {
		return 0, false, nil
	}
	if len(c) != 16 {
		return 0, false, fmt.Errorf("%w: %q", ErrBadCursor, trunc(c))
	}
	for i := 0; i < len(c); i++ {
		if !isLowerHex(c[i]) {
			return 0, false, fmt.Errorf("%w: %q", ErrBadCursor, c)
		}
	}
	var b [8]byte
	if _, err := hex.Decode(b[:], []byte(c)); err != nil {
		return 0, false, fmt.Errorf("%w: %q", ErrBadCursor, c)
	}
	return binary.BigEndian.Uint64(b[:]), true, nil
}

func isLowerHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' }

// parseID decodes a 64-char lowercase hex id into its 32 raw bytes.
func parseID(id string) ([]byte, bool) {
	if len(id) != 64 {
		return nil, false
	}
	for i := 0; i < len(id); i++ {
		if !isLowerHex(id[i]) {
			return nil, false
		}
	}
	b, err := hex.DecodeString(id)
	return b, err == nil
}

func trunc(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
