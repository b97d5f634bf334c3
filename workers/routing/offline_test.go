package routing_test

import (
	"context"
	"slices"
	"testing"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/workers/routing"
)

// withoutNotices splits what was published into offline notices and the rest.
func withoutNotices(out []testinfra.Published) (rest []testinfra.Published, notices []*topicpb.OfflineNotice) {
	for _, p := range out {
		if p.Topic != topics.OfflineNotices.Name {
			rest = append(rest, p)
			continue
		}
		n, err := topics.OfflineNotices.Decode(p.Msg)
		if err != nil {
			panic(err)
		}
		notices = append(notices, n)
	}
	return rest, notices
}

// TestOfflineNotices: a routed message names its offline recipients on
// notifications.offline: the other party of a 1:1 message, the members
// of a small room but the sender; none for rooms over the limit, for
// recipients online, or for broadcasts.
func TestOfflineNotices(t *testing.T) {
	t.Parallel()
	store := newWorld(t)
	ctx := context.Background()
	// lobby: alice and bob online, carol and dave offline.
	if err := store.AddMembers(ctx, []directory.Membership{{Room: "lobby", User: "carol"}, {Room: "lobby", User: "dave"}}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		limit int
		sub   *topicpb.Submitted
		want  []string // nil: no notice
	}{
		{"dm to an offline user", 0, &topicpb.Submitted{Sender: "alice", ClientMsgId: "1", To: &topicpb.Submitted_User{User: "carol"}}, []string{"carol"}},
		{"dm to an online user", 0, &topicpb.Submitted{Sender: "alice", ClientMsgId: "2", To: &topicpb.Submitted_User{User: "bob"}}, nil},
		{"room: the offline members", 0, &topicpb.Submitted{Sender: "alice", ClientMsgId: "3", To: &topicpb.Submitted_Room{Room: "lobby"}}, []string{"carol", "dave"}},
		{"an offline sender is not notified", 0, &topicpb.Submitted{Sender: "carol", ClientMsgId: "4", To: &topicpb.Submitted_Room{Room: "lobby"}}, []string{"dave"}},
		{"room over the limit", 3, &topicpb.Submitted{Sender: "alice", ClientMsgId: "5", To: &topicpb.Submitted_Room{Room: "lobby"}}, nil},
		{"room at the limit", 4, &topicpb.Submitted{Sender: "alice", ClientMsgId: "6", To: &topicpb.Submitted_Room{Room: "lobby"}}, []string{"carol", "dave"}},
		{"broadcast", 0, &topicpb.Submitted{Sender: "system", Trusted: true, To: &topicpb.Submitted_Broadcast{Broadcast: true}}, nil},
		{"room over the limit: the mentioned", 3, &topicpb.Submitted{Sender: "alice", ClientMsgId: "7", To: &topicpb.Submitted_Room{Room: "lobby"}, Mentions: []string{"dave", "bob", "erin", "dave"}}, []string{"dave"}},
	}
	for _, tt := range tests {
		h, rec := newHandler(t, routing.Config{NotifyMembers: tt.limit}, store)
		if err := handle(t, h, tt.sub); err != nil {
			t.Fatal(err)
		}
		rest, notices := withoutNotices(rec.Take())
		if tt.want == nil {
			if len(notices) != 0 {
				t.Errorf("%s: notices %v, want none", tt.name, notices)
			}
			continue
		}
		if len(notices) != 1 || !slices.Equal(notices[0].GetUsers(), tt.want) {
			t.Errorf("%s: notices %v, want one for %v", tt.name, notices, tt.want)
			continue
		}
		r, err := topics.Routed.Decode(rest[0].Msg)
		if err != nil {
			t.Fatal(err)
		}
		if m := notices[0].GetMessage(); m.GetConversation() != r.GetMessage().GetConversation() || m.GetSeq() != r.GetMessage().GetSeq() || m.GetId() != r.GetMessage().GetId() {
			t.Errorf("%s: notice of %v, routed %v", tt.name, m, r.GetMessage())
		}
	}
}

// TestMentions: a message carries the mentioned users who may read it,
// once each, without its sender; too many mentions, or a bad id, are
// refused.
func TestMentions(t *testing.T) {
	t.Parallel()
	store := newWorld(t)
	h, rec := newHandler(t, routing.Config{}, store)
	tests := []struct {
		name string
		sub  *topicpb.Submitted
		want []string
	}{
		{"room: members only", &topicpb.Submitted{Sender: "alice", ClientMsgId: "1", To: &topicpb.Submitted_Room{Room: "lobby"}, Mentions: []string{"bob", "erin", "alice", "bob"}}, []string{"bob"}},
		{"1:1: the other party", &topicpb.Submitted{Sender: "alice", ClientMsgId: "2", To: &topicpb.Submitted_User{User: "carol"}, Mentions: []string{"carol", "bob"}}, []string{"carol"}},
	}
	for _, tt := range tests {
		if err := handle(t, h, tt.sub); err != nil {
			t.Fatal(err)
		}
		rest, notices := withoutNotices(rec.Take())
		r, err := topics.Routed.Decode(rest[0].Msg)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.GetMessage().GetMentions(); !slices.Equal(got, tt.want) {
			t.Errorf("%s: mentions %v, want %v", tt.name, got, tt.want)
		}
		if tt.name == "1:1: the other party" && (len(notices) != 1 || !slices.Equal(notices[0].GetMentioned(), []string{"carol"})) {
			t.Errorf("%s: notices %v, want carol mentioned", tt.name, notices)
		}
	}
	many := make([]string, routing.MaxMentions+1)
	for i := range many {
		many[i] = "bob"
	}
	for _, m := range [][]string{many, {"bad:id"}} {
		if err := handle(t, h, &topicpb.Submitted{Origin: origin, Sender: "alice", ClientMsgId: "x", To: &topicpb.Submitted_Room{Room: "lobby"}, Mentions: m}); err != nil {
			t.Fatal(err)
		}
		out := rec.Take()
		d, err := topics.Deliveries.Decode(out[len(out)-1].Msg)
		if err != nil {
			t.Fatal(err)
		}
		if d.GetFrame().GetError().GetCode() != clientpb.Error_INVALID {
			t.Errorf("%d mentions %.20v: %v, want INVALID", len(m), m, d)
		}
	}
	ctx := context.Background()
	got, err := store.UnreadMentions(ctx, "bob", nil, "room:lobby")
	if err != nil || got["room:lobby"] != 1 {
		t.Errorf("bob's unread mentions %v, %v; want 1 in the lobby", got, err)
	}

	// Once alice recalls the message, it no longer counts for bob.
	if err := handle(t, h, &topicpb.Submitted{Origin: origin, Sender: "alice", ClientMsgId: "r1", To: &topicpb.Submitted_Room{Room: "lobby"}, Recalls: "1"}); err != nil {
		t.Fatal(err)
	}
	if r, _ := routedAndResult(t, rec); r.GetMessage().GetRecalls() == 0 {
		t.Fatalf("recall routed as %v", r.GetMessage())
	}
	got, err = store.UnreadMentions(ctx, "bob", nil, "room:lobby")
	if err != nil || got["room:lobby"] != 0 {
		t.Errorf("bob's unread mentions after the recall %v, %v; want none", got, err)
	}
}
