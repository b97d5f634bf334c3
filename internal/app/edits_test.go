package app

import (
	"context"
	"testing"
	"time"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/topics"
)

// TestE2EEditAndRecall: a sender edits and recalls its own message, named
// by client_msg_id; each is a message of its own, delivered live and
// kept for Sync, naming the seq it applies to. Another user's attempt,
// and an edit past the window, are refused with their codes.
func TestE2EEditAndRecall(t *testing.T) {
	t.Parallel()
	c := startCluster(t, func(s *Settings) { s.RecallWindow = time.Hour })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	alice, bob := c.login("alice"), c.login("bob")
	dm := topics.DirectConversation("alice", "bob")
	send := func(conn interface {
		Send(context.Context, *clientpb.Send) (*clientpb.SendResult, error)
	}, s *clientpb.Send) (*clientpb.SendResult, error) {
		s.To = &clientpb.Send_User{User: "bob"}
		if s.ClientMsgId == "" {
			t.Fatal("no client_msg_id")
		}
		return conn.Send(ctx, s)
	}
	orig, err := send(alice, &clientpb.Send{ClientMsgId: "m1", Body: []byte("helo"), ContentType: "text/plain"})
	if err != nil {
		t.Fatal(err)
	}
	edit, err := send(alice, &clientpb.Send{ClientMsgId: "m1-edit", Body: []byte("hello"), ContentType: "text/plain", Edits: "m1"})
	if err != nil {
		t.Fatalf("edit: %v", err)
	}
	recall, err := send(alice, &clientpb.Send{ClientMsgId: "m1-recall", Recalls: "m1"})
	if err != nil {
		t.Fatalf("recall: %v", err)
	}
	if edit.GetSeq() <= orig.GetSeq() || recall.GetSeq() <= edit.GetSeq() {
		t.Fatalf("seqs: message %d, edit %d, recall %d", orig.GetSeq(), edit.GetSeq(), recall.GetSeq())
	}
	check := func(how string, msgs []*clientpb.Message) {
		t.Helper()
		if len(msgs) != 3 {
			t.Fatalf("%s: %d messages, want 3", how, len(msgs))
		}
		m, e, r := msgs[0], msgs[1], msgs[2]
		if m.GetSeq() != orig.GetSeq() || m.GetEdits() != 0 || m.GetRecalls() != 0 {
			t.Errorf("%s: message %v", how, m)
		}
		if e.GetSeq() != edit.GetSeq() || e.GetEdits() != orig.GetSeq() || string(e.GetBody()) != "hello" || e.GetSender() != "alice" {
			t.Errorf("%s: edit %v", how, e)
		}
		if r.GetSeq() != recall.GetSeq() || r.GetRecalls() != orig.GetSeq() || len(r.GetBody()) != 0 {
			t.Errorf("%s: recall %v", how, r)
		}
	}
	check("live", nextMessages(t, bob, dm, 3))
	check("sync", syncAll(t, bob, dm, 0))

	if _, err := bob.Send(ctx, &clientpb.Send{ClientMsgId: "b1", To: &clientpb.Send_User{User: "alice"}, Recalls: "m1"}); errCode(err) != clientpb.Error_UNKNOWN_MESSAGE {
		t.Errorf("bob recalling alice's message: %v, want UNKNOWN_MESSAGE", err)
	}
	if _, err := send(alice, &clientpb.Send{ClientMsgId: "x1", Edits: "nope"}); errCode(err) != clientpb.Error_UNKNOWN_MESSAGE {
		t.Errorf("edit of an unknown message: %v, want UNKNOWN_MESSAGE", err)
	}
	if _, err := send(alice, &clientpb.Send{ClientMsgId: "x2", Recalls: "m1", Body: []byte("x")}); errCode(err) != clientpb.Error_INVALID {
		t.Errorf("recall with a body: %v, want INVALID", err)
	}
}

// TestE2EEditWindow: past the edit window an edit is refused TOO_LATE.
func TestE2EEditWindow(t *testing.T) {
	t.Parallel()
	c := startCluster(t, func(s *Settings) { s.EditWindow = time.Second })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	alice := c.login("alice")
	if _, err := alice.Send(ctx, &clientpb.Send{ClientMsgId: "m1", To: &clientpb.Send_Room{Room: "lobby"}, Body: []byte("a")}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	_, err := alice.Send(ctx, &clientpb.Send{ClientMsgId: "m1-edit", To: &clientpb.Send_Room{Room: "lobby"}, Body: []byte("b"), Edits: "m1"})
	if errCode(err) != clientpb.Error_TOO_LATE {
		t.Fatalf("edit after the window: %v, want TOO_LATE", err)
	}
}
