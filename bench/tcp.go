package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

func init() {
	Register(Scenario{
		Name:     "tcp",
		Compare:  CompareHandoff,
		Baseline: true,
		Method: "raw loopback TCP between two goroutines: throughput moving the bulk size in 128 KiB writes until the " +
			"receiver has read every byte (1 MiB reads) and acknowledged with one byte; CPU is the process's user+system time over the transfer; round trip of a 200-byte ping-pong on one connection (TCP_NODELAY, Go's default).",
		Run: runTCP,
	})
}

// bulkBytes is the handoff size: 256 MiB full, 8 MiB tiny.
func bulkBytes(size Size) int64 { return pick[int64](size, 8<<20, 256<<20) }

func runTCP(ctx context.Context, size Size) (Result, error) {
	var res Result
	c0 := cpuTime()
	d, err := tcpBulk(ctx, bulkBytes(size))
	if err != nil {
		return res, err
	}
	res.Add(fmt.Sprintf("throughput, %d MiB", bulkBytes(size)>>20), "GB/s", float64(bulkBytes(size))/d.Seconds()/1e9, Higher)
	addCPUPerGiB(&res, cpuTime()-c0, bulkBytes(size))
	p50, p99, err := tcpPingPong(ctx, pick(size, 2000, 20000))
	if err != nil {
		return res, err
	}
	res.Add("round trip, 200 B, p50", "µs", p50, Lower)
	res.Add("round trip, 200 B, p99", "µs", p99, Lower)
	return res, nil
}

// loopbackPair returns both ends of one TCP connection on 127.0.0.1.
func loopbackPair(ctx context.Context) (client, server net.Conn, err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, fmt.Errorf("bench: tcp listen: %w", err)
	}
	defer ln.Close()
	type acc struct {
		c   net.Conn
		err error
	}
	ch := make(chan acc, 1)
	go func() { c, err := ln.Accept(); ch <- acc{c, err} }()
	var dialer net.Dialer
	client, err = dialer.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		ln.Close()
		<-ch
		return nil, nil, fmt.Errorf("bench: tcp dial: %w", err)
	}
	a := <-ch
	if a.err != nil {
		client.Close()
		return nil, nil, fmt.Errorf("bench: tcp accept: %w", a.err)
	}
	return client, a.c, nil
}

// closeOnDone closes c when ctx ends, so blocked I/O returns; call the
// returned func to stop watching.
func closeOnDone(ctx context.Context, c io.Closer) (stop func()) {
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		select {
		case <-ctx.Done():
			c.Close()
		case <-done:
		}
	}()
	return func() { close(done); <-exited }
}

func tcpBulk(ctx context.Context, total int64) (time.Duration, error) {
	c, s, err := loopbackPair(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	defer s.Close()
	defer closeOnDone(ctx, c)()
	defer closeOnDone(ctx, s)()
	errc := make(chan error, 1)
	go func() { errc <- drainAndAck(s, total) }()
	d, err := sendBulk(c, c, total)
	if rerr := <-errc; err == nil && rerr != nil {
		err = rerr
	}
	if err != nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return d, err
}

// addCPUPerGiB adds the CPU time (user + system, both ends: they share this
// process) spent per GiB moved. On a shared machine it is steadier than the
// throughput, and it says where a slower path spends its time.
func addCPUPerGiB(res *Result, cpu time.Duration, n int64) {
	res.Add("CPU per GiB moved, both ends", "s", cpu.Seconds()/(float64(n)/(1<<30)), Lower)
}

// sendBulk writes total bytes to w in 128 KiB chunks and waits for the
// receiver's one-byte acknowledgement on r; the time covers both.
func sendBulk(w io.Writer, r io.Reader, total int64) (time.Duration, error) {
	buf := make([]byte, 128<<10)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	start := time.Now()
	for left := total; left > 0; {
		n := min(left, int64(len(buf)))
		if _, err := w.Write(buf[:n]); err != nil {
			return 0, fmt.Errorf("bench: bulk write: %w", err)
		}
		left -= n
	}
	var ack [1]byte
	if _, err := io.ReadFull(r, ack[:]); err != nil {
		return 0, fmt.Errorf("bench: bulk ack: %w", err)
	}
	return time.Since(start), nil
}

// drainAndAck reads exactly total bytes from rw into one 1 MiB buffer (the
// read size of confab's bundle receiver; io.Discard would read 8 KiB at a
// time) and writes one byte back.
func drainAndAck(rw io.ReadWriter, total int64) error {
	buf := make([]byte, 1<<20)
	var n int64
	for n < total {
		m, err := rw.Read(buf[:min(int64(len(buf)), total-n)])
		n += int64(m)
		if err != nil && n < total {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("bench: bulk read after %d bytes: %w", n, err)
		}
	}
	if _, err := rw.Write([]byte{1}); err != nil {
		return fmt.Errorf("bench: bulk ack: %w", err)
	}
	return nil
}

func tcpPingPong(ctx context.Context, iters int) (p50, p99 float64, err error) {
	c, s, err := loopbackPair(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	defer s.Close()
	defer closeOnDone(ctx, c)()
	defer closeOnDone(ctx, s)()
	echoErr := make(chan error, 1)
	go func() {
		buf := make([]byte, 200)
		for {
			if _, err := io.ReadFull(s, buf); err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				echoErr <- err
				return
			}
			if _, err := s.Write(buf); err != nil {
				echoErr <- err
				return
			}
		}
	}()
	msg := make([]byte, 200)
	got := make([]byte, 200)
	lat := make([]float64, 0, iters)
	for i := 0; i < iters; i++ {
		t0 := time.Now()
		if _, err = c.Write(msg); err != nil {
			break
		}
		if _, err = io.ReadFull(c, got); err != nil {
			break
		}
		lat = append(lat, us(time.Since(t0)))
	}
	c.Close()
	if eerr := <-echoErr; err == nil && eerr != nil && ctx.Err() == nil {
		err = eerr
	}
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return 0, 0, fmt.Errorf("bench: tcp ping-pong: %w", err)
	}
	return percentile(lat, 50), percentile(lat, 99), nil
}
