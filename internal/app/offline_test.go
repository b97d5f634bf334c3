package app

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"

	"github.com/laneim/laneim/examples/pushnotify"
	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/wiring"
)

// TestE2EOfflineNotifications: messages to users without a connection
// reach the example push handler, deployed as its own process on the
// cluster's broker, coalesced to one per user and conversation; users
// online are not notified.
func TestE2EOfflineNotifications(t *testing.T) {
	t.Parallel()
	c := startCluster(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var mu sync.Mutex
	var got []string
	push := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var n pushnotify.Notification
		if err := json.Unmarshal(b, &n); err != nil {
			http.Error(w, "bad", http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, n.User+" "+n.Conversation+" "+n.Sender)
		mu.Unlock()
	}))
	defer push.Close()
	app := fxtest.New(t,
		fx.Supply(wiring.Config{Kafka: c.settings.Infra().Kafka}, slog.New(slog.DiscardHandler), pushnotify.Config{URL: push.URL, Window: time.Hour}),
		wiring.Module,
		pushnotify.Module,
	)
	app.RequireStart()
	defer app.RequireStop()

	// alice and bob online; carol, dave, erin and mallory (lobby members) not.
	alice, _ := c.login("alice"), c.login("bob")
	for range 3 {
		if _, err := alice.SendUser(ctx, "carol", []byte("psst")); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.SendRoom(ctx, "dev", []byte("to bob, online")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := alice.SendUser(ctx, "bob", []byte("online")); err != nil {
		t.Fatal(err)
	}
	want := []string{"carol dm:alice:carol alice"}
	testinfra.Eventually(t, 30*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(got) < len(want) {
			return io.ErrUnexpectedEOF
		}
		return nil
	}, "carol notified")
	// A room message: its offline members, once each, later ones coalesced.
	for range 3 {
		if _, err := alice.SendRoom(ctx, "lobby", []byte("all")); err != nil {
			t.Fatal(err)
		}
	}
	// mallory, a member disabled, is offline too: notices name members
	// without checking accounts (the push service knows its users).
	want = append(want, "carol room:lobby alice", "dave room:lobby alice", "erin room:lobby alice", "mallory room:lobby alice")
	slices.Sort(want)
	testinfra.Eventually(t, 30*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(got) < len(want) {
			return io.ErrUnexpectedEOF
		}
		return nil
	}, "lobby's offline members notified")
	// A last message, then compare: a notice that should have been
	// coalesced but was not would show as one more.
	if _, err := alice.SendUser(ctx, "dave", []byte("last")); err != nil {
		t.Fatal(err)
	}
	want = append(want, "dave dm:alice:dave alice")
	slices.Sort(want)
	testinfra.Eventually(t, 30*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(got) < len(want) {
			return io.ErrUnexpectedEOF
		}
		return nil
	}, "dave notified")
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("notified %q, want %q", got, want)
	}
}
