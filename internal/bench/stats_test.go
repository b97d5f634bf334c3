package bench

import (
	"testing"
	"time"
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
