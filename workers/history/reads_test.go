package history_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/workers/history"
)

// connected is world with sessions: alice on c1/a1 and c2/a2, bob on
// c1/b1, alice's c1/a1 joined to lobby; dm:alice:bob and lobby at seq 5.
func connected(t *testing.T) *directory.Store {
	t.Helper()
	d := world(t)
	ctx := context.Background()
	for _, s := range []directory.Session{{Comet: "c1", Conn: "a1", User: "alice"}, {Comet: "c2", Conn: "a2", User: "alice"}, {Comet: "c1", Conn: "b1", User: "bob"}} {
		if err := d.OpenSession(ctx, s, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.JoinRoom(ctx, directory.SessionRef{Comet: "c1", Conn: "a1"}, "alice", "lobby"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"dm:alice:bob", "room:lobby"} {
		if err := d.RaiseSeq(ctx, c, 5); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// handle passes req through h and returns what it published, as
// "topic target frame" lines, sorted.
func handle(t *testing.T, h *history.Handler, rec *testinfra.Recorder, req *topicpb.HistoryRequest) []string {
	t.Helper()
	msg, err := topics.HistoryRequests.Encode(req)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Pipeline().Handle(msg); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range rec.Take() {
		d, err := topics.Deliveries.Decode(p.Msg)
		if err != nil {
			t.Fatal(err)
		}
		target := fmt.Sprint(d.GetConns())
		if d.GetRoom() != "" {
			target = "room " + d.GetRoom()
		}
		f := d.GetFrame()
		var what string
		switch {
		case f.GetReadUpdate() != nil:
			u := f.GetReadUpdate()
			what = fmt.Sprintf("read %s %s %d", u.GetConversation(), u.GetUser(), u.GetSeq())
		case f.GetTyping() != nil:
			what = fmt.Sprintf("typing %s %s", f.GetTyping().GetConversation(), f.GetTyping().GetUser())
		case f.GetError() != nil:
			what = f.GetError().GetCode().String()
		}
		out = append(out, fmt.Sprintf("%s %s #%d %s", p.Topic, target, f.GetRequestId(), what))
	}
	slices.Sort(out)
	return out
}

func TestAck(t *testing.T) {
	t.Parallel()
	a1 := &topicpb.Session{Comet: "c1", Conn: "a1"}
	ack := func(user string, s *topicpb.Session, conv string, seq uint64) *topicpb.HistoryRequest {
		return &topicpb.HistoryRequest{Session: s, RequestId: 9, User: user, Ack: &clientpb.Ack{Conversation: conv, Seq: seq}}
	}
	steps := []struct {
		name string
		req  *topicpb.HistoryRequest
		want []string
	}{
		{"1:1: answer, other device, receipt", ack("alice", a1, "dm:alice:bob", 3), []string{
			"deliver.c1 [a1] #9 read dm:alice:bob alice 3",
			"deliver.c1 [b1] #0 read dm:alice:bob alice 3",
			"deliver.c2 [a2] #0 read dm:alice:bob alice 3",
		}},
		{"going back: answered with the position, nobody told", ack("alice", a1, "dm:alice:bob", 2), []string{
			"deliver.c1 [a1] #9 read dm:alice:bob alice 3",
		}},
		{"past the latest seq: the latest", ack("alice", &topicpb.Session{Comet: "c2", Conn: "a2"}, "dm:alice:bob", 50), []string{
			"deliver.c1 [a1 b1] #0 read dm:alice:bob alice 5",
			"deliver.c2 [a2] #9 read dm:alice:bob alice 5",
		}},
		{"room, receipts off: own devices only", ack("alice", a1, "room:lobby", 4), []string{
			"deliver.c1 [a1] #9 read room:lobby alice 4",
			"deliver.c2 [a2] #0 read room:lobby alice 4",
		}},
		{"not a party", ack("carol", &topicpb.Session{Comet: "c1", Conn: "k"}, "dm:alice:bob", 1), []string{"deliver.c1 [k] #9 NOT_MEMBER"}},
		{"not a member", ack("bob", &topicpb.Session{Comet: "c1", Conn: "b1"}, "room:lobby", 1), []string{"deliver.c1 [b1] #9 NOT_MEMBER"}},
		{"disabled", ack("mallory", &topicpb.Session{Comet: "c1", Conn: "m"}, "room:lobby", 1), []string{"deliver.c1 [m] #9 UNKNOWN_USER"}},
	}
	rec := &testinfra.Recorder{}
	h := testinfra.Must(history.New(history.Config{}, openStore(t), connected(t), rec, nil))(t)
	for _, st := range steps {
		if got := handle(t, h, rec, st.req); !slices.Equal(got, st.want) {
			t.Errorf("%s:\n got %q\nwant %q", st.name, got, st.want)
		}
	}

	// With room receipts, the room's comets hear of it too.
	rec = &testinfra.Recorder{}
	h = testinfra.Must(history.New(history.Config{RoomReceipts: true}, openStore(t), connected(t), rec, nil))(t)
	want := []string{
		"deliver.c1 [a1] #9 read room:lobby alice 2",
		"deliver.c1 room lobby #0 read room:lobby alice 2",
		"deliver.c2 [a2] #0 read room:lobby alice 2",
	}
	if got := handle(t, h, rec, ack("alice", a1, "room:lobby", 2)); !slices.Equal(got, want) {
		t.Errorf("room receipts:\n got %q\nwant %q", got, want)
	}
}

func TestTyping(t *testing.T) {
	t.Parallel()
	typing := func(user, conv string) *topicpb.HistoryRequest {
		return &topicpb.HistoryRequest{Session: &topicpb.Session{Comet: "c9", Conn: "x"}, User: user, Typing: &clientpb.Typing{Conversation: conv}}
	}
	tests := []struct {
		name  string
		limit int
		req   *topicpb.HistoryRequest
		want  []string
	}{
		{"1:1: the other party", 0, typing("alice", "dm:alice:bob"), []string{"deliver.c1 [b1] #0 typing dm:alice:bob alice"}},
		{"room within the limit", 0, typing("alice", "room:lobby"), []string{"deliver.c1 room lobby #0 typing room:lobby alice"}},
		{"room, limit off", -1, typing("alice", "room:lobby"), nil},
		{"not a party: dropped", 0, typing("carol", "dm:alice:bob"), nil},
		{"disabled: dropped", 0, typing("mallory", "room:lobby"), nil},
		{"broadcast: dropped", 0, typing("alice", "broadcast"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &testinfra.Recorder{}
			h := testinfra.Must(history.New(history.Config{NotifyLimit: tt.limit}, openStore(t), connected(t), rec, nil))(t)
			if got := handle(t, h, rec, tt.req); !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
