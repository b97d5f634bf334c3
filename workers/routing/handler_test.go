package routing_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/wiring/pipeline"
	"github.com/laneim/laneim/workers/routing"
)

// fixture is a routing handler on a real Redis with the demo directory,
// alice online on comets c1 and c2, bob on c3, alice's c1 connection in lobby.
func fixture(t *testing.T) (*routing.Handler, *testinfra.Recorder) {
	t.Helper()
	store := testinfra.DemoDirectory(t)
	ctx := context.Background()
	for _, sess := range []directory.Session{{Comet: "c1", Conn: "a1", User: "alice"}, {Comet: "c2", Conn: "a2", User: "alice"}, {Comet: "c3", Conn: "b1", User: "bob"}} {
		if err := store.OpenSession(ctx, sess, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := store.JoinRoom(ctx, directory.SessionRef{Comet: "c1", Conn: "a1"}, "alice", "lobby"); err != nil {
		t.Fatal(err)
	}
	rec := &testinfra.Recorder{}
	return testinfra.Must(routing.New(routing.Config{MaxBodyBytes: 100}, store, rec, slog.New(slog.DiscardHandler)))(t), rec
}

func submit(t *testing.T, h *routing.Handler, sub *topicpb.Submitted) {
	t.Helper()
	if sub.Origin == nil {
		sub.Origin = &topicpb.Session{Comet: "c9", Conn: "s1"}
	}
	sub.RequestId = 42
	msg, err := topics.Submitted.Encode(sub)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Pipeline().Handle(msg); err != nil {
		t.Fatal(err)
	}
}

func TestRefusals(t *testing.T) {
	tests := []struct {
		name string
		sub  *topicpb.Submitted
		code clientpb.Error_Code
	}{
		{"unknown room", &topicpb.Submitted{Sender: "alice", To: &topicpb.Submitted_Room{Room: "nope"}}, clientpb.Error_UNKNOWN_ROOM},
		{"not a member", &topicpb.Submitted{Sender: "carol", To: &topicpb.Submitted_Room{Room: "dev"}}, clientpb.Error_NOT_MEMBER},
		{"too large", &topicpb.Submitted{Sender: "alice", To: &topicpb.Submitted_Room{Room: "lobby"}, Body: make([]byte, 101)}, clientpb.Error_TOO_LARGE},
		{"unknown user", &topicpb.Submitted{Sender: "alice", To: &topicpb.Submitted_User{User: "zed"}}, clientpb.Error_UNKNOWN_USER},
		{"disabled user", &topicpb.Submitted{Sender: "alice", To: &topicpb.Submitted_User{User: "mallory"}}, clientpb.Error_UNKNOWN_USER},
		{"blocked", &topicpb.Submitted{Sender: "dave", To: &topicpb.Submitted_User{User: "erin"}}, clientpb.Error_BLOCKED},
		{"no recipient", &topicpb.Submitted{Sender: "alice"}, clientpb.Error_INVALID},
		{"untrusted broadcast", &topicpb.Submitted{Sender: "alice", To: &topicpb.Submitted_Broadcast{Broadcast: true}}, clientpb.Error_INVALID},
	}
	h, rec := fixture(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			submit(t, h, tt.sub)
			out := rec.Take()
			if len(out) != 1 || out[0].Topic != topics.Delivery("c9") {
				t.Fatalf("published %v, want one answer to c9", out)
			}
			d, _ := topics.Deliveries.Decode(out[0].Msg)
			if d.GetFrame().GetError().GetCode() != tt.code || d.GetFrame().GetRequestId() != 42 || d.GetConns()[0] != "s1" {
				t.Fatalf("answer %v, want %v", d, tt.code)
			}
		})
	}
}

func routedAndAnswer(t *testing.T, rec *testinfra.Recorder) (*topicpb.Routed, *clientpb.SendResult) {
	t.Helper()
	out := rec.Take()
	if len(out) != 2 || out[0].Topic != topics.Routed.Name || out[1].Topic != topics.Delivery("c9") {
		t.Fatalf("published %v, want routed then answer", out)
	}
	r, err := topics.Routed.Decode(out[0].Msg)
	if err != nil {
		t.Fatal(err)
	}
	d, err := topics.Deliveries.Decode(out[1].Msg)
	if err != nil {
		t.Fatal(err)
	}
	return r, d.GetFrame().GetSendResult()
}

func TestRoomMessage(t *testing.T) {
	h, rec := fixture(t)
	for i := 1; i <= 3; i++ {
		submit(t, h, &topicpb.Submitted{Sender: "bob", ClientMsgId: string(rune('a' + i)), To: &topicpb.Submitted_Room{Room: "lobby"}, Body: []byte("hi")})
		r, res := routedAndAnswer(t, rec)
		m := r.GetMessage()
		if m.GetSeq() != uint64(i) || m.GetConversation() != "room:lobby" || m.GetSender() != "bob" || string(m.GetBody()) != "hi" || m.GetId() == "" {
			t.Fatalf("message %v", m)
		}
		if r.GetRoom() != "lobby" || len(r.GetComets()) != 1 || r.GetComets()[0] != "c1" {
			t.Fatalf("targets room %q comets %v, want lobby on c1", r.GetRoom(), r.GetComets())
		}
		if res.GetSeq() != m.GetSeq() || res.GetMessageId() != m.GetId() || res.GetConversation() != "room:lobby" {
			t.Fatalf("send result %v for %v", res, m)
		}
	}
}

func TestDuplicateGetsSamePlace(t *testing.T) {
	h, rec := fixture(t)
	sub := &topicpb.Submitted{Sender: "alice", ClientMsgId: "m-1", To: &topicpb.Submitted_User{User: "bob"}, Body: []byte("x")}
	submit(t, h, sub)
	first, _ := routedAndAnswer(t, rec)
	submit(t, h, sub)
	again, res := routedAndAnswer(t, rec)
	if again.GetMessage().GetSeq() != first.GetMessage().GetSeq() || again.GetMessage().GetId() != first.GetMessage().GetId() || res.GetSeq() != 1 {
		t.Fatalf("duplicate got %v, first %v", again.GetMessage(), first.GetMessage())
	}
}

func TestDirectMessageTargetsBothUsersComets(t *testing.T) {
	h, rec := fixture(t)
	submit(t, h, &topicpb.Submitted{Sender: "alice", ClientMsgId: "1", To: &topicpb.Submitted_User{User: "bob"}})
	r, _ := routedAndAnswer(t, rec)
	got := map[string]bool{}
	for _, c := range r.GetComets() {
		got[c] = true
	}
	if len(got) != 3 || !got["c1"] || !got["c2"] || !got["c3"] {
		t.Fatalf("comets %v, want c1 c2 c3", r.GetComets())
	}
	if r.GetMessage().GetConversation() != "dm:alice:bob" || len(r.GetUsers()) != 2 {
		t.Fatalf("routed %v", r)
	}
}

func TestTrustedPushSkipsMembershipAndHasNoAnswer(t *testing.T) {
	h, rec := fixture(t)
	msg, _ := topics.Submitted.Encode(&topicpb.Submitted{Sender: "system", Trusted: true, To: &topicpb.Submitted_Room{Room: "dev"}, Body: []byte("notice")})
	if err := h.Pipeline().Handle(msg); err != nil {
		t.Fatal(err)
	}
	out := rec.Take()
	if len(out) != 1 || out[0].Topic != topics.Routed.Name {
		t.Fatalf("published %v, want only the routed message", out)
	}
	msg, _ = topics.Submitted.Encode(&topicpb.Submitted{Sender: "system", Trusted: true, To: &topicpb.Submitted_Broadcast{Broadcast: true}})
	if err := h.Pipeline().Handle(msg); err != nil {
		t.Fatal(err)
	}
	r, _ := topics.Routed.Decode(rec.Take()[0].Msg)
	if !r.GetBroadcast() || len(r.GetComets()) != 3 {
		t.Fatalf("broadcast routed to %v", r.GetComets())
	}
}

func TestUndecodableIsPermanent(t *testing.T) {
	h, _ := fixture(t)
	if err := h.Pipeline().Handle(message.NewMessage("x", []byte{0xff})); !pipeline.IsPermanent(err) {
		t.Fatalf("err = %v", err)
	}
}
