package presence_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/laneim/laneim/internal/seed"
	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/workers/presence"
)

func fixture(t *testing.T, cfg presence.Config) (*presence.Handler, *directory.Store, *testinfra.Recorder) {
	t.Helper()
	store := directory.New(testinfra.RedisClient(t))
	s, err := seed.Load("../../testdata/seed.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(context.Background(), store); err != nil {
		t.Fatal(err)
	}
	rec := &testinfra.Recorder{}
	return presence.New(cfg, store, rec, slog.New(slog.DiscardHandler)), store, rec
}

func event(t *testing.T, h *presence.Handler, ev *topicpb.SessionEvent) {
	t.Helper()
	msg, err := topics.SessionEvents.Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Handle(msg); err != nil {
		t.Fatal(err)
	}
}

func sess(comet, conn string) *topicpb.Session { return &topicpb.Session{Comet: comet, Conn: conn} }

// deliveries decodes what was published, keyed by topic.
func deliveries(t *testing.T, rec *testinfra.Recorder) map[string][]*topicpb.Delivery {
	t.Helper()
	out := map[string][]*topicpb.Delivery{}
	for _, p := range rec.Take() {
		d, err := topics.Deliveries.Decode(p.Msg)
		if err != nil {
			t.Fatal(err)
		}
		out[p.Topic] = append(out[p.Topic], d)
	}
	return out
}

func TestLoginJoinLeaveClose(t *testing.T) {
	h, store, rec := fixture(t, presence.Config{})
	ctx := context.Background()

	event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_OPENED, Session: sess("c1", "a1"), User: "alice", RequestId: 1})
	d := deliveries(t, rec)[topics.Delivery("c1")]
	if len(d) != 1 || d[0].GetControl().GetAuthenticate() != "alice" || d[0].GetConns()[0] != "a1" {
		t.Fatalf("login reply %v", d)
	}
	res := d[0].GetFrame().GetLoginResult()
	if !res.GetOk() || res.GetUser() != "alice" || res.GetSession() != "c1/a1" || d[0].GetFrame().GetRequestId() != 1 || len(res.GetConversations()) != 2 {
		t.Fatalf("login result %v", res)
	}
	if on, _ := store.Online(ctx, "alice"); !on["alice"] {
		t.Fatal("alice not online after login")
	}

	tests := []struct {
		room string
		code clientpb.Error_Code
	}{{"nope", clientpb.Error_UNKNOWN_ROOM}, {"ops", clientpb.Error_NOT_MEMBER}}
	for _, tt := range tests {
		event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_JOINED, Session: sess("c1", "a1"), User: "alice", Room: tt.room, RequestId: 2})
		d := deliveries(t, rec)[topics.Delivery("c1")]
		if len(d) != 1 || d[0].GetFrame().GetError().GetCode() != tt.code || d[0].GetControl() != nil {
			t.Fatalf("join %s: %v, want %v", tt.room, d, tt.code)
		}
	}

	event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_OPENED, Session: sess("c2", "b1"), User: "bob"})
	event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_JOINED, Session: sess("c2", "b1"), User: "bob", Room: "lobby", RequestId: 3})
	rec.Take()
	event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_JOINED, Session: sess("c1", "a1"), User: "alice", Room: "lobby", RequestId: 4})
	got := deliveries(t, rec)
	// alice's reply carries the join control; both comets hear she came.
	var joined, presenceFrames int
	for topic, ds := range got {
		for _, d := range ds {
			if j := d.GetFrame().GetJoined(); j != nil {
				joined++
				if topic != topics.Delivery("c1") || d.GetControl().GetJoin() != "lobby" || j.GetOnlineCount() != 2 || j.GetConversation() != "room:lobby" {
					t.Fatalf("joined %v on %s", d, topic)
				}
			}
			if p := d.GetFrame().GetPresence(); p != nil {
				presenceFrames++
				if p.GetUser() != "alice" || !p.GetOnline() || p.GetOnlineCount() != 2 || d.GetRoom() != "lobby" {
					t.Fatalf("presence %v", p)
				}
			}
		}
	}
	if joined != 1 || presenceFrames != 2 {
		t.Fatalf("joined %d presence %d, want 1 and 2 (c1, c2): %v", joined, presenceFrames, got)
	}

	event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_LEFT, Session: sess("c2", "b1"), User: "bob", Room: "lobby"})
	if u, _, _ := store.RoomOnline(ctx, "lobby"); u != 1 {
		t.Fatalf("lobby online after bob left = %d", u)
	}
	rec.Take()
	event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_CLOSED, Session: sess("c1", "a1"), User: "alice"})
	if u, c, _ := store.RoomOnline(ctx, "lobby"); u != 0 || c != 0 {
		t.Fatalf("lobby online after alice closed = %d users %d conns", u, c)
	}
	if on, _ := store.Online(ctx, "alice"); on["alice"] {
		t.Fatal("alice online after close")
	}
}

func TestNoPresenceFramesAboveLimit(t *testing.T) {
	h, _, rec := fixture(t, presence.Config{NotifyLimit: 1})
	for _, u := range []string{"alice", "bob"} {
		event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_OPENED, Session: sess("c1", u), User: u})
		event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_JOINED, Session: sess("c1", u), User: u, Room: "lobby"})
	}
	var frames int
	for _, ds := range deliveries(t, rec) {
		for _, d := range ds {
			if d.GetFrame().GetPresence() != nil {
				frames++
			}
		}
	}
	if frames != 1 {
		t.Fatalf("%d presence frames, want 1 (the second join makes 2 online, above the limit)", frames)
	}
}

func TestSweeperExpiresSilentSessions(t *testing.T) {
	h, store, _ := fixture(t, presence.Config{SessionTTL: 300 * time.Millisecond, SweepInterval: 50 * time.Millisecond})
	ctx := context.Background()
	for _, u := range []string{"alice", "bob"} {
		event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_OPENED, Session: sess("c1", u), User: u})
		event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_JOINED, Session: sess("c1", u), User: u, Room: "lobby"})
	}
	h.Start()
	defer h.Stop()
	// alice's comet keeps reporting her; nobody reports bob.
	testinfra.Eventually(t, 10*time.Second, func() bool {
		event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_HEARTBEAT, Session: &topicpb.Session{Comet: "c1"}, Live: []*topicpb.LiveSession{{Conn: "alice", User: "alice"}}})
		on, _ := store.Online(ctx, "bob")
		users, _, _ := store.RoomOnline(ctx, "lobby")
		return !on["bob"] && users == 1
	}, "bob's session never expired")
	on, _ := store.Online(ctx, "alice")
	users, _, _ := store.RoomOnline(ctx, "lobby")
	if !on["alice"] || users != 1 {
		t.Fatalf("alice online %v, lobby users %d; want alice kept alone", on, users)
	}
}

func TestUndecodableIsPermanent(t *testing.T) {
	h, _, _ := fixture(t, presence.Config{})
	if err := h.Handle(message.NewMessage("x", []byte{0xff})); !wiring.IsPermanent(err) {
		t.Fatalf("err = %v", err)
	}
}
