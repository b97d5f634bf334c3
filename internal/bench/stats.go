package bench

import (
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// histogram records durations in logarithmic buckets (about 3% wide) from
// 1µs to ~70s, lock-free. Percentiles are read from bucket upper bounds.
type histogram struct {
	buckets [64 * 16]atomic.Int64
	max     atomic.Int64
	// No count: the readers on several cores would all add to that one
	// word for every message. quantile sums the buckets instead.
}

// bucketOf maps a duration in µs to a bucket: 16 sub-buckets per power of two.
func bucketOf(us int64) int {
	if us < 16 {
		if us < 0 {
			return 0
		}
		return int(us)
	}
	e := 63 - bits.LeadingZeros64(uint64(us)) // us in [2^e, 2^(e+1))
	sub := (us >> (e - 4)) & 15
	return (e-3)*16 + int(sub)
}

// upperOf returns the largest µs value of bucket b.
func upperOf(b int) int64 {
	if b < 16 {
		return int64(b)
	}
	e := b/16 + 3
	sub := int64(b % 16)
	return ((16+sub+1)<<(e-4) - 1)
}

func (h *histogram) record(d time.Duration) {
	us := d.Microseconds()
	b := bucketOf(us)
	if b >= len(h.buckets) {
		b = len(h.buckets) - 1
	}
	h.buckets[b].Add(1)
	for {
		m := h.max.Load()
		if us <= m || h.max.CompareAndSwap(m, us) {
			break
		}
	}
}

// quantile returns the q-quantile (0 < q <= 1).
func (h *histogram) quantile(q float64) time.Duration {
	var n int64
	for b := range h.buckets {
		n += h.buckets[b].Load()
	}
	if n == 0 {
		return 0
	}
	rank := int64(float64(n)*q + 0.5)
	if rank < 1 {
		rank = 1
	}
	var seen int64
	for b := range h.buckets {
		seen += h.buckets[b].Load()
		if seen >= rank {
			return time.Duration(min(upperOf(b), h.max.Load())) * time.Microsecond
		}
	}
	return time.Duration(h.max.Load()) * time.Microsecond
}

// seqSet tracks which sequence numbers a client received.
type seqSet struct {
	mu    sync.Mutex
	bits  []uint64
	dups  int64
	total int64
}

func (s *seqSet) add(seq uint64) { s.addAll([]uint64{seq}) }

// addAll records seqs, under one lock (a frame's messages).
func (s *seqSet) addAll(seqs []uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, seq := range seqs {
		s.total++
		w := int(seq / 64)
		for w >= len(s.bits) {
			s.bits = append(s.bits, 0)
		}
		m := uint64(1) << (seq % 64)
		if s.bits[w]&m != 0 {
			s.dups++
			continue
		}
		s.bits[w] |= m
	}
}

// addNew records seq if it was not received yet and reports whether it
// was new; a repeat is not counted as a duplicate (a Sync after a
// reconnect may overlap with live delivery, as the protocol allows).
func (s *seqSet) addNew(seq uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := int(seq / 64)
	for w >= len(s.bits) {
		s.bits = append(s.bits, 0)
	}
	m := uint64(1) << (seq % 64)
	if s.bits[w]&m != 0 {
		return false
	}
	s.bits[w] |= m
	s.total++
	return true
}

// contiguous returns the highest n such that 1..n were all received.
func (s *seqSet) contiguous() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n uint64
	for seq := uint64(1); ; seq++ {
		w := int(seq / 64)
		if w >= len(s.bits) || s.bits[w]&(1<<(seq%64)) == 0 {
			return n
		}
		n = seq
	}
}

// duplicates counts the numbers received more than once.
func (s *seqSet) duplicates() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dups
}

// missingIn counts the numbers in [from, to] not received.
func (s *seqSet) missingIn(from, to uint64) int64 {
	if to < from {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var have int64
	for seq := from; seq <= to; seq++ {
		w := int(seq / 64)
		if w < len(s.bits) && s.bits[w]&(1<<(seq%64)) != 0 {
			have++
		}
	}
	return int64(to-from+1) - have
}

// Quantile returns the q-quantile (0 < q <= 1) of samples by nearest rank,
// 0 without samples. For tools that keep every sample (soak, abuse);
// samples is not modified.
func Quantile(samples []time.Duration, q float64) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	i := int(float64(len(s))*q+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}
