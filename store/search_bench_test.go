package store

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/confabhq/confab/mesh"
)

// BenchmarkSearch searches 100k stored envelopes in 8 channels whose words
// follow a Zipf law over a 5000-word vocabulary ("w0" most common), plus the
// word "rare" in one envelope in 1000. Setup (storing them) is not timed.
func BenchmarkSearch(b *testing.B) {
	const total = 100_000
	db := open(b, b.TempDir())
	tmpl := signed(b, newKey(b), "#c0", 1, "template")
	r := rand.New(rand.NewPCG(1, 2))
	zipf := rand.NewZipf(r, 1.1, 1, 4999)
	var sb strings.Builder
	seqs := map[string]uint64{}
	batch := make([]*mesh.Envelope, 0, 1000)
	for i := range total {
		sb.Reset()
		for j := range 12 {
			if j > 0 {
				sb.WriteByte(' ')
			}
			sb.WriteString("w" + strconv.FormatUint(zipf.Uint64(), 10))
		}
		if i%1000 == 500 {
			sb.WriteString(" rare")
		}
		e := *tmpl
		e.Channel = "#c" + strconv.Itoa(i%8)
		seqs[e.Channel]++
		e.Seq = seqs[e.Channel]
		e.Content = sb.String()
		e.ID = e.ComputeID()
		batch = append(batch, &e)
		if len(batch) == cap(batch) {
			if _, err := db.Append(ctx, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	for _, bc := range []struct {
		name, query, channel string
		limit                int
	}{
		{"common word", "w0", "", 50},
		{"rare word", "rare", "", 50},
		{"absent word", "nothere", "", 50},
		{"two common words", "w0 w1", "", 50},
		{"common and rare", "w0 rare", "", 50},
		{"mid-frequency pair", "w30 w40", "", 50},
		{"common in one channel", "w0", "#c3", 50},
		{"rare in one channel", "rare", "#c4", 50},
		{"prefix", "w19*", "", 50},
		{"word and prefix", "w0 w19*", "", 50},
		{"common word limit 200", "w0", "", 200},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			var found int
			for b.Loop() {
				envs, _, err := db.Search(ctx, bc.query, bc.channel, bc.limit)
				if err != nil {
					b.Fatal(err)
				}
				found = len(envs)
			}
			b.ReportMetric(float64(found), "results")
		})
	}
}
