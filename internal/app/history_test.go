package app

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/fx"

	"github.com/laneim/laneim/gateways/api"
	"github.com/laneim/laneim/gateways/comet/client"
	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/apipb"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/msgstore"
)

// syncAll asks for everything after seq, page by page.
func syncAll(t *testing.T, conn *client.Conn, conv string, after uint64) []*clientpb.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []*clientpb.Message
	unavailable := 0
	for range 100 {
		res, err := conn.Do(ctx, &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Sync{Sync: &clientpb.Sync{Conversation: conv, AfterSeq: after, Limit: 7}}})
		if errCode(err) == clientpb.Error_UNAVAILABLE && unavailable < 20 {
			// Asked again, as clients are told to (a worker or the
			// broker coming back, in the fault tests).
			unavailable++
			time.Sleep(250 * time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatalf("sync %s after %d: %v", conv, after, err)
		}
		r := res.GetSyncResult()
		out = append(out, r.GetMessages()...)
		if len(r.GetMessages()) > 0 {
			after = r.GetMessages()[len(r.GetMessages())-1].GetSeq()
		}
		if !r.GetHasMore() {
			return out
		}
	}
	t.Fatal("sync did not end after 100 pages")
	return nil
}

func latestOf(res *clientpb.LoginResult, conv string) uint64 {
	for _, c := range res.GetConversations() {
		if c.GetConversation() == conv {
			return c.GetLatestSeq()
		}
	}
	return 0
}

func TestE2EReconnectCatchesUpExactlyWhatWasMissed(t *testing.T) {
	t.Parallel()
	c := startCluster(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conv := topics.RoomConversation("lobby")
	alice := c.login("alice")
	c.join(alice, "lobby")
	bob := c.login("bob")
	c.join(bob, "lobby")
	for i := range 5 {
		if _, err := alice.SendRoom(ctx, "lobby", []byte(fmt.Sprint("before ", i))); err != nil {
			t.Fatal(err)
		}
	}
	seen := nextMessages(t, bob, conv, 5)
	lastSeen := seen[len(seen)-1].GetSeq()
	bob.Close() // the phone enters a tunnel

	const missed = 23
	for i := range missed {
		if _, err := alice.SendRoom(ctx, "lobby", []byte(fmt.Sprint("missed ", i))); err != nil {
			t.Fatal(err)
		}
	}
	// Messages to bob while he is offline, in a conversation he never had.
	if _, err := c.login("carol").SendUser(ctx, "bob", []byte("call me")); err != nil {
		t.Fatal(err)
	}

	again := c.dial(false)
	var res *clientpb.LoginResult
	var err error
	if res, err = again.Login(ctx, c.token("bob", time.Hour), "phone"); err != nil {
		t.Fatal(err)
	}
	if got := latestOf(res, conv); got != lastSeen+missed {
		t.Fatalf("login says lobby is at %d, want %d", got, lastSeen+missed)
	}
	dm := topics.DirectConversation("bob", "carol")
	if got := latestOf(res, dm); got != 1 {
		t.Fatalf("login says %s is at %d, want 1 (%v)", dm, got, res.GetConversations())
	}
	// Persistence runs beside fan-out: wait until the store has caught up.
	var got []*clientpb.Message
	testinfra.Eventually(t, 20*time.Second, func() error {
		if got = syncAll(t, again, conv, lastSeen); len(got) < missed {
			return fmt.Errorf("caught up %d", len(got))
		}
		return nil
	}, "%d missed messages stored", missed)
	if len(got) != missed {
		t.Fatalf("caught up %d messages, want exactly %d", len(got), missed)
	}
	for i, m := range got {
		if m.GetSeq() != lastSeen+uint64(i)+1 || string(m.GetBody()) != fmt.Sprint("missed ", i) {
			t.Fatalf("catch-up %d = seq %d %q", i, m.GetSeq(), m.GetBody())
		}
	}
	if offline := syncAll(t, again, dm, 0); len(offline) != 1 || string(offline[0].GetBody()) != "call me" {
		t.Fatalf("offline 1:1 messages = %v", offline)
	}
	// Nobody else's conversations.
	if _, err := again.Do(ctx, &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Sync{Sync: &clientpb.Sync{Conversation: "dm:alice:carol"}}}); errCode(err) != clientpb.Error_NOT_MEMBER {
		t.Errorf("sync of someone else's conversation = %v, want NOT_MEMBER", err)
	}
	if _, err := again.Do(ctx, &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Sync{Sync: &clientpb.Sync{Conversation: "room:ops"}}}); errCode(err) != clientpb.Error_NOT_MEMBER {
		t.Errorf("sync of a room bob is not in = %v, want NOT_MEMBER", err)
	}

	// The product's backend pages through the same msgstore.
	pc, closer, err := api.Dial(ctx, c.settings.APIAddr, c.settings.APIToken)
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	newest, err := pc.History(ctx, &apipb.HistoryRequest{Conversation: conv, Limit: 10})
	if err != nil || len(newest.GetMessages()) != 10 || !newest.GetHasMore() || newest.GetMessages()[9].GetSeq() != lastSeen+missed {
		t.Fatalf("api history newest page = %v, %v", newest, err)
	}
	from, err := pc.History(ctx, &apipb.HistoryRequest{Conversation: conv, AfterSeq: 2, Limit: 3})
	if err != nil || len(from.GetMessages()) != 3 || from.GetMessages()[0].GetSeq() != 3 {
		t.Fatalf("api history from seq = %v, %v", from, err)
	}
}

// TestE2EPersistWorkerKilledMidStream stops and restarts the persistence
// worker while messages flow: every message is stored once.
func TestE2EPersistWorkerKilledMidStream(t *testing.T) {
	t.Parallel()
	roles := []Role{Login, Presence, Routing, Fanout, Comet, API}
	// The store's file belongs to one process at a time: only the
	// persistence worker's app opens it.
	storePath := filepath.Join(t.TempDir(), "msgstore.db")
	c := startClusterRoles(t, func(s *Settings) { s.History = "" }, roles)
	persistSettings := c.settings
	persistSettings.History = storePath
	persistSettings.AdminAddr = ""
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	pc, closer, err := api.Dial(ctx, c.settings.APIAddr, c.settings.APIToken)
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	logger := slog.New(slog.DiscardHandler)
	startPersist := func() *fx.App {
		a := fx.New(persistSettings.Options(logger, Persist))
		if err := a.Start(ctx); err != nil {
			t.Fatal(err)
		}
		return a
	}
	const n = 300
	pushed := make(chan error, 1)
	go func() {
		for i := range n {
			if _, err := pc.PushRoom(ctx, &apipb.PushRoomRequest{Room: "lobby", Content: &apipb.Content{Body: []byte(fmt.Sprint(i)), ClientMsgId: fmt.Sprint("p", i)}}); err != nil {
				pushed <- err
				return
			}
		}
		pushed <- nil
	}()
	for round := range 3 {
		a := startPersist()
		time.Sleep(time.Duration(100+50*round) * time.Millisecond) // let it work a little, then kill it
		if err := a.Stop(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-pushed; err != nil {
		t.Fatal(err)
	}
	conv := topics.RoomConversation("lobby")
	// The store's file belongs to one process at a time: run the worker
	// a while, stop it, look, until everything is stored.
	var stored []*clientpb.Message
	testinfra.Eventually(t, 90*time.Second, func() bool {
		a := startPersist()
		time.Sleep(300 * time.Millisecond)
		if err := a.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		b, err := msgstore.OpenBolt(storePath, msgstore.Retention{}, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		if stored, _, err = b.After(ctx, conv, 0, msgstore.MaxPage); err != nil {
			t.Fatal(err)
		}
		return len(stored) >= n
	}, "not every message was stored")
	if len(stored) != n {
		t.Fatalf("stored %d of %d messages", len(stored), n)
	}
	for i, m := range stored {
		if m.GetSeq() != uint64(i+1) {
			t.Fatalf("stored message %d has seq %d: lost or duplicated", i, m.GetSeq())
		}
	}
}
