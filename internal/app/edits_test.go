package app

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/laneim/laneim/gateways/comet/client"
	"github.com/laneim/laneim/internal/testinfra"
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

// TestE2EHistoryCurrentState: a Sync with current_state answers a
// message edited twice with its latest edit and a recalled one without
// body, though the edits and the recall come after the page asked for,
// in both encodings; the api gateway's history does the same over HTTP;
// a Sync without it answers the messages as sent.
func TestE2EHistoryCurrentState(t *testing.T) {
	t.Parallel()
	c := startCluster(t, func(s *Settings) {
		s.RecallWindow = time.Hour
		s.APIHTTPAddr = testinfra.FreeAddr(t)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	alice := c.login("alice")
	dm := topics.DirectConversation("alice", "bob")
	var seqs []uint64
	for _, s := range []*clientpb.Send{
		{ClientMsgId: "m1", Body: []byte("helo"), ContentType: "text/plain"},
		{ClientMsgId: "m2", Body: []byte("oops"), ContentType: "text/plain", Mentions: []string{"bob"}},
		{ClientMsgId: "m1-e1", Body: []byte("hello"), ContentType: "text/plain", Edits: "m1"},
		{ClientMsgId: "m2-r", Recalls: "m2"},
		{ClientMsgId: "m1-e2", Body: []byte("*hello*"), ContentType: "text/markdown", Edits: "m1"},
	} {
		s.To = &clientpb.Send_User{User: "bob"}
		res, err := alice.Send(ctx, s)
		if err != nil {
			t.Fatalf("send %s: %v", s.GetClientMsgId(), err)
		}
		seqs = append(seqs, res.GetSeq())
	}
	orig1, orig2, recall, edit2 := seqs[0], seqs[1], seqs[3], seqs[4]
	for _, enc := range []struct {
		name string
		json bool
	}{{"proto", false}, {"json", true}} {
		bob := c.loginWith("bob", client.Options{JSON: enc.json})
		// The page holds the two messages only (limit 2): their
		// changes are after it.
		res, err := bob.SyncCurrent(ctx, dm, 0, 2)
		if err != nil {
			t.Fatalf("%s: sync: %v", enc.name, err)
		}
		ms := res.GetMessages()
		if len(ms) != 2 || !res.GetHasMore() {
			t.Fatalf("%s: %d messages more=%v, want 2 and more", enc.name, len(ms), res.GetHasMore())
		}
		if m := ms[0]; m.GetSeq() != orig1 || string(m.GetBody()) != "*hello*" || m.GetContentType() != "text/markdown" || m.GetEditedSeq() != edit2 || m.GetRecalledSeq() != 0 || m.GetClientMsgId() != "m1" {
			t.Errorf("%s: edited message %v, want the second edit's body and edited_seq %d", enc.name, m, edit2)
		}
		if m := ms[1]; m.GetSeq() != orig2 || len(m.GetBody()) != 0 || m.GetContentType() != "" || len(m.GetMentions()) != 0 || m.GetRecalledSeq() != recall || m.GetEditedSeq() != 0 {
			t.Errorf("%s: recalled message %v, want no body and recalled_seq %d", enc.name, m, recall)
		}
		// The changes themselves come as sent.
		rest, err := bob.SyncCurrent(ctx, dm, orig2, 0)
		if err != nil || len(rest.GetMessages()) != 3 {
			t.Fatalf("%s: rest %v, %v", enc.name, rest, err)
		}
		if e := rest.GetMessages()[0]; e.GetEdits() != orig1 || string(e.GetBody()) != "hello" || e.GetEditedSeq() != 0 {
			t.Errorf("%s: first edit %v", enc.name, e)
		}
		plain, err := bob.Sync(ctx, dm, 0, 2)
		if err != nil || len(plain.GetMessages()) != 2 || string(plain.GetMessages()[0].GetBody()) != "helo" || plain.GetMessages()[0].GetEditedSeq() != 0 ||
			string(plain.GetMessages()[1].GetBody()) != "oops" || plain.GetMessages()[1].GetRecalledSeq() != 0 {
			t.Errorf("%s: sync without current_state: %v, %v", enc.name, plain, err)
		}
	}

	var page struct {
		Messages []struct {
			Seq         string `json:"seq"`
			Body        string `json:"body"`
			ContentType string `json:"content_type"`
			EditedSeq   string `json:"edited_seq"`
			RecalledSeq string `json:"recalled_seq"`
		} `json:"messages"`
	}
	c.httpAPI().ok("history", `{"conversation":"`+dm+`","before_seq":3,"current_state":true}`, &page)
	want := fmt.Sprint([]string{fmt.Sprint(orig1), b64("*hello*"), "text/markdown", fmt.Sprint(edit2), "0"}, []string{fmt.Sprint(orig2), "", "", "0", fmt.Sprint(recall)})
	var got []any
	for _, m := range page.Messages {
		got = append(got, []string{m.Seq, m.Body, m.ContentType, m.EditedSeq, m.RecalledSeq})
	}
	if fmt.Sprint(got...) != want {
		t.Errorf("HTTP history with current_state: %v, want %s", got, want)
	}
}
