package presence_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/wiring/pipeline"
	"github.com/laneim/laneim/workers/presence"
)

// fixture returns a presence handler on the demo directory. Presence
// changes are not coalesced unless cfg asks (TestPresenceFlappingIsCoalesced).
func fixture(t *testing.T, cfg presence.Config) (*presence.Handler, *directory.Store, *testinfra.Recorder) {
	t.Helper()
	if cfg.PresenceWindow == 0 {
		cfg.PresenceWindow = -1
	}
	store := testinfra.DemoDirectory(t)
	rec := &testinfra.Recorder{}
	return testinfra.Must(presence.New(cfg, store, rec, slog.New(slog.DiscardHandler)))(t), store, rec
}

func event(t *testing.T, h *presence.Handler, ev *topicpb.SessionEvent) {
	t.Helper()
	msg, err := topics.SessionEvents.Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Pipeline().Handle(msg); err != nil {
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

// TestStaleLoginSkipped: a login the login worker accepted more than
// pipeline.StaleLogin ago, or one past its comet's deadline, opens no
// session and gets no answer, alone or in a batch with a fresh one, which
// is served (its comet answered the stale one UNAVAILABLE; serving it fed
// a retry storm).
func TestStaleLoginSkipped(t *testing.T) {
	h, store, rec := fixture(t, presence.Config{})
	ctx := context.Background()
	old := time.Now().Add(-pipeline.StaleLogin - time.Second).UnixMilli()
	event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_OPENED, Session: sess("c1", "a1"), User: "alice", RequestId: 1, TimeUnixMs: old})
	if d := deliveries(t, rec); len(d) != 0 {
		t.Fatalf("a stale login was answered: %v", d)
	}
	if err := h.HandleBatch(ctx, []*topicpb.SessionEvent{
		{Kind: topicpb.SessionEvent_OPENED, Session: sess("c1", "a2"), User: "alice", RequestId: 2, TimeUnixMs: old},
		{Kind: topicpb.SessionEvent_OPENED, Session: sess("c1", "a3"), User: "alice", RequestId: 4, TimeUnixMs: time.Now().Add(-5 * time.Second).UnixMilli(), DeadlineUnixMs: time.Now().Add(-time.Millisecond).UnixMilli()},
		{Kind: topicpb.SessionEvent_OPENED, Session: sess("c1", "b1"), User: "bob", RequestId: 3, TimeUnixMs: time.Now().UnixMilli(), DeadlineUnixMs: time.Now().Add(5 * time.Second).UnixMilli()},
	}); err != nil {
		t.Fatal(err)
	}
	d := deliveries(t, rec)[topics.Delivery("c1")]
	if len(d) != 1 || d[0].GetControl().GetAuthenticate() != "bob" {
		t.Fatalf("answers %v, want bob's login only", d)
	}
	if refs, _ := store.UserSessions(ctx, "alice"); len(refs) != 0 {
		t.Fatalf("alice's sessions after stale logins: %v", refs)
	}
}

func TestLoginJoinLeaveClose(t *testing.T) {
	h, store, rec := fixture(t, presence.Config{})
	ctx := context.Background()
	// Two messages in the lobby, one in a 1:1 conversation of alice's.
	dm := topics.DirectConversation("alice", "bob")
	for _, c := range []string{"room:lobby", "room:lobby", dm} {
		if _, err := store.Assign(ctx, c, "bob", "", func() string { return "id" }); err != nil {
			t.Fatal(err)
		}
	}
	if err := store.AddConversation(ctx, "alice", dm); err != nil {
		t.Fatal(err)
	}

	event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_OPENED, Session: sess("c1", "a1"), User: "alice", RequestId: 1})
	d := deliveries(t, rec)[topics.Delivery("c1")]
	if len(d) != 1 || d[0].GetControl().GetAuthenticate() != "alice" || len(d[0].GetConns()) != 1 || d[0].GetConns()[0] != "a1" {
		t.Fatalf("login reply %v", d)
	}
	res := d[0].GetFrame().GetLoginResult()
	if !res.GetOk() || res.GetUser() != "alice" || res.GetSession() != "c1/a1" || d[0].GetFrame().GetRequestId() != 1 || res.GetProtocolVersion() != 1 || res.GetServerTimeUnixMs() == 0 {
		t.Fatalf("login result %v", res)
	}
	states := map[string]uint64{}
	for _, c := range res.GetConversations() {
		states[c.GetConversation()] = c.GetLatestSeq()
	}
	if want := map[string]uint64{"room:lobby": 2, "room:dev": 0, dm: 1}; fmt.Sprint(states) != fmt.Sprint(want) {
		t.Fatalf("conversations %v, want %v", states, want)
	}
	if refs, _ := store.UserSessions(ctx, "alice"); len(refs) != 1 || refs[0] != (directory.SessionRef{Comet: "c1", Conn: "a1"}) {
		t.Fatalf("alice's sessions after login: %v", refs)
	}
	if on, _ := store.Online(ctx, "alice"); !on["alice"] {
		t.Fatal("alice not online after login")
	}

	tests := []struct {
		room string
		code clientpb.Error_Code
	}{{"nope", clientpb.Error_UNKNOWN_ROOM}, {"ops", clientpb.Error_NOT_MEMBER}, {"a:b", clientpb.Error_INVALID}, {strings.Repeat("r", 65), clientpb.Error_INVALID}}
	for _, tt := range tests {
		event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_JOINED, Session: sess("c1", "a1"), User: "alice", Room: tt.room, RequestId: 2})
		d := deliveries(t, rec)[topics.Delivery("c1")]
		if len(d) != 1 || d[0].GetFrame().GetError().GetCode() != tt.code || d[0].GetControl() != nil {
			t.Fatalf("join %s: %v, want %v", tt.room, d, tt.code)
		}
	}

	// carol is logged in on c3 but not in the lobby: c3 hears nothing of it.
	event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_OPENED, Session: sess("c3", "c1"), User: "carol"})
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
				if topic != topics.Delivery("c1") || d.GetControl().GetJoin() != "lobby" || d.GetFrame().GetRequestId() != 4 || j.GetRoom() != "lobby" || j.GetOnlineCount() != 2 || j.GetLatestSeq() != 2 || j.GetConversation() != "room:lobby" || fmt.Sprint(j.GetOnlineUsers()) != "[alice bob]" {
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
	if joined != 1 || presenceFrames != 2 || len(got[topics.Delivery("c3")]) != 0 {
		t.Fatalf("joined %d presence %d, want 1 and 2 (c1, c2, not c3): %v", joined, presenceFrames, got)
	}

	// bob leaves: no reply (the comet answered), alice's comet hears it.
	event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_LEFT, Session: sess("c2", "b1"), User: "bob", Room: "lobby"})
	if u, c, _ := store.RoomOnline(ctx, "lobby"); u != 1 || c != 1 {
		t.Fatalf("lobby online after bob left = %d users %d conns", u, c)
	}
	got = deliveries(t, rec)
	if len(got) != 1 || len(got[topics.Delivery("c1")]) != 1 {
		t.Fatalf("after leave: %v, want one frame to c1", got)
	}
	if p := got[topics.Delivery("c1")][0].GetFrame().GetPresence(); p.GetUser() != "bob" || p.GetOnline() || p.GetOnlineCount() != 1 {
		t.Fatalf("leave presence %v", p)
	}
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
	var online []string // Joined.online_users of each join, in order
	for _, ds := range deliveries(t, rec) {
		for _, d := range ds {
			if d.GetFrame().GetPresence() != nil {
				frames++
			}
			if j := d.GetFrame().GetJoined(); j != nil {
				online = append(online, fmt.Sprint(j.GetOnlineUsers()))
			}
		}
	}
	if frames != 1 {
		t.Fatalf("%d presence frames, want 1 (the second join makes 2 online, above the limit)", frames)
	}
	// Within the limit Joined lists who is online; above it, nobody.
	if fmt.Sprint(online) != "[[alice] []]" {
		t.Fatalf("Joined.online_users of the two joins: %v, want [alice] then none", online)
	}
}

func TestSweeperExpiresSilentSessions(t *testing.T) {
	// alice's heartbeats, one per poll below, must come within SessionTTL
	// of each other, on a loaded CI machine too.
	h, store, rec := fixture(t, presence.Config{SessionTTL: time.Second, SweepInterval: 50 * time.Millisecond})
	ctx := context.Background()
	for _, u := range []string{"alice", "bob"} {
		event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_OPENED, Session: sess("c1", u), User: u})
		event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_JOINED, Session: sess("c1", u), User: u, Room: "lobby"})
	}
	rec.Take()
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
	// The sweep tells bob's comet to close his connection (a frozen
	// comet that thaws must not keep it open and deaf), then the lobby's
	// remaining comet that bob went (it publishes just after the counts
	// change, so poll for both).
	var frames []*topicpb.Delivery
	testinfra.Eventually(t, 5*time.Second, func() bool {
		frames = append(frames, deliveries(t, rec)[topics.Delivery("c1")]...)
		return len(frames) >= 2
	}, "no close and presence frame from the sweep")
	if len(frames) != 2 {
		t.Fatalf("sweep deliveries %v, want a close and a presence frame", frames)
	}
	if d := frames[0]; fmt.Sprint(d.GetConns()) != "[bob]" || !strings.Contains(d.GetControl().GetClose(), "session expired") {
		t.Fatalf("sweep's first delivery %v, want bob's connection closed as expired", d)
	}
	if d, p := frames[1], frames[1].GetFrame().GetPresence(); p.GetUser() != "bob" || p.GetOnline() || p.GetOnlineCount() != 1 || d.GetRoom() != "lobby" {
		t.Fatalf("sweep presence %v", d)
	}
}

// TestLoginResultIsBounded: a LoginResult lists the user's rooms, then
// its most recent 1:1 conversations, at most LoginConversations of them
// and at most directory.MaxConversationBytes, and says when more exist.
func TestLoginResultIsBounded(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		limit    int // Config.LoginConversations
		direct   int // alice's 1:1 conversations
		idLen    int // length of the other users' ids
		want     int // states listed; -1: cut by the byte budget
		wantMore bool
	}{
		{"all of a few", 0, 3, 10, 2 + 3, false},
		{"exactly the limit", 5, 3, 10, 5, false},
		{"over the limit", 10, 25, 10, 10, true},
		{"default limit", 0, 1200, 10, 1000, true},
		{"byte budget", 0, 1200, 300, -1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h, store, rec := fixture(t, presence.Config{LoginConversations: tt.limit})
			ctx := context.Background()
			base := time.UnixMilli(1_700_000_000_000)
			var newest string
			for i := range tt.direct {
				newest = topics.DirectConversation("alice", fmt.Sprintf("%0*d", tt.idLen, i))
				if err := store.AddConversationAt(ctx, "alice", newest, base.Add(time.Duration(i)*time.Second)); err != nil {
					t.Fatal(err)
				}
			}
			event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_OPENED, Session: sess("c1", "a1"), User: "alice", RequestId: 1})
			d := deliveries(t, rec)[topics.Delivery("c1")]
			if len(d) != 1 {
				t.Fatalf("login replies %v", d)
			}
			res := d[0].GetFrame().GetLoginResult()
			states := res.GetConversations()
			switch {
			case tt.want >= 0 && len(states) != tt.want:
				t.Errorf("%d conversations, want %d", len(states), tt.want)
			case tt.want < 0 && (len(states) >= 1000 || len(states) < 500):
				t.Errorf("%d conversations, want the byte budget to cut between 500 and 1,000", len(states))
			}
			if res.GetMoreConversations() != tt.wantMore || (res.GetConversationsCursor() != "") != tt.wantMore {
				t.Errorf("more %v cursor %q, want more %v", res.GetMoreConversations(), res.GetConversationsCursor(), tt.wantMore)
			}
			if size := proto.Size(d[0]); size > directory.MaxConversationBytes+1024 {
				t.Errorf("delivery of %d bytes", size)
			}
			// Rooms first, then the most recent 1:1 conversation.
			if len(states) >= 3 && (states[0].GetConversation() != "room:dev" || states[1].GetConversation() != "room:lobby" || states[2].GetConversation() != newest) {
				t.Errorf("listed %v first", states[:3])
			}
		})
	}
}

func TestUndecodableIsPermanent(t *testing.T) {
	h, _, _ := fixture(t, presence.Config{})
	if err := h.Pipeline().Handle(message.NewMessage("x", []byte{0xff})); !pipeline.IsPermanent(err) {
		t.Fatalf("err = %v", err)
	}
}

// TestJoinOfAClosingSessionLeavesNothing: a join that races with the
// session's close (the sweeper expiring it) takes itself back.
func TestJoinOfAClosingSessionLeavesNothing(t *testing.T) {
	h, store, rec := fixture(t, presence.Config{})
	ctx := context.Background()
	event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_OPENED, Session: sess("c1", "a1"), User: "alice"})
	ref := directory.SessionRef{Comet: "c1", Conn: "a1"}
	if _, _, ok, err := store.CloseSession(ctx, ref); err != nil || !ok {
		t.Fatal(err)
	}
	rec.Take()
	for _, conn := range []string{"a1", "never-opened"} {
		event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_JOINED, Session: sess("c1", conn), User: "alice", Room: "lobby", RequestId: 5})
	}
	if users, conns, _ := store.RoomOnline(ctx, "lobby"); users != 0 || conns != 0 {
		t.Fatalf("lobby has %d users on %d connections after joins of dead sessions", users, conns)
	}
	if comets, _ := store.RoomComets(ctx, "lobby"); len(comets) != 0 {
		t.Fatalf("lobby still routed to %v", comets)
	}
	if out := rec.Take(); len(out) != 0 {
		t.Fatalf("answered a dead session: %v", out)
	}
}

// online opens a session of user on comet/conn and joins it to rooms.
func online(t *testing.T, h *presence.Handler, comet, conn, user string, rooms ...string) {
	t.Helper()
	event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_OPENED, Session: sess(comet, conn), User: user})
	for _, r := range rooms {
		event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_JOINED, Session: sess(comet, conn), User: user, Room: r})
	}
}

// presenceFrames returns the PresenceChange frames per comet, and fails on
// any delivery that is not one.
func presenceFrames(t *testing.T, got map[string][]*topicpb.Delivery) map[string][]*clientpb.PresenceChange {
	t.Helper()
	out := map[string][]*clientpb.PresenceChange{}
	for topic, ds := range got {
		for _, d := range ds {
			p := d.GetFrame().GetPresence()
			if p == nil || d.GetControl() != nil || d.GetRoom() != p.GetRoom() {
				t.Fatalf("unexpected delivery on %s: %v", topic, d)
			}
			out[topic] = append(out[topic], p)
		}
	}
	return out
}

// TestMembershipRevoked: a membership the system of record took away
// leaves the room like the client's own Leave, on every connection of the
// user that is in the room, and the room hears the user went.
func TestMembershipRevoked(t *testing.T) {
	t.Parallel()
	h, store, rec := fixture(t, presence.Config{})
	ctx := context.Background()
	online(t, h, "c1", "a1", "alice", "lobby", "dev")
	online(t, h, "c2", "a2", "alice", "lobby")
	online(t, h, "c2", "a3", "alice", "dev") // not in the lobby
	online(t, h, "c3", "b1", "bob", "lobby")
	online(t, h, "c4", "d1", "dave") // in no room
	rec.Take()

	if err := store.RemoveMember(ctx, "lobby", "alice"); err != nil { // binlogsync's part
		t.Fatal(err)
	}
	revoke := &topicpb.SessionEvent{Kind: topicpb.SessionEvent_MEMBERSHIP_REVOKED, User: "alice", Room: "lobby", Reason: "membership removed"}
	event(t, h, revoke)
	got := deliveries(t, rec)
	for _, want := range []struct{ comet, conn string }{{"c1", "a1"}, {"c2", "a2"}} {
		ds := got[topics.Delivery(want.comet)]
		if len(ds) != 1 {
			t.Fatalf("%s got %v, want one Left", want.comet, ds)
		}
		d := ds[0]
		if fmt.Sprint(d.GetConns()) != "["+want.conn+"]" || d.GetControl().GetLeave() != "lobby" || d.GetControl().GetClose() != "" ||
			d.GetFrame().GetLeft().GetRoom() != "lobby" {
			t.Fatalf("%s/%s got %v, want Left{lobby} with control leave", want.comet, want.conn, d)
		}
		delete(got, topics.Delivery(want.comet))
	}
	// Only bob's comet is left in the lobby: it hears alice went, once.
	ps := presenceFrames(t, got)
	if p := ps[topics.Delivery("c3")]; len(ps) != 1 || len(p) != 1 || p[0].GetUser() != "alice" || p[0].GetOnline() || p[0].GetRoom() != "lobby" || p[0].GetOnlineCount() != 1 {
		t.Fatalf("presence frames %v, want one alice offline in the lobby to c3", ps)
	}
	if users, conns, _ := store.RoomOnline(ctx, "lobby"); users != 1 || conns != 1 {
		t.Fatalf("lobby has %d users on %d connections, want bob alone", users, conns)
	}
	if comets, _ := store.RoomComets(ctx, "lobby"); fmt.Sprint(comets) != "[c3]" {
		t.Fatalf("lobby routed to %v, want [c3]", comets)
	}
	// The rest of alice's presence is untouched.
	if users, conns, _ := store.RoomOnline(ctx, "dev"); users != 1 || conns != 2 {
		t.Fatalf("dev has %d users on %d connections, want alice on 2", users, conns)
	}
	if refs, _ := store.UserSessions(ctx, "alice"); len(refs) != 3 {
		t.Fatalf("alice's sessions %v, want all 3 open", refs)
	}

	// A redelivery, and a revocation for a user with no connection in the
	// room, do nothing.
	event(t, h, revoke)
	event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_MEMBERSHIP_REVOKED, User: "dave", Room: "lobby"})
	event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_MEMBERSHIP_REVOKED, User: "nobody", Room: "lobby"})
	if out := rec.Take(); len(out) != 0 {
		t.Fatalf("redelivered revocation published %d messages", len(out))
	}
	if users, conns, _ := store.RoomOnline(ctx, "lobby"); users != 1 || conns != 1 {
		t.Fatalf("after redelivery the lobby has %d users on %d connections", users, conns)
	}
}

// TestMembershipRevokedRetriesAfterAFailedReply: the connection is answered
// before its entry is removed, so a retry after a failed publish still
// takes it out and tells its comet.
func TestMembershipRevokedRetriesAfterAFailedReply(t *testing.T) {
	t.Parallel()
	h, store, rec := fixture(t, presence.Config{})
	ctx := context.Background()
	online(t, h, "c1", "b1", "bob", "lobby")
	rec.Take()
	msg, err := topics.SessionEvents.Encode(&topicpb.SessionEvent{Kind: topicpb.SessionEvent_MEMBERSHIP_REVOKED, User: "bob", Room: "lobby"})
	if err != nil {
		t.Fatal(err)
	}
	rec.Err = errors.New("kafka down")
	if err := h.Pipeline().Handle(msg); err == nil || pipeline.IsPermanent(err) {
		t.Fatalf("handle with kafka down = %v, want a transient error", err)
	}
	if in, _ := store.InRoom(ctx, directory.SessionRef{Comet: "c1", Conn: "b1"}, "lobby"); !in {
		t.Fatal("bob left the lobby in Redis though his comet was never told")
	}
	rec.Err = nil
	if err := h.Pipeline().Handle(msg); err != nil {
		t.Fatal(err)
	}
	d := deliveries(t, rec)[topics.Delivery("c1")]
	if len(d) != 1 || d[0].GetControl().GetLeave() != "lobby" || d[0].GetFrame().GetLeft().GetRoom() != "lobby" {
		t.Fatalf("retry delivered %v, want Left{lobby} with control leave", d)
	}
	if users, _, _ := store.RoomOnline(ctx, "lobby"); users != 0 {
		t.Fatalf("lobby has %d users after the retry", users)
	}
}

// TestUserRevoked: a user the system of record disabled or deleted has
// every connection closed with the reason, and each room hears it went.
func TestUserRevoked(t *testing.T) {
	t.Parallel()
	h, store, rec := fixture(t, presence.Config{})
	ctx := context.Background()
	online(t, h, "c1", "a1", "alice", "lobby", "dev")
	online(t, h, "c2", "a2", "alice", "lobby")
	online(t, h, "c3", "b1", "bob", "lobby", "dev")
	online(t, h, "c4", "d1", "dave", "lobby")
	rec.Take()

	revoke := &topicpb.SessionEvent{Kind: topicpb.SessionEvent_USER_REVOKED, User: "alice", Reason: "account disabled"}
	event(t, h, revoke)
	got := deliveries(t, rec)
	for _, want := range []struct{ comet, conn string }{{"c1", "a1"}, {"c2", "a2"}} {
		ds := got[topics.Delivery(want.comet)]
		if len(ds) != 1 || fmt.Sprint(ds[0].GetConns()) != "["+want.conn+"]" || ds[0].GetControl().GetClose() != "account disabled" || ds[0].GetFrame() != nil {
			t.Fatalf("%s got %v, want one control close to %s", want.comet, ds, want.conn)
		}
		delete(got, topics.Delivery(want.comet))
	}
	ps := presenceFrames(t, got)
	rooms := map[string][]string{}
	for topic, frames := range ps {
		for _, p := range frames {
			if p.GetUser() != "alice" || p.GetOnline() {
				t.Fatalf("presence %v on %s, want alice offline", p, topic)
			}
			rooms[topic] = append(rooms[topic], fmt.Sprintf("%s:%d", p.GetRoom(), p.GetOnlineCount()))
		}
	}
	for _, r := range rooms {
		sort.Strings(r)
	}
	if want := map[string][]string{topics.Delivery("c3"): {"dev:1", "lobby:2"}, topics.Delivery("c4"): {"lobby:2"}}; fmt.Sprint(rooms) != fmt.Sprint(want) {
		t.Fatalf("presence frames %v, want %v", rooms, want)
	}
	if refs, _ := store.UserSessions(ctx, "alice"); len(refs) != 0 {
		t.Fatalf("alice still has sessions %v", refs)
	}
	if on, _ := store.Online(ctx, "alice"); on["alice"] {
		t.Fatal("alice still online")
	}
	for room, want := range map[string]int{"lobby": 2, "dev": 1} {
		if users, _, _ := store.RoomOnline(ctx, room); users != want {
			t.Fatalf("%s has %d users, want %d", room, users, want)
		}
	}

	// A redelivery, and the CLOSED events the comets publish as they
	// close the connections, do nothing.
	event(t, h, revoke)
	event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_CLOSED, Session: sess("c1", "a1"), User: "alice"})
	event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_CLOSED, Session: sess("c2", "a2"), User: "alice"})
	if out := rec.Take(); len(out) != 0 {
		t.Fatalf("redelivered revocation published %d messages", len(out))
	}
	if users, _, _ := store.RoomOnline(ctx, "lobby"); users != 2 {
		t.Fatalf("after redelivery the lobby has %d users", users)
	}
}

func TestRevocationWithoutItsSubjectIsPermanent(t *testing.T) {
	t.Parallel()
	h, _, _ := fixture(t, presence.Config{})
	for _, ev := range []*topicpb.SessionEvent{
		{Kind: topicpb.SessionEvent_MEMBERSHIP_REVOKED, User: "alice"},
		{Kind: topicpb.SessionEvent_MEMBERSHIP_REVOKED, Room: "lobby"},
		{Kind: topicpb.SessionEvent_USER_REVOKED},
	} {
		msg, err := topics.SessionEvents.Encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Pipeline().Handle(msg); !pipeline.IsPermanent(err) {
			t.Errorf("%v: err = %v, want permanent", ev, err)
		}
	}
}

// TestBannedUserIsRefused: a login that reaches presence after its user
// was disabled or deleted (the login worker checked before the change;
// the USER_REVOKED that followed found no session) is answered
// UNKNOWN_USER and its connection closed, and leaves no session; a
// banned user's Join is refused.
func TestBannedUserIsRefused(t *testing.T) {
	t.Parallel()
	h, store, rec := fixture(t, presence.Config{})
	ctx := context.Background()
	online(t, h, "c1", "a1", "alice", "lobby")
	rec.Take()
	if err := store.DeleteUser(ctx, "carol"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		ev   *topicpb.SessionEvent
		// close: the connection is closed too
		close bool
	}{
		{"login of a disabled user", &topicpb.SessionEvent{Kind: topicpb.SessionEvent_OPENED, Session: sess("c2", "m1"), User: "mallory", RequestId: 7}, true},
		{"login of a deleted user", &topicpb.SessionEvent{Kind: topicpb.SessionEvent_OPENED, Session: sess("c2", "c1"), User: "carol", RequestId: 7}, true},
		{"login of an unknown user", &topicpb.SessionEvent{Kind: topicpb.SessionEvent_OPENED, Session: sess("c2", "z1"), User: "zed", RequestId: 7}, true},
		{"join of a disabled user", &topicpb.SessionEvent{Kind: topicpb.SessionEvent_JOINED, Session: sess("c2", "m1"), User: "mallory", Room: "lobby", RequestId: 7}, false},
		{"join of a deleted user", &topicpb.SessionEvent{Kind: topicpb.SessionEvent_JOINED, Session: sess("c2", "c1"), User: "carol", Room: "lobby", RequestId: 7}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			event(t, h, tt.ev)
			got := deliveries(t, rec)
			ds := got[topics.Delivery("c2")]
			if len(got) != 1 || len(ds) != 1 {
				t.Fatalf("published %v, want one answer to c2 and nothing to the lobby", got)
			}
			d := ds[0]
			if d.GetFrame().GetError().GetCode() != clientpb.Error_UNKNOWN_USER || d.GetFrame().GetRequestId() != 7 || fmt.Sprint(d.GetConns()) != "["+tt.ev.GetSession().GetConn()+"]" {
				t.Fatalf("answer %v, want UNKNOWN_USER to %s", d, tt.ev.GetSession().GetConn())
			}
			if closed := d.GetControl().GetClose() != ""; closed != tt.close || d.GetControl().GetAuthenticate() != "" || d.GetControl().GetJoin() != "" {
				t.Fatalf("control %v, want close %v and nothing else", d.GetControl(), tt.close)
			}
			refs, err := store.UserSessions(ctx, tt.ev.GetUser())
			if err != nil || len(refs) != 0 {
				t.Fatalf("%s's sessions %v, %v; want none", tt.ev.GetUser(), refs, err)
			}
			if on, _ := store.Online(ctx, tt.ev.GetUser()); on[tt.ev.GetUser()] {
				t.Fatalf("%s online", tt.ev.GetUser())
			}
		})
	}
	if users, conns, _ := store.RoomOnline(ctx, "lobby"); users != 1 || conns != 1 {
		t.Fatalf("lobby has %d users, %d connections; want alice's one", users, conns)
	}
}

// TestPresenceFlappingIsCoalesced: alice joins and leaves the lobby 50
// times while bob sits there; bob's comet gets a bounded number of
// PresenceChange frames about alice (at most one per window, plus the
// first), the last one saying she is gone with the right count, and
// nothing more once the window has passed.
func TestPresenceFlappingIsCoalesced(t *testing.T) {
	const window = 200 * time.Millisecond
	h, _, rec := fixture(t, presence.Config{PresenceWindow: window})
	defer h.Stop()
	event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_OPENED, Session: sess("c2", "b1"), User: "bob"})
	event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_JOINED, Session: sess("c2", "b1"), User: "bob", Room: "lobby", RequestId: 1})
	event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_OPENED, Session: sess("c1", "a1"), User: "alice"})
	rec.Take()
	start := time.Now()
	for i := range 50 {
		event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_JOINED, Session: sess("c1", "a1"), User: "alice", Room: "lobby", RequestId: uint64(2 + 2*i)})
		event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_LEFT, Session: sess("c1", "a1"), User: "alice", Room: "lobby", RequestId: uint64(3 + 2*i)})
	}
	flapped := time.Since(start)
	time.Sleep(3 * window) // the last window ends, its change goes out
	// On a loaded machine the held change may go out later: read on until
	// the last one says alice is offline, for at most 10 s.
	var changes []*clientpb.PresenceChange
	for giveUp := time.Now().Add(10 * time.Second); ; time.Sleep(window) {
		for _, d := range deliveries(t, rec)[topics.Delivery("c2")] {
			if p := d.GetFrame().GetPresence(); p != nil {
				if p.GetUser() != "alice" || d.GetRoom() != "lobby" {
					t.Fatalf("presence %v", p)
				}
				changes = append(changes, p)
			}
		}
		if len(changes) > 0 && !changes[len(changes)-1].GetOnline() || time.Now().After(giveUp) {
			break
		}
	}
	// One at once, then at most one per window.
	bound := 2 + int(flapped/window)
	if len(changes) == 0 || len(changes) > bound {
		t.Fatalf("bob's comet got %d presence changes in %v of flapping, want 1 to %d", len(changes), flapped, bound)
	}
	if last := changes[len(changes)-1]; last.GetOnline() || last.GetOnlineCount() != 1 {
		t.Fatalf("last presence change %v, want alice offline, 1 online (bob)", last)
	}
	// Quiet: nothing more comes.
	time.Sleep(2 * window)
	if more := deliveries(t, rec); len(more) != 0 {
		t.Fatalf("after the window: %v", more)
	}
	// A change after a quiet window goes out at once.
	event(t, h, &topicpb.SessionEvent{Kind: topicpb.SessionEvent_JOINED, Session: sess("c1", "a1"), User: "alice", Room: "lobby", RequestId: 200})
	var now []*clientpb.PresenceChange
	for _, d := range deliveries(t, rec)[topics.Delivery("c2")] {
		if p := d.GetFrame().GetPresence(); p != nil {
			now = append(now, p)
		}
	}
	if len(now) != 1 || !now[0].GetOnline() || now[0].GetOnlineCount() != 2 {
		t.Fatalf("join after a quiet window: %v, want one change, alice online, 2 online", now)
	}
}
