package wiring_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/laneim/laneim/internal/testinfra"
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

// TestCheckRunsOneRoundForMany: requests during a round share it, and
// one right after gets its answer again, so a flood of /readyz opens one
// round of connections a second (outside abuse check).
func TestCheckRunsOneRoundForMany(t *testing.T) {
	m := wiring.NewMetrics()
	var rounds atomic.Int32
	release := make(chan struct{})
	m.AddCheck("redis", func(context.Context) error {
		rounds.Add(1)
		<-release
		return nil
	})
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if lines, ok := m.Check(context.Background()); !ok || !slices.Equal(lines, []string{"redis: ok"}) {
				t.Errorf("Check = %q, %v", lines, ok)
			}
		})
	}
	// Let the requests gather on the round, then end it.
	testinfra.Eventually(t, 10*time.Second, func() bool { return rounds.Load() == 1 }, "no round started")
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	m.Check(context.Background())
	if n := rounds.Load(); n != 1 {
		t.Fatalf("%d rounds for 21 requests, one just after the first round; want 1", n)
	}
	time.Sleep(1100 * time.Millisecond)
	m.Check(context.Background())
	if n := rounds.Load(); n != 2 {
		t.Fatalf("%d rounds after a second more; want 2", n)
	}
}
