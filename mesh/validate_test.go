package mesh

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
)

// sigBatcher gives every caller Verify's verdict, however the callers were
// grouped into batches, with one verifier (all others queue) or several.
func TestSigBatcher(t *testing.T) {
	keys := []crypto.PrivKey{newKey(t), newKey(t), newKey(t)}
	envs := make([]*Envelope, 300)
	for i := range envs {
		e := signed(t, keys[i%3], func(e *Envelope) { e.Seq = uint64(i + 1); e.Content = fmt.Sprint(i) })
		switch i % 10 {
		case 3: // forged content, id recomputed
			c := *e
			c.Content += "!"
			sum := sha256.Sum256(c.SigningBytes())
			c.ID = hex.EncodeToString(sum[:])
			e = &c
		case 7: // malformed
			c := *e
			c.Kind = "X"
			e = &c
		}
		envs[i] = e
	}
	for _, max := range []int{1, 2, 8} {
		t.Run(fmt.Sprint("max=", max), func(t *testing.T) {
			b := newSigBatcher(max)
			got := make([]error, len(envs))
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i, e := range envs {
				wg.Go(func() {
					<-start
					got[i] = b.verify(e)
				})
			}
			close(start)
			wg.Wait()
			for i, e := range envs {
				want := e.Verify()
				if (got[i] == nil) != (want == nil) || (want != nil && got[i].Error() != want.Error()) {
					t.Errorf("envelope %d: got %v, want %v", i, got[i], want)
				}
			}
			if b.running != 0 || len(b.queue) != 0 {
				t.Errorf("after all callers returned: running %d, queued %d; want 0, 0", b.running, len(b.queue))
			}
		})
	}
}

// A verifier yields for others to join it only while validations overlap:
// within yieldWindow of a caller finding every verifier busy.
func TestSigBatcherOverlapping(t *testing.T) {
	now := time.Unix(1_760_000_000, 0)
	tests := []struct {
		name string
		busy time.Time // zero: never
		want bool
	}{
		{name: "never busy", want: false},
		{name: "busy just now", busy: now, want: true},
		{name: "busy within the window", busy: now.Add(-yieldWindow / 2), want: true},
		{name: "busy before the window", busy: now.Add(-yieldWindow), want: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newSigBatcher(2)
			if !tc.busy.IsZero() {
				b.busy.Store(tc.busy.UnixNano())
			}
			if got := b.overlapping(now); got != tc.want {
				t.Errorf("overlapping = %v, want %v", got, tc.want)
			}
		})
	}
}

// BenchmarkSigBatcher: CPU per envelope when `callers` goroutines validate
// at once (gossipsub's goroutine per message), each envelope checked alone
// (Verify) or through a sigBatcher of GOMAXPROCS verifiers.
func BenchmarkSigBatcher(b *testing.B) {
	keys := []crypto.PrivKey{newKey(b), newKey(b)}
	envs := make([]*Envelope, 256)
	for i := range envs {
		envs[i] = signed(b, keys[i%2], func(e *Envelope) { e.Seq = uint64(i + 1) })
	}
	for _, callers := range []int{1, 2, 4, 16, 64} {
		for _, mode := range []string{"single", "batcher"} {
			b.Run(fmt.Sprintf("callers=%d/%s", callers, mode), func(b *testing.B) {
				sb := newSigBatcher(runtime.GOMAXPROCS(0))
				var next atomic.Int64
				var wg sync.WaitGroup
				cpu0 := cpuTime()
				b.ResetTimer()
				for range callers {
					wg.Go(func() {
						for {
							i := next.Add(1)
							if i > int64(b.N) {
								return
							}
							e := envs[i%int64(len(envs))]
							var err error
							if mode == "single" {
								err = e.Verify()
							} else {
								err = sb.verify(e)
							}
							if err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				b.StopTimer()
				b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N)/1e3, "cpu-µs/env")
			})
		}
	}
}
