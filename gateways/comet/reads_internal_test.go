package comet

import "testing"

func TestReadLimit(t *testing.T) {
	for _, tt := range []struct {
		max, avg, want int64
	}{
		{256, 0, 256},                     // no answer seen yet
		{256, 4 << 10, 256},               // small pages: the count bounds
		{256, 512 << 10, 32},              // full pages: 16 MiB of them
		{256, 2 << 20, 8},                 //
		{256, 64 << 20, minReadsInFlight}, // never fewer
		{4, 64 << 20, 4},                  // nor more than the count
		{2000, 16 << 10, readBytesInFlight / (16 << 10)},
	} {
		if got := readLimit(tt.max, tt.avg); got != tt.want {
			t.Errorf("readLimit(%d, %d) = %d, want %d", tt.max, tt.avg, got, tt.want)
		}
	}
}

func TestObserveRead(t *testing.T) {
	var c Comet
	c.observeRead(800)
	if got := c.readBytes.Load(); got != 800 {
		t.Fatalf("first answer: average %d, want 800", got)
	}
	c.observeRead(0)
	if got := c.readBytes.Load(); got != 700 {
		t.Fatalf("average %d, want an eighth of the way to 0: 700", got)
	}
	for range 200 {
		c.observeRead(0)
	}
	if got := c.readBytes.Load(); got < 1 || got > 8 {
		t.Fatalf("average %d after empty answers, want a few bytes (an eighth of it is dropped as a whole byte)", got)
	}
}

func TestReadReserve(t *testing.T) {
	for _, tt := range []struct{ limit, want int64 }{
		{1, 1}, {8, 1}, {32, 4}, {256, 32},
	} {
		if got := readReserve(tt.limit); got != tt.want {
			t.Errorf("readReserve(%d) = %d, want %d", tt.limit, got, tt.want)
		}
	}
}
