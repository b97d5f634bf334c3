package routing_test

import (
	"testing"
	"time"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/workers/routing"
)

// TestEditAndRecall: a sender edits or recalls its own message, named
// by client_msg_id, within the windows; each is a new message with its
// own seq naming the target's; others, unknown targets, edits of edits
// and late ones are refused; a retry of an accepted edit is a repeat,
// even after the window.
func TestEditAndRecall(t *testing.T) {
	t.Parallel()
	store := newWorld(t)
	h, rec := newHandler(t, routing.Config{}, store)
	lobby := &topicpb.Submitted_Room{Room: "lobby"}
	send := func(h *routing.Handler, sub *topicpb.Submitted) {
		t.Helper()
		sub.Origin, sub.RequestId = origin, 1
		if err := handle(t, h, sub); err != nil {
			t.Fatal(err)
		}
	}
	accepted := func(h *routing.Handler, sub *topicpb.Submitted) *clientpb.Message {
		t.Helper()
		send(h, sub)
		r, d := routedAndResult(t, rec)
		if d.GetFrame().GetSendResult().GetSeq() != r.GetMessage().GetSeq() {
			t.Fatalf("answer %v for %v", d, r)
		}
		return r.GetMessage()
	}
	refused := func(h *routing.Handler, sub *topicpb.Submitted) clientpb.Error_Code {
		t.Helper()
		send(h, sub)
		out := rec.Take()
		if len(out) != 1 {
			t.Fatalf("published %d messages for a refusal", len(out))
		}
		d, err := topics.Deliveries.Decode(out[0].Msg)
		if err != nil {
			t.Fatal(err)
		}
		return d.GetFrame().GetError().GetCode()
	}

	orig := accepted(h, &topicpb.Submitted{Sender: "alice", To: lobby, ClientMsgId: "m1", Body: []byte("helo")})
	edit := accepted(h, &topicpb.Submitted{Sender: "alice", To: lobby, ClientMsgId: "e1", Body: []byte("hello"), Edits: "m1"})
	if edit.GetEdits() != orig.GetSeq() || edit.GetSeq() != orig.GetSeq()+1 || string(edit.GetBody()) != "hello" || edit.GetRecalls() != 0 {
		t.Fatalf("edit %v of %v", edit, orig)
	}
	for _, tt := range []struct {
		name string
		sub  *topicpb.Submitted
		want clientpb.Error_Code
	}{
		{"another's message", &topicpb.Submitted{Sender: "bob", To: lobby, ClientMsgId: "b1", Edits: "m1"}, clientpb.Error_UNKNOWN_MESSAGE},
		{"an unknown message", &topicpb.Submitted{Sender: "alice", To: lobby, ClientMsgId: "e2", Edits: "nope"}, clientpb.Error_UNKNOWN_MESSAGE},
		{"an edit", &topicpb.Submitted{Sender: "alice", To: lobby, ClientMsgId: "e3", Edits: "e1"}, clientpb.Error_UNKNOWN_MESSAGE},
		{"another conversation", &topicpb.Submitted{Sender: "alice", To: &topicpb.Submitted_User{User: "bob"}, ClientMsgId: "e4", Edits: "m1"}, clientpb.Error_UNKNOWN_MESSAGE},
		{"a recall with a body", &topicpb.Submitted{Sender: "alice", To: lobby, ClientMsgId: "r0", Recalls: "m1", Body: []byte("x")}, clientpb.Error_INVALID},
		{"both", &topicpb.Submitted{Sender: "alice", To: lobby, ClientMsgId: "r0", Recalls: "m1", Edits: "m1"}, clientpb.Error_INVALID},
		{"trusted", &topicpb.Submitted{Sender: "alice", Trusted: true, To: lobby, ClientMsgId: "r0", Recalls: "m1"}, clientpb.Error_INVALID},
	} {
		if got := refused(h, tt.sub); got != tt.want {
			t.Errorf("edit of %s: %v, want %v", tt.name, got, tt.want)
		}
	}

	// Past the windows: refused, but a retry of the accepted edit is
	// answered as the repeat it is.
	time.Sleep(5 * time.Millisecond)
	lateRec := func(sub *topicpb.Submitted) *topicpb.Delivery {
		t.Helper()
		h2, r2 := newHandler(t, routing.Config{EditWindow: time.Millisecond, RecallWindow: time.Millisecond}, store)
		sub.Origin, sub.RequestId = origin, 1
		if err := handle(t, h2, sub); err != nil {
			t.Fatal(err)
		}
		out := r2.Take()
		d, err := topics.Deliveries.Decode(out[len(out)-1].Msg)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if d := lateRec(&topicpb.Submitted{Sender: "alice", To: lobby, ClientMsgId: "r1", Recalls: "m1"}); d.GetFrame().GetError().GetCode() != clientpb.Error_TOO_LATE {
		t.Errorf("late recall: %v", d)
	}
	if d := lateRec(&topicpb.Submitted{Sender: "alice", To: lobby, ClientMsgId: "e5", Edits: "m1", Body: []byte("x")}); d.GetFrame().GetError().GetCode() != clientpb.Error_TOO_LATE {
		t.Errorf("late edit: %v", d)
	}
	if d := lateRec(&topicpb.Submitted{Sender: "alice", To: lobby, ClientMsgId: "e1", Body: []byte("hello"), Edits: "m1"}); d.GetFrame().GetSendResult().GetSeq() != edit.GetSeq() {
		t.Errorf("retry of the edit after the window: %v, want its first answer (seq %d)", d, edit.GetSeq())
	}

	// Within the window, a recall.
	recall := accepted(h, &topicpb.Submitted{Sender: "alice", To: lobby, ClientMsgId: "r2", Recalls: "m1"})
	if recall.GetRecalls() != orig.GetSeq() || recall.GetEdits() != 0 || recall.GetSeq() != edit.GetSeq()+1 {
		t.Fatalf("recall %v of %v", recall, orig)
	}
}
