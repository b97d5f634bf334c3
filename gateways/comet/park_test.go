package comet_test

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/gateways/comet"
	"github.com/laneim/laneim/gateways/comet/client"
	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
)

// TestIdleConnectionsPark checks that connections waiting for their
// client hold no reader goroutine (Stats.Parked) and are served all the
// same: a parked connection answers a Ping, sees its client go away, is
// closed by the idle timeout, and is closed by Close; without parking,
// the same holds with no connection parked.
func TestIdleConnectionsPark(t *testing.T) {
	for _, tc := range []struct {
		name    string
		parking bool
	}{
		{"parked", true},
		{"a goroutine each", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := comet.Config{IdleTimeout: 2 * time.Second}
			if !tc.parking {
				comet.NoParking(&cfg)
			}
			f := newFixture(t, cfg)
			const n = 12
			conns := make([]*client.Conn, n)
			for i := range conns {
				conns[i], _ = f.login(fmt.Sprintf("u%d", i), client.Options{})
			}
			want := int64(0)
			if tc.parking {
				want = n
			}
			parkedAre := func(want int64) {
				t.Helper()
				testinfra.Eventually(t, wait, func() bool { return f.comet.Stats().Parked == want }, "parked: want %d", want)
			}
			parkedAre(want)

			// Served while parked, and parked again after.
			for i, c := range conns[:n/2] {
				if _, err := c.Ping(ctxT(t)); err != nil {
					t.Fatalf("ping %d: %v", i, err)
				}
			}
			parkedAre(want)

			// A client that goes away is forgotten.
			for _, c := range conns[:3] {
				c.Close()
			}
			testinfra.Eventually(t, wait, func() bool { return f.comet.Stats().Connections == n-3 }, "closed clients not forgotten")

			// A silent client is closed by the idle timeout, others
			// keep their connection by pinging.
			for range 6 {
				for _, c := range conns[3 : n/2] {
					if _, err := c.Ping(ctxT(t)); err != nil {
						t.Fatalf("ping: %v", err)
					}
				}
				time.Sleep(500 * time.Millisecond)
			}
			for i, c := range conns[n/2:] {
				select {
				case <-c.Done():
				case <-time.After(wait):
					t.Fatalf("silent connection %d not closed", i)
				}
				if ce := closeError(t, c); ce.Code != websocket.StatusPolicyViolation || ce.Reason != "idle timeout" {
					t.Fatalf("close %v, want 1008 idle timeout", ce)
				}
			}
			testinfra.Eventually(t, wait, func() bool { return f.comet.Stats().Connections == n/2-3 }, "idle connections not forgotten")

			// Close ends the rest, parked or not, with 1001.
			if tc.parking {
				parkedAre(n/2 - 3)
			}
			f.comet.Close()
			for _, c := range conns[3 : n/2] {
				<-c.Done()
				if ce := closeError(t, c); ce.Code != websocket.StatusGoingAway {
					t.Fatalf("close %v, want 1001", ce)
				}
			}
			if st := f.comet.Stats(); st.Connections != 0 || st.Parked != 0 {
				t.Fatalf("after Close: %+v", st)
			}
		})
	}
}

// BenchmarkIdleConnections measures the memory an idle logged-in
// connection holds (Go heap and goroutine stacks, the client sockets'
// small state in the same process included), parked and with a reader
// goroutine each. The figure is B/conn; the time per op means nothing.
func BenchmarkIdleConnections(b *testing.B) {
	const members = 2000
	for _, parking := range []bool{true, false} {
		name := "parked"
		if !parking {
			name = "goroutineEach"
		}
		b.Run(name, func(b *testing.B) {
			cfg := comet.Config{ID: "bench", Secret: testSecret, RequestRate: -1, MaxConnsPerAddress: -1}
			if !parking {
				comet.NoParking(&cfg)
			}
			for range b.N {
				perConn, err := idleMemory(cfg, members)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(perConn, "B/conn")
			}
		})
	}
}

// idleMemory opens members logged-in connections to a comet of cfg, lets
// them go idle, and returns the heap and stack bytes in use per
// connection over what the process held before.
func idleMemory(cfg comet.Config, members int) (float64, error) {
	before := inUse()
	c, err := comet.New(cfg, &testinfra.Recorder{}, slog.New(slog.DiscardHandler))
	if err != nil {
		return 0, err
	}
	srv := httptest.NewServer(c)
	conns := make([]net.Conn, 0, members)
	defer func() {
		c.Close()
		for _, nc := range conns {
			nc.Close()
		}
		srv.Close()
	}()
	for range members {
		nc, err := rawUpgrade(srv.Listener.Addr().String())
		if err != nil {
			return 0, err
		}
		conns = append(conns, nc) // idle: the client neither reads nor writes
	}
	deadline := time.Now().Add(30 * time.Second)
	for admitted := 0; admitted < members; {
		admitted += c.AdmitAll("lobby")
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%d of %d members admitted", admitted, members)
		}
		time.Sleep(time.Millisecond)
	}
	if !c.WaitWritten(30 * time.Second) {
		return 0, errors.New("writers still busy after 30s")
	}
	time.Sleep(2 * time.Second) // writers linger a second before they end
	return float64(inUse()-before) / float64(members), nil
}

// inUse is the heap and stack memory in use after a collection.
func inUse() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse + ms.StackInuse)
}

// BenchmarkParkedRequests measures a request on a parked connection: the
// client sends a Ping to one of many idle connections in turn and reads
// the Pong, so the comet resumes a reader for every request, as it does
// for clients that send now and then. cpu-µs/op is the process's CPU
// (client sockets included) per request.
func BenchmarkParkedRequests(b *testing.B) {
	const conns = 500
	c, err := comet.New(comet.Config{ID: "bench", Secret: testSecret, RequestRate: -1, MaxConnsPerAddress: -1},
		&testinfra.Recorder{}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(c)
	var ncs []net.Conn
	b.Cleanup(func() {
		c.Close()
		for _, nc := range ncs {
			nc.Close()
		}
		srv.Close()
	})
	for range conns {
		nc, err := rawUpgrade(srv.Listener.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		ncs = append(ncs, nc)
	}
	ping, err := proto.Marshal(&clientpb.ClientFrame{RequestId: 1, Body: &clientpb.ClientFrame_Ping{Ping: &clientpb.Ping{}}})
	if err != nil {
		b.Fatal(err)
	}
	cpu0 := testinfra.ProcessCPU()
	b.ResetTimer()
	for i := range b.N {
		nc := ncs[i%conns]
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := writeClientFrame(nc, 0x2, ping); err != nil {
			b.Fatal(err)
		}
		if op, _, err := readServerFrame(nc); err != nil || op != 0x2 {
			b.Fatalf("answer: opcode %#x, %v", op, err)
		}
	}
	b.StopTimer()
	b.ReportMetric((testinfra.ProcessCPU()-cpu0).Seconds()*1e6/float64(b.N), "cpu-µs/op")
}
