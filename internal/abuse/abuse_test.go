package abuse

import (
	"testing"
)

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
