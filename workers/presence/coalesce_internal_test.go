package presence

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestCoalescerCorrectsAStaleCount plays the race TestE2EPresenceFlapping
// once lost: a change kept to the end of its window reads the room's
// count while the user's next change is already in the directory but not
// yet given to the coalescer, so "alice offline" goes out with her
// counted online. When alice is offline again at the next window's end,
// the state is the same as sent, but the count is not: it goes out again.
func TestCoalescerCorrectsAStaleCount(t *testing.T) {
	const window = 30 * time.Millisecond
	var (
		mu    sync.Mutex
		count = 2
		sent  []string
		got   = make(chan struct{}, 16)
	)
	co := newCoalescer(window,
		func(context.Context, string) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			return count, nil
		},
		func(_ context.Context, room, user string, online bool, n int) {
			mu.Lock()
			sent = append(sent, fmt.Sprintf("%s %v %d", user, online, n))
			mu.Unlock()
			got <- struct{}{}
		})
	defer co.stop()
	wait := func() {
		t.Helper()
		select {
		case <-got:
		case <-time.After(5 * time.Second):
			t.Fatal("no change sent at the window's end")
		}
	}
	setCount := func(n int) {
		mu.Lock()
		count = n
		mu.Unlock()
	}

	if !co.now("lobby", "alice", true, 2, time.Now()) {
		t.Fatal("first change kept, want it sent at once")
	}
	// alice leaves (count 1), and joins again before the window ends;
	// the join is in the directory (count 2) before the coalescer hears.
	if co.now("lobby", "alice", false, 1, time.Now()) {
		t.Fatal("second change within the window sent at once")
	}
	setCount(2)
	wait() // "alice false 2": stale
	co.now("lobby", "alice", true, 2, time.Now())
	co.now("lobby", "alice", false, 1, time.Now())
	setCount(1)
	wait()
	mu.Lock()
	defer mu.Unlock()
	want := []string{"alice false 2", "alice false 1"}
	if fmt.Sprint(sent) != fmt.Sprint(want) {
		t.Fatalf("sent %q, want %q", sent, want)
	}
}
