package bundle

import (
	"bytes"
	"encoding/hex"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// TestGolden pins the wire forms: the offer's JSON and the transfer frames.
// Run with -update after a deliberate change, and bump the version.
func TestGolden(t *testing.T) {
	h := strings.Repeat("ab", 32)
	var frames bytes.Buffer
	for _, v := range []any{
		request{Type: reqType, V: 1, Hash: h, Offset: 1049353},
		response{Type: respType, V: 1, Size: 209779449, Offset: 1049353},
		response{Type: respType, V: 1, Error: codeUnavailable},
	} {
		frames.WriteString(hex.EncodeToString(frame(t, v)) + "\n")
	}
	offer, err := validOffer().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		got  []byte
	}{
		{"offer.golden", append(offer, '\n')},
		{"frames.golden", frames.Bytes()},
	} {
		path := filepath.Join("testdata", tt.name)
		if *update {
			if err := os.MkdirAll("testdata", 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, tt.got, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run with -update to create)", err)
		}
		if !bytes.Equal(tt.got, want) {
			t.Errorf("%s changed:\ngot  %s\nwant %s", tt.name, tt.got, want)
		}
	}
	want, err := os.ReadFile(filepath.Join("testdata", "offer.golden"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseOffer(bytes.TrimSpace(want)); err != nil {
		t.Errorf("golden offer does not parse: %v", err)
	}
}
