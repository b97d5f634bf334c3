package bench

import (
	"context"
	"fmt"
	"math"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/laneim/laneim/wiring"
)

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Millisecond)
	}
	tests := []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.99, 990 * time.Millisecond}, {1, time.Second}}
	for _, tt := range tests {
		got := h.quantile(tt.q)
		if got < tt.want*95/100 || got > tt.want*107/100 {
			t.Errorf("quantile(%v) = %v, want about %v", tt.q, got, tt.want)
		}
	}
}

func TestBucketsAreMonotonic(t *testing.T) {
	prev := -1
	for us := int64(0); us < 1<<22; us = us*11/10 + 1 {
		b := bucketOf(us)
		if b < prev {
			t.Fatalf("bucketOf(%d) = %d < %d", us, b, prev)
		}
		if upperOf(b) < us {
			t.Fatalf("upperOf(bucketOf(%d)) = %d", us, upperOf(b))
		}
		prev = b
	}
}

func TestSeqSet(t *testing.T) {
	var s seqSet
	for _, seq := range []uint64{1, 2, 2, 5, 130} {
		s.add(seq)
	}
	if got := s.missingIn(1, 5); got != 2 {
		t.Errorf("missing(5) = %d, want 2", got)
	}
	if got := s.missingIn(1, 130); got != 130-4 {
		t.Errorf("missing(130) = %d, want 126", got)
	}
	if s.dups != 1 {
		t.Errorf("dups = %d", s.dups)
	}
}

func TestSeqSetContiguousAndAddNew(t *testing.T) {
	var s seqSet
	for _, seq := range []uint64{1, 2, 3, 5, 64, 65} {
		s.add(seq)
	}
	if got := s.contiguous(); got != 3 {
		t.Fatalf("contiguous = %d, want 3", got)
	}
	if !s.addNew(4) || s.addNew(4) || s.addNew(5) {
		t.Fatal("addNew must report only unseen seqs")
	}
	if got := s.contiguous(); got != 5 {
		t.Fatalf("contiguous = %d, want 5", got)
	}
	if s.duplicates() != 0 {
		t.Fatalf("addNew counted %d duplicates", s.duplicates())
	}
	if got := s.missingIn(1, 65); got != 65-7 {
		t.Fatalf("missingIn(1, 65) = %d, want %d", got, 65-7)
	}
	if got := s.missingIn(6, 5); got != 0 {
		t.Fatalf("empty range: %d", got)
	}
}

func TestQuantile(t *testing.T) {
	ms := func(n ...int) []time.Duration {
		var out []time.Duration
		for _, v := range n {
			out = append(out, time.Duration(v)*time.Millisecond)
		}
		return out
	}
	tests := []struct {
		in   []time.Duration
		q    float64
		want time.Duration
	}{
		{nil, 0.5, 0},
		{ms(5), 0.99, 5 * time.Millisecond},
		{ms(9, 1, 5, 3, 7), 0.5, 5 * time.Millisecond},
		{ms(9, 1, 5, 3, 7), 0.99, 9 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := Quantile(tt.in, tt.q); got != tt.want {
			t.Errorf("Quantile(%v, %v) = %v, want %v", tt.in, tt.q, got, tt.want)
		}
	}
}

func TestPushers(t *testing.T) {
	for _, tt := range []struct{ rate, want int }{
		{1, 16}, {160, 16}, {1000, 100}, {2560, 256}, {100000, 256},
	} {
		if got := pushers(tt.rate); got != tt.want {
			t.Errorf("pushers(%d) = %d, want %d", tt.rate, got, tt.want)
		}
	}
}

func TestBucketsQuantile(t *testing.T) {
	inf := math.Inf(1)
	// 10 values up to 1ms, 80 in (1ms, 2ms], 10 in (2ms, 4ms].
	b := buckets{0.001: 10, 0.002: 90, 0.004: 100, inf: 100}
	tests := []struct {
		name string
		b    buckets
		q    float64
		want time.Duration
	}{
		{"empty", buckets{}, 0.5, 0},
		{"nothing recorded", buckets{0.001: 0, inf: 0}, 0.99, 0},
		{"in the first bucket, from 0", b, 0.05, 500 * time.Microsecond},
		{"interpolated", b, 0.5, 1500 * time.Microsecond},
		{"at a bound", b, 0.9, 2 * time.Millisecond},
		{"in the last finite bucket", b, 0.95, 3 * time.Millisecond},
		{"everything", b, 1, 4 * time.Millisecond},
		{"in +Inf: the largest finite bound", buckets{0.001: 1, inf: 10}, 0.99, time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.b.quantile(tc.q); got < tc.want-time.Microsecond || got > tc.want+time.Microsecond {
				t.Fatalf("quantile(%v) = %v, want %v", tc.q, got, tc.want)
			}
		})
	}
	later := buckets{0.001: 15, 0.002: 95, 0.004: 110, inf: 112}
	d := later.minus(b)
	if d[0.001] != 5 || d[0.002] != 5 || d[0.004] != 10 || d[inf] != 12 {
		t.Fatalf("minus = %v", d)
	}
	if got := d.quantile(0.99); got != 4*time.Millisecond {
		t.Fatalf("the difference's p99 = %v, want 4ms (2 of 12 beyond the last bound)", got)
	}
}

// TestSampleStages reads a stage histogram from a real registry's
// /metrics, summed over two processes, and its quantiles come back.
func TestSampleStages(t *testing.T) {
	var admin []string
	for i := range 2 {
		reg := prometheus.NewRegistry()
		h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: writeLagMetric, Help: "h", Buckets: wiring.LatencyBuckets,
			ConstLabels: prometheus.Labels{"comet": fmt.Sprint("c", i)}})
		reg.MustRegister(h)
		for j := range 100 {
			h.Observe(float64(j+1) / 1000) // 1ms to 100ms
		}
		srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		t.Cleanup(srv.Close)
		admin = append(admin, strings.TrimPrefix(srv.URL, "http://"))
	}
	got := sampleCluster(context.Background(), nil, append(admin, "127.0.0.1:1")).stages // and one that cannot be read
	b := got[writeLagMetric]
	if n := b[math.Inf(1)]; n != 200 {
		t.Fatalf("%v observations, want 200", n)
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}} {
		if d := b.quantile(tc.q); d < tc.want*9/10 || d > tc.want*11/10 {
			t.Errorf("quantile(%v) = %v, want %v within 10%%", tc.q, d, tc.want)
		}
	}
	if n := got[cometAgeMetric][math.Inf(1)]; n != 0 {
		t.Fatalf("%v observations of a histogram nobody exports", n)
	}
}

func TestPerMember(t *testing.T) {
	for _, tt := range []struct {
		bytes int64
		want  string
	}{
		{23163, "23.2 KB per client"},
		{0, "0.0 KB per client"},
		{-4600, "per client not measurable: less than before they came, an earlier run's memory"},
	} {
		if got := perClient(tt.bytes); got != tt.want {
			t.Errorf("perClient(%d) = %q, want %q", tt.bytes, got, tt.want)
		}
	}
}
