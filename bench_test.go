package main

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/laneim/laneim/internal/bench"
)

// TestBenchOnDevCluster runs the load command as a user would, with its
// defaults but a small room and a few clients online in no room
// (--online), against the dev cluster it starts, and checks what it
// reports: every pushed message delivered to every member, none lost,
// every client connected. It measures nothing; the figures are the
// bench's.
func TestBenchOnDevCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts a dev cluster")
	}
	bin := buildLaneim(t)
	// The dev cluster a bench starts must not need the dev defaults'
	// fixed ports: another dev cluster (a user's, another bench's) may
	// hold them. Hold the HTTP api's, unless something else does.
	if l, err := net.Listen("tcp", "127.0.0.1:9091"); err == nil {
		defer l.Close()
	}
	run := runLaneim(t, bin, 3*time.Minute, nil, 0, "bench", "--members", "40", "--online", "55", "--rate", "20", "--duration", "2s", "--drain", "10s", "--json")
	var r struct {
		Members   int     `json:"members"`
		Online    int     `json:"online"`
		Conns     int64   `json:"comet_connections"`
		Pushed    int64   `json:"pushed"`
		Expected  int64   `json:"expected_deliveries"`
		Delivered int64   `json:"delivered"`
		Lost      int64   `json:"lost"`
		Logins    float64 `json:"logins_per_second"`
		LoginCPU  float64 `json:"server_ms_per_login"`
		Cluster   string  `json:"cluster"`
		Frames    int64   `json:"frames_received"`
		Bytes     int64   `json:"bytes_received"`
		BytesPerS float64 `json:"bytes_per_second"`
		// The cluster's own histograms (internal/bench/stages.go).
		RoutingAge float64 `json:"routing_age_p99_ms"`
		CometAge   float64 `json:"comet_age_p99_ms"`
		RoomWait   float64 `json:"room_wait_p99_ms"`
		WriteLag   float64 `json:"write_lag_p99_ms"`
		Latency    float64 `json:"latency_p99_ms"`
	}
	lastJSON(t, "bench", run, &r)
	if r.Members != 40 || r.Pushed == 0 || r.Expected != r.Pushed*40 {
		t.Errorf("result %+v: want 40 members and every pushed message expected by each", r)
	}
	if r.Online != 55 || r.Conns != 55 {
		t.Errorf("%d clients online, %d connections at the comet; want 55 of each (40 members, 15 in no room)", r.Online, r.Conns)
	}
	if r.Lost != 0 || r.Delivered != r.Expected {
		t.Errorf("lost %d, delivered %d of %d; want all delivered", r.Lost, r.Delivered, r.Expected)
	}
	// Every delivered message is in a frame, and a frame of messages holds
	// at least each message's 8-byte send time.
	if r.Frames <= 0 || r.Bytes < 8*r.Delivered || r.BytesPerS <= 0 {
		t.Errorf("%d frames, %d bytes (%.0f/s) for %d deliveries: want frames and their bytes counted", r.Frames, r.Bytes, r.BytesPerS, r.Delivered)
	}
	// Each stage is a part of the latency the members measured.
	for _, st := range []struct {
		name string
		p99  float64
	}{{"submitted→routing", r.RoutingAge}, {"routed→comet", r.CometAge}, {"room wait", r.RoomWait}, {"flush→write", r.WriteLag}} {
		if st.p99 <= 0 || st.p99 > r.Latency*1.1+1 {
			t.Errorf("%s p99 %.2f ms (latency p99 %.2f ms): want it read from the cluster's metrics, and within the latency", st.name, st.p99, r.Latency)
		}
	}
	if r.Logins <= 0 || r.LoginCPU <= 0 || r.Cluster == "" {
		t.Errorf("login rate %.1f, %.2f ms of CPU per login, cluster %q: want all reported", r.Logins, r.LoginCPU, r.Cluster)
	}
}

func TestBenchLimit(t *testing.T) {
	for _, tt := range []struct {
		name  string
		cfg   bench.Config
		rates int
		want  time.Duration
	}{
		{"one rate", bench.Config{Members: 10000, Duration: 20 * time.Second, Drain: 10 * time.Second}, 1, 5*time.Minute + 200*time.Second + 90*time.Second},
		{"default drain", bench.Config{Members: 1000, Duration: 10 * time.Second}, 1, 5*time.Minute + 20*time.Second + 80*time.Second},
		{"a sweep of three", bench.Config{Members: 100, Duration: 10 * time.Second, Drain: 5 * time.Second}, 3, 5*time.Minute + 2*time.Second + 3*75*time.Second},
	} {
		if got := benchLimit(tt.cfg, tt.rates); got != tt.want {
			t.Errorf("%s: benchLimit = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestWatchBenchCancels: past its limit the watch cancels the run, and a
// watch stopped before its limit cancels nothing.
func TestWatchBenchCancels(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop := watchBench(cancel, 20*time.Millisecond)
	defer stop()
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the run was not cancelled past its limit")
	}

	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	watchBench(cancel2, 50*time.Millisecond)()
	time.Sleep(200 * time.Millisecond)
	if ctx2.Err() != nil {
		t.Fatal("a stopped watch cancelled the run")
	}
}
