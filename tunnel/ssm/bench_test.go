package ssm_test

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rdsproxy/rdsproxy/internal/sandbox/ssmendpoint"
	"github.com/rdsproxy/rdsproxy/tunnel/ssm"
)

// Modes of the benchmark destination: the client's first 9 bytes are the
// mode and a size.
const (
	modeUpload   = 'u' // read size bytes, then answer one byte
	modeDownload = 'd' // write size bytes
	modeBoth     = 'b' // echo size bytes
)

// startSinkSource serves the benchmark modes on 127.0.0.1:0.
func startSinkSource(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); defer c.Close(); serveBench(c) }()
		}
	}()
	tb.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().(*net.TCPAddr).Port
}

func serveBench(c net.Conn) {
	var hdr [9]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return
	}
	n := int64(binary.BigEndian.Uint64(hdr[1:]))
	switch hdr[0] {
	case modeUpload:
		if _, err := io.CopyN(io.Discard, c, n); err == nil {
			c.Write([]byte{1})
		}
	case modeDownload:
		io.CopyN(c, zeroReader{}, n)
	case modeBoth:
		io.CopyN(c, c, n)
	}
	io.Copy(io.Discard, c) // until the client closes
}

type zeroReader struct{}

func (zeroReader) Read(b []byte) (int, error) { clear(b); return len(b), nil }

// benchStream runs one benchmark stream of n bytes in the given mode.
func benchStream(c net.Conn, mode byte, n int64) error {
	var hdr [9]byte
	hdr[0] = mode
	binary.BigEndian.PutUint64(hdr[1:], uint64(n))
	if _, err := c.Write(hdr[:]); err != nil {
		return err
	}
	switch mode {
	case modeUpload:
		if _, err := io.CopyN(c, zeroReader{}, n); err != nil {
			return err
		}
		_, err := io.ReadFull(c, hdr[:1])
		return err
	case modeDownload:
		_, err := io.CopyN(io.Discard, c, n)
		return err
	}
	errc := make(chan error, 1)
	go func() { _, err := io.CopyN(c, zeroReader{}, n); errc <- err }()
	_, err := io.CopyN(io.Discard, c, n)
	return errorsJoin(err, <-errc)
}

func errorsJoin(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkThroughput measures client + endpoint (both in this process)
// with pacing off: MB/s is payload bytes per direction moved per second;
// cpu-ms/MB is process CPU per MB of payload moved (both directions summed),
// covering client, agent double and destination together.
func BenchmarkThroughput(b *testing.B) {
	const perStream = 8 << 20
	for _, streams := range []int{1, 16} {
		for _, mode := range []byte{modeUpload, modeDownload, modeBoth} {
			b.Run(fmt.Sprintf("streams=%d/%c", streams, mode), func(b *testing.B) {
				port := startSinkSource(b)
				e := startEndpoint(b, ssmendpoint.Config{Unpaced: true})
				tun := newTunnel(b, e, ssm.Config{Port: port})
				per := int64(perStream / streams)
				dirs := int64(1)
				if mode == modeBoth {
					dirs = 2
				}
				b.SetBytes(per * int64(streams))
				b.ResetTimer()
				cpu0, t0 := cpuTime(), time.Now()
				for range b.N {
					runStreams(b, tun, streams, mode, per)
				}
				mb := float64(per*int64(streams)*int64(b.N)) / 1e6
				b.ReportMetric(float64((cpuTime()-cpu0).Milliseconds())/(mb*float64(dirs)), "cpu-ms/MB")
				b.ReportMetric(mb/time.Since(t0).Seconds(), "MB/s/dir")
			})
		}
	}
}

// BenchmarkPacedSessions: with the agent's 1 KiB + 1 ms pacing on, one
// session is capped below ~1 MB/s per direction and N sessions scale.
func BenchmarkPacedSessions(b *testing.B) {
	const total = 4 << 20
	for _, sessions := range []int{1, 4} {
		b.Run(fmt.Sprintf("sessions=%d", sessions), func(b *testing.B) {
			port := startSinkSource(b)
			e := startEndpoint(b, ssmendpoint.Config{Unpaced: true})
			tun := newTunnel(b, e, ssm.Config{Port: port, Sessions: sessions})
			streams := 4 * sessions
			per := int64(total / streams)
			b.SetBytes(total)
			b.ResetTimer()
			t0 := time.Now()
			for range b.N {
				runStreams(b, tun, streams, modeDownload, per)
			}
			b.ReportMetric(float64(total*b.N)/1e6/time.Since(t0).Seconds(), "MB/s/dir")
		})
	}
}

// runStreams runs n concurrent streams over tun, each moving per bytes.
func runStreams(b *testing.B, tun *ssm.Tunnel, n int, mode byte, per int64) {
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := tun.Dial(b.Context())
			if err != nil {
				b.Error(err)
				return
			}
			defer c.Close()
			if err := benchStream(c, mode, per); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
}
