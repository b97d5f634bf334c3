package comet_test

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/laneim/laneim/gateways/comet"
	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/topics"
)

// BenchmarkBroadcastSockets measures the comet's cost per frame written to
// real loopback sockets: members are raw WebSocket clients that read and
// discard, each message is its own frame (no merging) written to every
// member before the next is handed over, and the figure
// that matters is cpu-µs/frame, the process's user+system CPU per frame
// written (the members' reads included, the same in every variant).
func BenchmarkBroadcastSockets(b *testing.B) {
	for _, members := range []int{100, 1000} {
		b.Run(fmt.Sprintf("%dMembers", members), func(b *testing.B) {
			c, err := comet.New(comet.Config{ID: "bench", Secret: testSecret, BatchWindow: -1, SendQueue: 1 << 16, RequestRate: -1}, &testinfra.Recorder{}, slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			srv := httptest.NewServer(c)
			var readers sync.WaitGroup
			conns := make([]net.Conn, 0, members)
			defer func() {
				c.Close()
				for _, nc := range conns {
					nc.Close()
				}
				readers.Wait()
				srv.Close()
			}()
			for range members {
				nc, err := rawUpgrade(srv.Listener.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				conns = append(conns, nc)
				readers.Add(1)
				go func() {
					defer readers.Done()
					_, _ = io.Copy(io.Discard, nc)
				}()
			}
			deadline := time.Now().Add(30 * time.Second)
			for admitted := 0; admitted < members; {
				admitted += c.AdmitAll("lobby")
				if time.Now().After(deadline) {
					b.Fatalf("%d of %d members admitted", admitted, members)
				}
				time.Sleep(time.Millisecond)
			}
			msgs := make([]*message.Message, b.N)
			for i := range msgs {
				if msgs[i], err = topics.Deliveries.Encode(roomMessage("lobby", uint64(i+1))); err != nil {
					b.Fatal(err)
				}
			}
			h := c.Pipeline()
			before := c.Stats().FramesSent
			deadline = time.Now().Add(time.Minute)
			cpu0 := testinfra.ProcessCPU()
			b.ReportAllocs()
			b.ResetTimer()
			for i, msg := range msgs {
				if err := h.Handle(msg); err != nil {
					b.Fatal(err)
				}
				// Paced: each message reaches every member before the
				// next, so every frame is a write of its own, as in a
				// big room between two flushes.
				want := before + int64(i+1)*int64(members)
				for c.Stats().FramesSent < want {
					if time.Now().After(deadline) {
						b.Fatal("frames not written within a minute")
					}
					time.Sleep(20 * time.Microsecond)
				}
			}
			b.StopTimer()
			frames := float64(c.Stats().FramesSent - before)
			b.ReportMetric(frames/float64(b.N), "frames/op")
			b.ReportMetric((testinfra.ProcessCPU()-cpu0).Seconds()*1e6/frames, "cpu-µs/frame")
		})
	}
}

// rawUpgrade opens a WebSocket connection to the comet at addr by hand
// (the protobuf subprotocol) and returns the socket, past the handshake.
func rawUpgrade(addr string) (net.Conn, error) {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	req := "GET /ws HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: " + comet.SubprotocolProto + "\r\n\r\n"
	if _, err := io.WriteString(nc, req); err != nil {
		nc.Close()
		return nil, err
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		nc.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || br.Buffered() > 0 {
		nc.Close()
		return nil, fmt.Errorf("upgrade: %s, %d bytes read ahead", resp.Status, br.Buffered())
	}
	return nc, nil
}

// BenchmarkLoopbackWrites is BenchmarkBroadcastSockets without the comet:
// the kernel's part of a frame, one write of size bytes to each member's
// loopback TCP socket, read and discarded by a goroutine per member,
// paced the same way. Its cpu-µs/frame, the process's user+system CPU
// per write, both ends included, is the floor under the comet's figure
// on the same machine (docs/performance.md, twenty-third round).
func BenchmarkLoopbackWrites(b *testing.B) {
	for _, size := range []int{160, 1750} {
		b.Run(fmt.Sprintf("%dBytes", size), func(b *testing.B) {
			const members = 1000
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			var read atomic.Int64
			var readers sync.WaitGroup
			servers := make([]net.Conn, 0, members)
			defer func() {
				for _, c := range servers {
					c.Close()
				}
				ln.Close()
				readers.Wait()
			}()
			for range members {
				client, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				server, err := ln.Accept()
				if err != nil {
					client.Close()
					b.Fatal(err)
				}
				servers = append(servers, server)
				readers.Add(1)
				go func() { // ends when its server side closes
					defer readers.Done()
					defer client.Close()
					buf := make([]byte, 64<<10)
					for {
						n, err := client.Read(buf)
						read.Add(int64(n))
						if err != nil {
							return
						}
					}
				}()
			}
			frame := make([]byte, size)
			deadline := time.Now().Add(time.Minute)
			cpu0 := testinfra.ProcessCPU()
			b.ResetTimer()
			for i := range b.N {
				for _, c := range servers {
					if _, err := c.Write(frame); err != nil {
						b.Fatal(err)
					}
				}
				// Paced: every member has read this frame before the next.
				for want := int64(i+1) * int64(members*size); read.Load() < want; {
					if time.Now().After(deadline) {
						b.Fatal("frames not read within a minute")
					}
					time.Sleep(20 * time.Microsecond)
				}
			}
			b.StopTimer()
			b.ReportMetric((testinfra.ProcessCPU()-cpu0).Seconds()*1e6/float64(b.N*members), "cpu-µs/frame")
		})
	}
}
