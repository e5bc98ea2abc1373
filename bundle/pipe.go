package bundle

import "sync"

// Pipelining: each side of a transfer splits its work between goroutines
// joined by a small ring of ChunkSize buffers, so that reading the source
// (the file on the sender, the stream on the receiver) overlaps with the
// rest (the sender writing the stream; the receiver hashing on one goroutine
// and writing the file on another). Memory stays bounded by the ring.
// mapFiles lets the sender send from a mapping of the file (sendMapped)
// instead of reading it through its ring; tests turn it off to cover both.
var mapFiles = true

const (
	// sendBuffers is the sender's ring (used where the file cannot be mapped): one being filled from the file, one
	// being written to the stream, one spare so neither waits on the other.
	sendBuffers = 3
	// recvBuffers is the receiver's ring, shared by three stages (stream
	// reader, hasher, file writer): enough that a disk write that stalls
	// for a few milliseconds does not stop the stream.
	recvBuffers = 8
	// writeBatch is how many received chunks the receiver writes to the
	// file in one call: half the ring, so that the reader and the hasher
	// keep the other half while a write waits for the disk.
	writeBatch = recvBuffers / 2
)

// chunk is one filled buffer, or the error that ended the producer (with
// whatever bytes it read before the error).
type chunk struct {
	b   []byte
	err error
}

// chunkPipe runs a producer goroutine that fills buffers from a ring and
// hands them, in order, to one consumer goroutine calling next. Whoever
// holds a buffer last returns it with put, and the goroutine that made the
// pipe must call close before returning; close waits for the producer.
type chunkPipe struct {
	free chan []byte
	full chan chunk
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

// newChunkPipe starts fill on its own goroutine. fill is called with an
// empty buffer of ChunkSize bytes and returns how many it filled; after it
// returns an error (io.EOF included) the producer stops. bufs are the ring's
// buffers (each ChunkSize long), owned by the pipe until close returns.
func newChunkPipe(bufs [][]byte, fill func(buf []byte) (int, error)) *chunkPipe {
	p := &chunkPipe{
		free: make(chan []byte, len(bufs)),
		full: make(chan chunk, len(bufs)),
		stop: make(chan struct{}),
	}
	for _, b := range bufs {
		p.free <- b
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			var buf []byte
			select {
			case buf = <-p.free:
			case <-p.stop:
				return
			}
			n, err := fill(buf)
			// full has room for every buffer, so this never blocks.
			p.full <- chunk{b: buf[:n], err: err}
			if err != nil {
				return
			}
		}
	}()
	return p
}

// next returns the next chunk. After a chunk with an error the producer
// has stopped and next must not be called again.
func (p *chunkPipe) next() chunk { return <-p.full }

// put returns a buffer to the ring.
func (p *chunkPipe) put(b []byte) { p.free <- b[:cap(b)] }

// close stops the producer once its current fill returns and waits for it.
// The caller must first make a blocked fill return (reset the stream).
func (p *chunkPipe) close() {
	p.once.Do(func() { close(p.stop) })
	p.wg.Wait()
}

// newRing allocates n buffers of ChunkSize bytes.
func newRing(n int) [][]byte {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, ChunkSize)
	}
	return bufs
}
