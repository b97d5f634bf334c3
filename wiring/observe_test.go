package wiring_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/laneim/laneim/wiring"
)

// TestCheckCountsDegradedAsReady: a check that fails makes the process
// not ready; one that answers Degraded is reported and leaves it ready.
func TestCheckCountsDegradedAsReady(t *testing.T) {
	ok := func(context.Context) error { return nil }
	down := func(context.Context) error { return errors.New("connection refused") }
	degraded := func(context.Context) error {
		return wiring.Degraded(errors.New("1 of 3 masters do not answer"))
	}
	for _, tc := range []struct {
		name   string
		checks map[string]func(context.Context) error
		ready  bool
		lines  []string
	}{
		{"all answer", map[string]func(context.Context) error{"kafka": ok, "redis": ok}, true,
			[]string{"kafka: ok", "redis: ok"}},
		{"one degraded", map[string]func(context.Context) error{"kafka": ok, "redis": degraded}, true,
			[]string{"kafka: ok", "redis: degraded: 1 of 3 masters do not answer"}},
		{"one down", map[string]func(context.Context) error{"kafka": down, "redis": degraded}, false,
			[]string{"kafka: connection refused", "redis: degraded: 1 of 3 masters do not answer"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := wiring.NewMetrics()
			for _, name := range []string{"kafka", "redis"} {
				m.AddCheck(name, tc.checks[name])
			}
			lines, ready := m.Check(context.Background())
			if ready != tc.ready || !slices.Equal(lines, tc.lines) {
				t.Errorf("Check = %q, %v; want %q, %v", lines, ready, tc.lines, tc.ready)
			}
		})
	}
	if wiring.Degraded(nil) != nil {
		t.Error("Degraded(nil) is not nil")
	}
}
