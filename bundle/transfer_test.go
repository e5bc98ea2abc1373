package bundle

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
)

func TestFetchResumesAfterReset(t *testing.T) {
	leakCheck(t)
	sh, rh := pair(t)
	sendStore, recvStore := t.TempDir(), t.TempDir()
	data := randomBytes(3<<20+12345, 1)
	offer := storeFile(t, sendStore, data)
	const cut = 1<<20 + 777
	var omu sync.Mutex
	var offsets []int64
	srv := newServer(t, sh, sendStore, withResetAfter(cut), withOnServe(func(_ string, off int64) {
		omu.Lock()
		offsets = append(offsets, off)
		omu.Unlock()
	}))
	srv.Offer(offer.Hash, rh.ID())

	var mu sync.Mutex
	var seen []int64
	path, err := Fetch(ctxT(t), rh, sh.ID(), offer, recvStore, func(done, total int64) {
		mu.Lock()
		seen = append(seen, done)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("resumed transfer is not byte-identical")
	}
	// Progress never goes backwards and ends at the size.
	for i, d := range seen {
		if i > 0 && d < seen[i-1] {
			t.Fatalf("progress went back: %v", seen)
		}
	}
	if last := seen[len(seen)-1]; last != int64(len(data)) {
		t.Errorf("last progress %d, want %d", last, len(data))
	}
	// Two requests: from 0, then a resume from where the reset left the
	// receiver (at most the cut, on a dioAlign boundary).
	omu.Lock()
	defer omu.Unlock()
	if len(offsets) != 2 || offsets[0] != 0 || offsets[1] <= 0 || offsets[1] > cut || offsets[1]%dioAlign != 0 {
		t.Errorf("requests at offsets %v, want [0, (0..%d]] with the second a multiple of %d", offsets, cut, dioAlign)
	}
	if _, err := os.Stat(filepath.Join(recvStore, "incoming", offer.Hash+".part")); !os.IsNotExist(err) {
		t.Errorf(".part left behind: %v", err)
	}
}

// TestFetchResumesPart: a .part left by an earlier process is re-hashed and
// continued, and a .part with wrong bytes is caught by the final hash check.
func TestFetchResumesPart(t *testing.T) {
	leakCheck(t)
	sh, rh := pair(t)
	sendStore := t.TempDir()
	data := randomBytes(1<<20+3, 2)
	offer := storeFile(t, sendStore, data)
	srv := newServer(t, sh, sendStore)
	srv.Offer(offer.Hash, rh.ID())

	recvStore := t.TempDir()
	part := filepath.Join(recvStore, "incoming", offer.Hash+".part")
	writeFile(t, part, data[:400000])
	var first int64 = -1
	path, err := Fetch(ctxT(t), rh, sh.ID(), offer, recvStore, func(done, total int64) {
		if first < 0 {
			first = done
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	// The .part is cut back to whole dioAlign blocks, so that the rest can
	// be written with direct I/O.
	if want := int64(400000 &^ (dioAlign - 1)); first != want {
		t.Errorf("first progress %d, want resume at %d", first, want)
	}
	if fileHash(t, path) != offer.Hash {
		t.Fatal("resumed file differs")
	}
	// Already there: returns at once.
	if p, err := Fetch(ctxT(t), rh, sh.ID(), offer, recvStore, nil); err != nil || p != path {
		t.Errorf("second Fetch = %q, %v", p, err)
	}

	recvStore = t.TempDir()
	part = filepath.Join(recvStore, "incoming", offer.Hash+".part")
	bad := bytes.Clone(data[:400000])
	bad[10] ^= 1
	writeFile(t, part, bad)
	if _, err := Fetch(ctxT(t), rh, sh.ID(), offer, recvStore, nil); !errors.Is(err, ErrHashMismatch) {
		t.Fatalf("Fetch over a corrupt .part = %v, want ErrHashMismatch", err)
	}
	if _, err := os.Stat(part); !os.IsNotExist(err) {
		t.Errorf("corrupt .part kept: %v", err)
	}
	if _, err := os.Stat(filepath.Join(recvStore, offer.Hash)); !os.IsNotExist(err) {
		t.Errorf("corrupt bundle stored: %v", err)
	}
	// The next attempt starts clean and succeeds.
	if _, err := Fetch(ctxT(t), rh, sh.ID(), offer, recvStore, nil); err != nil {
		t.Fatalf("Fetch after discarding the corrupt .part: %v", err)
	}
}

func TestFetchRefused(t *testing.T) {
	leakCheck(t)
	sh, rh := pair(t)
	other := newHost(t)
	sendStore := t.TempDir()
	offer := storeFile(t, sendStore, randomBytes(5000, 3))
	srv := newServer(t, sh, sendStore)

	// Not offered to anybody, then to somebody else.
	if _, err := Fetch(ctxT(t), rh, sh.ID(), offer, t.TempDir(), nil); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Fetch of unoffered bundle = %v, want ErrUnavailable", err)
	}
	srv.Offer(offer.Hash, other.ID())
	if _, err := Fetch(ctxT(t), rh, sh.ID(), offer, t.TempDir(), nil); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Fetch of bundle offered to another peer = %v, want ErrUnavailable", err)
	}
	srv.Offer(offer.Hash, rh.ID())
	srv.Revoke(offer.Hash, rh.ID())
	if _, err := Fetch(ctxT(t), rh, sh.ID(), offer, t.TempDir(), nil); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Fetch after Revoke = %v, want ErrUnavailable", err)
	}

	// The sender's bytes do not match the offer's hash.
	liar := *offer
	liar.Hash = sha256hex([]byte("something else"))
	if err := os.Rename(filepath.Join(sendStore, offer.Hash), filepath.Join(sendStore, liar.Hash)); err != nil {
		t.Fatal(err)
	}
	srv.Offer(liar.Hash, rh.ID())
	recv := t.TempDir()
	if _, err := Fetch(ctxT(t), rh, sh.ID(), &liar, recv, nil); !errors.Is(err, ErrHashMismatch) {
		t.Errorf("Fetch of lying bundle = %v, want ErrHashMismatch", err)
	}
	if _, err := os.Stat(filepath.Join(recv, liar.Hash)); !os.IsNotExist(err) {
		t.Errorf("lying bundle stored: %v", err)
	}
	// Wrong size in the offer.
	short := liar
	short.Size--
	if _, err := Fetch(ctxT(t), rh, sh.ID(), &short, t.TempDir(), nil); !errors.Is(err, ErrSizeMismatch) {
		t.Errorf("Fetch with wrong size = %v, want ErrSizeMismatch", err)
	}
}

func TestServerBudget(t *testing.T) {
	leakCheck(t)
	sh, rh := pair(t)
	sendStore := t.TempDir()
	offer := storeFile(t, sendStore, randomBytes(5000, 4))
	srv := newServer(t, sh, sendStore, WithMaxPeerBytes(4999))
	srv.Offer(offer.Hash, rh.ID())
	part, err := os.Create(filepath.Join(t.TempDir(), "part"))
	if err != nil {
		t.Fatal(err)
	}
	defer part.Close()
	var done int64
	err = fetchOnce(ctxT(t), rh, sh.ID(), offer, newPartWriter(part, 0), nil, &done, newRing(recvBuffers), nil)
	if !errors.Is(err, ErrBusy) || !retryable(err) {
		t.Errorf("fetch over budget = %v, want retryable ErrBusy", err)
	}
	if _, err := NewServer(sh, sendStore, nil, WithMaxPerPeer(0)); err == nil {
		t.Error("NewServer(WithMaxPerPeer(0)) = nil error")
	}
}

func TestServerCloseStopsTransfers(t *testing.T) {
	leakCheck(t)
	sh, rh := pair(t)
	sendStore := t.TempDir()
	offer := storeFile(t, sendStore, randomBytes(32<<20, 5))
	srv, err := NewServer(sh, sendStore, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv.Offer(offer.Hash, rh.ID())
	started := make(chan struct{})
	var once sync.Once
	errc := make(chan error, 1)
	go func() {
		_, err := Fetch(ctxT(t), rh, sh.ID(), offer, t.TempDir(), func(done, total int64) {
			if done > 0 {
				once.Do(func() { close(started) })
			}
		})
		errc <- err
	}()
	<-started
	srv.Close()
	srv.Close()
	// The transfer may finish before Close on a fast machine; otherwise the
	// receiver learns that the bundle is no longer served.
	if err := <-errc; err != nil && !errors.Is(err, ErrUnavailable) {
		t.Errorf("Fetch after sender Close = %v, want nil or ErrUnavailable", err)
	}
}

// TestLargeTransfer moves a 200 MiB git bundle and checks that it arrives
// intact while the heap stays bounded.
func TestLargeTransfer(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 200 MiB")
	}
	needGit(t)
	leakCheck(t)
	// Generous: on a loaded 2-core machine git alone can take a minute here.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	src := filepath.Join(t.TempDir(), "big")
	initRepo(t, src)
	// Random data does not compress: store it, so git spends no time trying.
	git(t, src, "config", "core.compression", "0")
	git(t, src, "config", "pack.compression", "0")
	phase := time.Now()
	f, err := os.Create(filepath.Join(src, "blob.bin"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	r := rand.NewChaCha8([32]byte{9})
	for range 200 {
		r.Read(chunk)
		if _, err := f.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	git(t, src, "add", "blob.bin")
	git(t, src, "commit", "-q", "-m", "big")
	t.Logf("repo built in %v", time.Since(phase))
	phase = time.Now()
	sendStore, recvStore := t.TempDir(), t.TempDir()
	offer, _, err := Create(ctx, src, nil, sendStore)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("bundle created in %v", time.Since(phase))
	if offer.Size < 200<<20 {
		t.Fatalf("bundle is %d bytes, want >= 200 MiB", offer.Size)
	}

	sh, rh := pair(t)
	srv := newServer(t, sh, sendStore)
	srv.Offer(offer.Hash, rh.ID())

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > peak.Load() {
					peak.Store(ms.HeapInuse)
				}
			}
		}
	}()
	start := time.Now()
	path, err := Fetch(ctx, rh, sh.ID(), offer, recvStore, nil)
	elapsed := time.Since(start)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if fileHash(t, path) != offer.Hash {
		t.Fatal("200 MiB bundle arrived corrupted")
	}
	grew := int64(peak.Load()) - int64(base)
	t.Logf("moved %d bytes in %v (%.0f MB/s); heap in use grew by at most %d KiB", offer.Size, elapsed, float64(offer.Size)/elapsed.Seconds()/1e6, grew>>10)
	if grew > 64<<20 {
		t.Errorf("heap in use grew by %d MiB during the transfer, limit 64 MiB", grew>>20)
	}
	dst := filepath.Join(t.TempDir(), "dst")
	initRepo(t, dst)
	phase = time.Now()
	if err := Import(ctx, dst, path, offer, sh.ID().String()); err != nil {
		t.Fatal(err)
	}
	t.Logf("imported in %v", time.Since(phase))
	if err := Apply(ctx, dst, offer, sh.ID().String(), "", "big"); err != nil {
		t.Fatal(err)
	}
	if got, want := git(t, dst, "rev-parse", "big^{tree}"), git(t, src, "rev-parse", "HEAD^{tree}"); got != want {
		t.Errorf("tree %s, want %s", got, want)
	}
}

func BenchmarkTransfer(b *testing.B) {
	sh, rh := pair(b)
	sendStore := b.TempDir()
	const size = 64 << 20
	offer := storeFile(b, sendStore, randomBytes(size, 6))
	srv := newServer(b, sh, sendStore)
	srv.Offer(offer.Hash, rh.ID())
	for _, direct := range []bool{true, false} {
		b.Run(fmt.Sprintf("direct=%v", direct), func(b *testing.B) {
			defer func(was bool) { directIO = was }(directIO)
			directIO = direct
			b.SetBytes(size)
			var cpu time.Duration
			for range b.N {
				recv := b.TempDir()
				c0 := processCPU()
				if _, err := Fetch(ctxT(b), rh, sh.ID(), offer, recv, nil); err != nil {
					b.Fatal(err)
				}
				cpu += processCPU() - c0
				b.StopTimer()
				os.RemoveAll(recv)
				b.StartTimer()
			}
			reportCPU(b, cpu, size)
		})
	}
}

// BenchmarkRawStream is the ceiling for BenchmarkTransfer: the same bytes
// over a bare libp2p stream between the same kind of hosts, from memory to
// io.Discard, with no files and no hashing.
func BenchmarkRawStream(b *testing.B) {
	sh, rh := pair(b)
	const size = 64 << 20
	const proto = "/confab/bench-raw/1"
	chunk := randomBytes(ChunkSize, 7)
	sh.SetStreamHandler(proto, func(st network.Stream) {
		defer st.Close()
		for sent := 0; sent < size; sent += len(chunk) {
			if _, err := st.Write(chunk); err != nil {
				st.Reset()
				return
			}
		}
	})
	b.SetBytes(size)
	b.ResetTimer()
	c0 := processCPU()
	defer func() { reportCPU(b, processCPU()-c0, size) }()
	for range b.N {
		st, err := rh.NewStream(ctxT(b), sh.ID(), proto)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.CopyBuffer(io.Discard, st, make([]byte, ChunkSize))
		st.Close()
		if err != nil || n != size {
			b.Fatalf("read %d bytes: %v", n, err)
		}
	}
}

// TestFetchCanceledThenResumed: a Fetch canceled mid-way keeps its .part, and
// the next Fetch continues from it over a new stream.
func TestFetchCanceledThenResumed(t *testing.T) {
	leakCheck(t)
	sh, rh := pair(t)
	sendStore, recvStore := t.TempDir(), t.TempDir()
	data := randomBytes(16<<20, 8)
	offer := storeFile(t, sendStore, data)
	var omu sync.Mutex
	var offsets []int64
	srv := newServer(t, sh, sendStore, withOnServe(func(_ string, off int64) {
		omu.Lock()
		offsets = append(offsets, off)
		omu.Unlock()
	}))
	srv.Offer(offer.Hash, rh.ID())

	ctx, cancel := context.WithCancel(ctxT(t))
	_, err := Fetch(ctx, rh, sh.ID(), offer, recvStore, func(done, total int64) {
		if done >= 1<<20 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled Fetch = %v, want context.Canceled", err)
	}
	fi, err := os.Stat(filepath.Join(recvStore, "incoming", offer.Hash+".part"))
	if err != nil || fi.Size() < 1<<20 || fi.Size() >= int64(len(data)) {
		t.Fatalf(".part after cancel: %v, %v", fi, err)
	}
	path, err := Fetch(ctxT(t), rh, sh.ID(), offer, recvStore, nil)
	if err != nil {
		t.Fatal(err)
	}
	if fileHash(t, path) != offer.Hash {
		t.Fatal("resumed file differs")
	}
	omu.Lock()
	defer omu.Unlock()
	if len(offsets) != 2 || offsets[1] != fi.Size() {
		t.Errorf("requests at %v, want [0 %d]", offsets, fi.Size())
	}
}

// TestFetchWriteError: a failing file write ends the transfer with a
// permanent error, stops the stream and leaves no goroutine behind, though
// the reader and the hasher are chunks ahead of the writer.
func TestFetchWriteError(t *testing.T) {
	leakCheck(t)
	sh, rh := pair(t)
	sendStore := t.TempDir()
	offer := storeFile(t, sendStore, randomBytes(12<<20, 12))
	srv := newServer(t, sh, sendStore)
	srv.Offer(offer.Hash, rh.ID())
	path := filepath.Join(t.TempDir(), "part")
	writeFile(t, path, nil)
	ro, err := os.Open(path) // read-only: every write fails
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	var done int64
	err = fetchOnce(ctxT(t), rh, sh.ID(), offer, newPartWriter(ro, 0), sha256.New(), &done, newRing(recvBuffers), nil)
	if err == nil || retryable(err) {
		t.Fatalf("fetch into a read-only file = %v, want a permanent error", err)
	}
	if done != 0 {
		t.Errorf("done = %d after failed writes, want 0", done)
	}
}

// TestServeTruncatedFile: a stored bundle cut short while it is being sent
// (by someone else: the store never does it) ends that transfer with an
// error on both sides; with the file mapped, the fault on the missing pages
// is an error too, not a crash of the process.
func TestServeTruncatedFile(t *testing.T) {
	for _, mapped := range []bool{true, false} {
		t.Run(fmt.Sprintf("mapped=%v", mapped), func(t *testing.T) {
			defer func(was bool) { mapFiles = was }(mapFiles)
			mapFiles = mapped
			leakCheck(t)
			sh, rh := pair(t)
			sendStore := t.TempDir()
			offer := storeFile(t, sendStore, randomBytes(64<<20, 13))
			var logs syncBuffer
			srv, err := NewServer(sh, sendStore, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			srv.Offer(offer.Hash, rh.ID())
			var once sync.Once
			_, err = Fetch(ctxT(t), rh, sh.ID(), offer, t.TempDir(), func(done, total int64) {
				if done > 0 {
					once.Do(func() {
						if err := os.Truncate(filepath.Join(sendStore, offer.Hash), 4096); err != nil {
							t.Error(err)
						}
					})
				}
			})
			if err == nil {
				t.Fatal("Fetch of a bundle truncated while it was sent succeeded")
			}
			srv.Close()
			if want := "changed while it was sent"; mapped && !strings.Contains(logs.String(), want) {
				t.Errorf("server log lacks %q:\n%s", want, logs.String())
			}
		})
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writers (a logger).
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
