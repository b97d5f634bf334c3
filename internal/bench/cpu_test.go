package bench

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/laneim/laneim/wiring"
)

// TestSampleClusterFromAdmin: against a target cluster, the cluster's CPU
// is the sum of process_cpu_seconds_total over the processes' /metrics.
func TestSampleClusterFromAdmin(t *testing.T) {
	var addrs []string
	for range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: wiring.NewMetrics().AdminHandler(), ReadHeaderTimeout: time.Second}
		done := make(chan error, 1)
		go func() { done <- srv.Serve(l) }()
		t.Cleanup(func() {
			srv.Close()
			<-done
		})
		addrs = append(addrs, l.Addr().String())
	}
	// Burn some CPU so that the process's counter is above zero.
	for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); {
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	one := sampleCluster(ctx, nil, addrs[:1]).cpu.cluster
	both := sampleCluster(ctx, nil, addrs).cpu.cluster
	if one <= 0 {
		t.Fatalf("cluster CPU from %s = %v, want > 0", addrs[0], one)
	}
	if both < 2*one {
		t.Fatalf("two processes' CPU %v < twice one's %v: not summed", both, one)
	}
	if rss := sampleCluster(ctx, nil, addrs).rss; rss <= 0 {
		t.Fatalf("cluster memory = %d", rss)
	}
}
