package store

import (
	crand "crypto/rand"
	"encoding/base64"
	"math/rand"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/confabhq/confab/mesh"
)

// words is English text for envelopes that read like chat: the 200 most
// common English words, drawn with a Zipf distribution.
var words = strings.Fields(`the be to of and a in that have i it for not on with he as you do at this but his by from
they we say her she or an will my one all would there their what so up out if about who get which go me when make
can like time no just him know take people into year your good some could them see other than then now look only
come its over think also back after use two how our work first well way even new want because any these give day
most us is was are been has had were said did made went took came saw knew thought told found gave asked seemed
felt became left kept began showed heard let meant set put ran read paid brought sat stood lost built sent spent
fell understood met held wrote stream node peer agent message channel store index search commit sync key badger
test build fix bug change file line code run error value type function return call read write open close start
stop send receive wait list map string number byte time data system user server client request response event`)

func chatText(rng *rand.Rand, zipf *rand.Zipf, n int) string {
	var b strings.Builder
	for b.Len() < n {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(words[zipf.Uint64()])
	}
	return b.String()
}

// historyEnvs returns n envelopes shaped like the bench history scenario's:
// 16 authors in one channel, 200 bytes of random base64 as content (text:
// English-like chat of about 200 bytes instead), each author's seqs in
// order, interleaved. One real signature per author is reused (the store
// checks ids, not signatures).
func historyEnvs(tb testing.TB, n int, text ...bool) []*mesh.Envelope {
	tb.Helper()
	const authors = 16
	tmpl := make([]*mesh.Envelope, authors)
	for i := range tmpl {
		tmpl[i] = signed(tb, newKey(tb), "#bench", 1, "x")
	}
	out := make([]*mesh.Envelope, n)
	raw := make([]byte, 150)
	rng := rand.New(rand.NewSource(1))
	zipf := rand.NewZipf(rng, 1.1, 2, uint64(len(words)-1))
	for i := range out {
		e := *tmpl[i%authors]
		e.Name = "bench"
		e.Seq = uint64(i/authors + 1)
		if len(text) > 0 && text[0] {
			e.Content = chatText(rng, zipf, 200)
		} else {
			crand.Read(raw)
			e.Content = base64.StdEncoding.EncodeToString(raw)
		}
		e.ID = e.ComputeID()
		out[i] = &e
	}
	return out
}

// cpuTime is this process's user+sys CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// waitIndexedAll waits until the indexer covers every committed envelope, so
// its cost is inside the measurement.
func waitIndexedAll(tb testing.TB, db *DB) {
	deadline := time.Now().Add(time.Minute)
	for db.idx.indexed.Load() < db.idx.committed.Load() {
		if time.Now().After(deadline) {
			tb.Fatal("indexer did not catch up")
		}
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkHistoryCPU is the bench history scenario's store part with the
// CPU it costs: 256 concurrent callers appending one envelope each, and one
// caller appending batches of 1000 (catch-up stores large batches); with
// the scenario's random content, and with English-like text (text/...),
// whose words repeat as chat's do. It
// reports envs/s (wall clock, noisy on a shared machine) and cpu-µs/env
// (process user+sys per envelope, the indexer's work included: the clock
// stops once the search index covers everything).
func BenchmarkHistoryCPU(b *testing.B) {
	for _, tc := range []struct {
		name    string
		writers int
		per     int
		text    bool
	}{
		{"writers=256", 256, 1, false}, {"batch=1000", 1, 1000, false},
		{"text/writers=256", 256, 1, true}, {"text/batch=1000", 1, 1000, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			envs := historyEnvs(b, b.N, tc.text)
			db := open(b, b.TempDir())
			var next atomic.Int64
			b.ReportAllocs()
			b.ResetTimer()
			c0, t0 := cpuTime(), time.Now()
			var wg sync.WaitGroup
			for range tc.writers {
				wg.Go(func() {
					for {
						i := int(next.Add(int64(tc.per))) - tc.per
						if i >= len(envs) {
							return
						}
						if _, err := db.Append(ctx, envs[i:min(i+tc.per, len(envs))]); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			el := time.Since(t0)
			waitIndexedAll(b, db)
			cpu := cpuTime() - c0
			b.StopTimer()
			st := db.Stats()
			b.ReportMetric(float64(b.N)/el.Seconds(), "envs/s")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/env")
			if st.Syncs > 0 {
				b.ReportMetric(float64(st.Appends)/float64(st.Syncs), "envs/sync")
			}
		})
	}
}

// catchUpStore is the store size of BenchmarkCatchUpReads, the catch-up
// target's.
const catchUpStore = 100000

// BenchmarkCatchUpReads measures the serving side of catch-up on a store of
// 100000 envelopes (16 authors, one channel): HighWater, then every author's
// envelopes through Since in pages of 1000, as mesh's sync server reads
// them; and the same envelopes through After in pages of 1000. It reports
// CPU per envelope read. Run it with -benchtime 1x (one pass each).
func BenchmarkCatchUpReads(b *testing.B) {
	envs := historyEnvs(b, catchUpStore)
	db := open(b, b.TempDir())
	for i := 0; i < len(envs); i += 4096 {
		if _, err := db.Append(ctx, envs[i:min(i+4096, len(envs))]); err != nil {
			b.Fatal(err)
		}
	}
	channel := envs[0].Channel
	b.Run("since", func(b *testing.B) {
		c0 := cpuTime()
		n := 0
		for range b.N {
			hw, err := db.HighWater(ctx, channel)
			if err != nil {
				b.Fatal(err)
			}
			for a, top := range hw {
				for after := uint64(0); after < top; {
					page, err := db.Since(ctx, channel, a, after, 1000)
					if err != nil || len(page) == 0 {
						b.Fatal(len(page), err)
					}
					n += len(page)
					after = page[len(page)-1].Seq
				}
			}
		}
		b.ReportMetric(float64((cpuTime()-c0).Nanoseconds())/1e3/float64(n), "cpu-µs/env")
	})
	b.Run("after", func(b *testing.B) {
		c0 := cpuTime()
		n := 0
		for range b.N {
			for cur := ""; ; {
				page, curs, err := db.After(ctx, channel, cur, 1000)
				if err != nil {
					b.Fatal(err)
				}
				if len(page) == 0 {
					break
				}
				n += len(page)
				cur = curs[len(curs)-1]
			}
		}
		b.ReportMetric(float64((cpuTime()-c0).Nanoseconds())/1e3/float64(n), "cpu-µs/env")
	})
}
