package store

import (
	"encoding/binary"
	"strconv"
	"sync/atomic"
	"testing"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/confabhq/confab/mesh"
)

// benchEnvs makes unique envelopes fast: one real signature per author, then
// new content and a recomputed id per envelope. The store checks ids, not
// signatures (its callers verify), so the reused signature does not matter
// here and signing does not dominate the measurement.
type benchEnvs struct {
	tmpl *mesh.Envelope
	seq  uint64
}

func newBenchEnvs(b *testing.B, channel string) *benchEnvs {
	return &benchEnvs{tmpl: signed(b, newKey(b), channel, 1, "template")}
}

func (g *benchEnvs) next() *mesh.Envelope {
	g.seq++
	e := *g.tmpl
	e.Seq = g.seq
	e.Content = "benchmark message number " + strconv.FormatUint(g.seq, 10) + " with some ordinary chat-sized text in it"
	e.ID = e.ComputeID()
	return &e
}

// BenchmarkAppendSynced measures synced appends of one envelope per call
// from many concurrent callers (group commit). envs/s is the figure to read.
func BenchmarkAppendSynced(b *testing.B) {
	for _, par := range []int{1, 16, 64, 512} {
		b.Run("callers="+strconv.Itoa(par*2)+"x", func(b *testing.B) {
			db := open(b, b.TempDir())
			var ch atomic.Int64
			b.SetParallelism(par)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				g := newBenchEnvs(b, "#bench"+strconv.FormatInt(ch.Add(1)%4, 10))
				for pb.Next() {
					if _, err := db.Append(ctx, []*mesh.Envelope{g.next()}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			st := db.Stats()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "envs/s")
			if st.Batches > 0 {
				b.ReportMetric(float64(st.Appends)/float64(st.Batches), "envs/batch")
			}
		})
	}
}

// BenchmarkAppendOneTxnPerMsg is the baseline: one synced badger
// transaction per message, written directly (same keys as the store, no
// index reads), from one caller and from many. Badger itself coalesces
// concurrent commits into one sync, so the parallel case is badger's own
// group commit.
func BenchmarkAppendOneTxnPerMsg(b *testing.B) {
	for _, par := range []int{0, 64} {
		name := "serial"
		if par > 0 {
			name = "callers=" + strconv.Itoa(par*2) + "x"
		}
		b.Run(name, func(b *testing.B) {
			opts := badger.DefaultOptions(b.TempDir()).WithSyncWrites(true).WithLogger(nil).WithMetricsEnabled(false)
			bdb, err := badger.Open(opts)
			if err != nil {
				b.Fatal(err)
			}
			defer bdb.Close()
			var off atomic.Uint64
			write := func(e *mesh.Envelope) error {
				id, _ := parseID(e.ID)
				o := off.Add(1)
				return bdb.Update(func(txn *badger.Txn) error {
					v := binary.BigEndian.AppendUint64([]byte{msgVersion}, o)
					if err := txn.Set(msgKey(id), append(v, e.Marshal()...)); err != nil {
						return err
					}
					if err := txn.Set(logKey(e.Channel, o), id); err != nil {
						return err
					}
					if err := txn.Set(authorKey(e.Channel, e.From, e.Seq), id); err != nil {
						return err
					}
					return txn.Set(highKey(e.Channel, e.From), binary.BigEndian.AppendUint64(nil, e.Seq))
				})
			}
			b.ReportAllocs()
			b.ResetTimer()
			if par == 0 {
				g := newBenchEnvs(b, "#bench")
				for range b.N {
					if err := write(g.next()); err != nil {
						b.Fatal(err)
					}
				}
			} else {
				b.SetParallelism(par)
				b.RunParallel(func(pb *testing.PB) {
					g := newBenchEnvs(b, "#bench")
					for pb.Next() {
						if err := write(g.next()); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "envs/s")
		})
	}
}

// BenchmarkAppendInMemory is the CPU ceiling of the append path (validation,
// group commit, badger's memtable) with no disk: compare it with
// BenchmarkAppendSynced to see how much of that figure the fsyncs cost.
func BenchmarkAppendInMemory(b *testing.B) {
	cfg := DefaultConfig()
	cfg.InMemory = true
	cfg.Logger = quietLogger()
	db, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	var ch atomic.Int64
	b.SetParallelism(512)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		g := newBenchEnvs(b, "#bench"+strconv.FormatInt(ch.Add(1)%4, 10))
		for pb.Next() {
			if _, err := db.Append(ctx, []*mesh.Envelope{g.next()}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "envs/s")
}
