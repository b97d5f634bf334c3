package app

import (
	"context"
	"testing"
	"time"

	"github.com/laneim/laneim/proto/clientpb"
)

// TestE2EPresenceFlappingIsCoalesced: alice joins and leaves the lobby 50
// times over real connections while bob sits there; bob receives a
// bounded number of PresenceChange frames about alice (one at once, then
// at most one per window), the last one saying she is offline with the
// lobby's right count (issue 11: a flapping member once cost each other
// member a frame per flap).
func TestE2EPresenceFlappingIsCoalesced(t *testing.T) {
	t.Parallel()
	const window = 300 * time.Millisecond
	c := startCluster(t, func(s *Settings) { s.PresenceWindow = window })
	bob := c.login("bob")
	c.join(bob, "lobby")
	alice := c.login("alice")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	for i := range 50 {
		if _, err := alice.Join(ctx, "lobby"); err != nil {
			t.Fatalf("join %d: %v", i, err)
		}
		if err := alice.Leave(ctx, "lobby"); err != nil {
			t.Fatalf("leave %d: %v", i, err)
		}
	}
	flapped := time.Since(start)
	var changes []*clientpb.PresenceChange
	quiet := time.NewTimer(5 * window)
	defer quiet.Stop()
	// Settled: quiet for five windows after a change saying alice is
	// offline. On a loaded machine the last leaves may still be on their
	// way when a quiet spell starts, so quiet alone ends the wait only
	// after 15 s; the checks below are the same either way.
	giveUp := time.Now().Add(15 * time.Second)
	settled := func() bool {
		if time.Now().After(giveUp) {
			return true
		}
		return len(changes) > 0 && !changes[len(changes)-1].GetOnline()
	}
	for done := false; !done; {
		select {
		case f, ok := <-bob.Frames():
			if !ok {
				t.Fatalf("bob's connection closed: %v", bob.Err())
			}
			if p := f.GetPresence(); p != nil && p.GetUser() == "alice" && p.GetRoom() == "lobby" {
				changes = append(changes, p)
				quiet.Reset(5 * window)
			}
		case <-quiet.C:
			// Nothing for five windows: the last change is in, once settled.
			if done = settled(); !done {
				quiet.Reset(5 * window)
			}
		}
	}
	bound := 2 + int(flapped/window)
	if len(changes) == 0 || len(changes) > bound {
		t.Fatalf("bob got %d presence changes about alice in %v of flapping, want 1 to %d", len(changes), flapped, bound)
	}
	if last := changes[len(changes)-1]; last.GetOnline() || last.GetOnlineCount() != 1 {
		t.Fatalf("last presence change %v, want alice offline and 1 online (bob)", last)
	}
	t.Logf("%d presence changes for 50 flaps in %v", len(changes), flapped)
}
