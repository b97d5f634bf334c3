package abuse

import (
	"testing"
	"time"
)

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
		if got := quantile(tt.in, tt.q); got != tt.want {
			t.Errorf("quantile(%v, %v) = %v, want %v", tt.in, tt.q, got, tt.want)
		}
	}
}

func TestLoopbackOnly(t *testing.T) {
	for target, ok := range map[string]bool{
		"ws://127.0.0.1:8080/ws": true,
		"ws://localhost:8080/ws": true,
		"ws://[::1]:8080/ws":     true,
		"ws://10.0.0.5:8080/ws":  false,
		"wss://example.com/ws":   false,
	} {
		if err := loopbackOnly(target); (err == nil) != ok {
			t.Errorf("loopbackOnly(%s) = %v, want ok %v", target, err, ok)
		}
	}
}
