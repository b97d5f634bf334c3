package app

import (
	"context"
	"testing"
	"time"

	"github.com/laneim/laneim/gateways/comet/client"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/topics"
)

// nextFrame reads frames of conn until one that want accepts, which it
// returns; it fails the test after 20 s.
func nextFrame(t *testing.T, conn *client.Conn, what string, want func(*clientpb.ServerFrame) bool) *clientpb.ServerFrame {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case f, ok := <-conn.Frames():
			if !ok {
				t.Fatalf("connection closed waiting for %s: %v", what, conn.Err())
			}
			if want(f) {
				return f
			}
		case <-timeout:
			t.Fatalf("no %s", what)
		}
	}
}

// nextRead returns the next ReadUpdate conn gets on its own.
func nextRead(t *testing.T, conn *client.Conn, what string) *clientpb.ReadUpdate {
	t.Helper()
	return nextFrame(t, conn, what, func(f *clientpb.ServerFrame) bool { return f.GetReadUpdate() != nil }).GetReadUpdate()
}

func ack(ctx context.Context, conn *client.Conn, conv string, seq uint64) (*clientpb.ReadUpdate, error) {
	f, err := conn.Do(ctx, &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Ack{Ack: &clientpb.Ack{Conversation: conv, Seq: seq}}})
	return f.GetReadUpdate(), err
}

func stateOf(states []*clientpb.ConversationState, conv string) *clientpb.ConversationState {
	for _, s := range states {
		if s.GetConversation() == conv {
			return s
		}
	}
	return nil
}

// TestE2EReadState: a user's Ack records its read position, which only
// grows and never passes the latest seq; its other devices and the other
// party of a 1:1 conversation are told (ReadUpdate), room members too
// with --room-read-receipts; LoginResult and Conversations carry read
// positions and unread counts, the sender's own messages not counted.
func TestE2EReadState(t *testing.T) {
	t.Parallel()
	c := startCluster(t, func(s *Settings) { s.RoomReadReceipts = true })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a1, a2 := c.login("alice"), c.loginWith("alice", client.Options{JSON: true})
	b1 := c.login("bob")
	dm := topics.DirectConversation("alice", "bob")
	for i := range 3 {
		if _, err := a1.SendUser(ctx, "bob", []byte{byte('a' + i)}); err != nil {
			t.Fatal(err)
		}
	}
	nextMessages(t, b1, dm, 3)

	// A fresh device of bob: three unread; alice has read her own.
	b2 := c.dialWith(client.Options{JSON: true})
	res, err := b2.Login(ctx, c.token("bob", time.Hour), "second")
	if err != nil {
		t.Fatal(err)
	}
	if st := stateOf(res.GetConversations(), dm); st.GetLatestSeq() != 3 || st.GetReadSeq() != 0 || st.GetUnread() != 3 {
		t.Fatalf("bob's login: %v, want latest 3, read 0, unread 3", st)
	}
	a3 := c.dial(false)
	res, err = a3.Login(ctx, c.token("alice", time.Hour), "third")
	if err != nil {
		t.Fatal(err)
	}
	if st := stateOf(res.GetConversations(), dm); st.GetReadSeq() != 3 || st.GetUnread() != 0 {
		t.Fatalf("alice's login: %v, want read 3, unread 0 (her own messages)", st)
	}

	// bob reads up to 2: answered, told to his other device and to
	// alice's devices.
	up, err := ack(ctx, b1, dm, 2)
	if err != nil || up.GetSeq() != 2 || up.GetUser() != "bob" || up.GetConversation() != dm {
		t.Fatalf("ack 2: %v, %v", up, err)
	}
	for name, conn := range map[string]*client.Conn{"bob's other device": b2, "alice 1": a1, "alice 2 (json)": a2, "alice 3": a3} {
		if got := nextRead(t, conn, "read update on "+name); got.GetSeq() != 2 || got.GetUser() != "bob" || got.GetConversation() != dm {
			t.Fatalf("%s got %v", name, got)
		}
	}
	// Going back changes nothing; going past the latest seq stops there.
	if up, err := ack(ctx, b1, dm, 1); err != nil || up.GetSeq() != 2 {
		t.Fatalf("ack 1 after 2: %v, %v; want position 2", up, err)
	}
	if up, err := ack(ctx, b1, dm, 99); err != nil || up.GetSeq() != 3 {
		t.Fatalf("ack 99: %v, %v; want position 3, the latest", up, err)
	}
	// The lower Ack told nobody: the next update b2 sees is 3.
	if got := nextRead(t, b2, "second read update"); got.GetSeq() != 3 {
		t.Fatalf("bob's other device got %v after the acks of 1 and 99, want seq 3", got)
	}
	if got := nextRead(t, a1, "second receipt"); got.GetSeq() != 3 {
		t.Fatalf("alice got %v, want seq 3", got)
	}

	// Refusals.
	if _, err := ack(ctx, b1, topics.DirectConversation("carol", "dave"), 1); errCode(err) != clientpb.Error_NOT_MEMBER {
		t.Fatalf("ack of another's conversation: %v, want NOT_MEMBER", err)
	}
	if _, err := ack(ctx, b1, topics.RoomConversation("ops"), 1); errCode(err) != clientpb.Error_NOT_MEMBER {
		t.Fatalf("ack of a room bob is not in: %v, want NOT_MEMBER", err)
	}
	if _, err := ack(ctx, b1, "", 1); errCode(err) != clientpb.Error_INVALID {
		t.Fatalf("ack without a conversation: %v, want INVALID", err)
	}

	// Rooms, with room receipts on: a member who joined hears of it.
	lobby := topics.RoomConversation("lobby")
	c.join(a1, "lobby")
	c.join(b1, "lobby")
	sent, err := a1.SendRoom(ctx, "lobby", []byte("hi"))
	if err != nil {
		t.Fatal(err)
	}
	nextMessages(t, b1, lobby, 1)
	if up, err := ack(ctx, b1, lobby, sent.GetSeq()); err != nil || up.GetSeq() != sent.GetSeq() {
		t.Fatalf("ack of the room: %v, %v", up, err)
	}
	got := nextFrame(t, a1, "room read receipt", func(f *clientpb.ServerFrame) bool {
		return f.GetReadUpdate().GetConversation() == lobby
	}).GetReadUpdate()
	if got.GetUser() != "bob" || got.GetSeq() != sent.GetSeq() {
		t.Fatalf("room receipt %v", got)
	}

	// The positions are kept: a new login and Conversations carry them.
	b3 := c.dial(false)
	res, err = b3.Login(ctx, c.token("bob", time.Hour), "third")
	if err != nil {
		t.Fatal(err)
	}
	if st := stateOf(res.GetConversations(), dm); st.GetReadSeq() != 3 || st.GetUnread() != 0 {
		t.Fatalf("bob's login after reading: %v", st)
	}
	page, err := b3.Conversations(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if st := stateOf(page.GetConversations(), lobby); st.GetReadSeq() != sent.GetSeq() || st.GetUnread() != 0 {
		t.Fatalf("bob's lobby in Conversations: %v, want read %d", st, sent.GetSeq())
	}
}

// TestE2ETypingIndicators: a Typing reaches the other party of a 1:1
// conversation and the members of a room, at most once a second per
// connection and conversation (the rest dropped), never the sender's
// own 1:1 devices.
func TestE2ETypingIndicators(t *testing.T) {
	t.Parallel()
	c := startCluster(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a := c.login("alice")
	b := c.loginWith("bob", client.Options{JSON: true})
	c.join(b, "lobby")
	dm := topics.DirectConversation("alice", "bob")
	lobby := topics.RoomConversation("lobby")
	typing := func(conv string) {
		t.Helper()
		if err := a.Write(ctx, &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Typing{Typing: &clientpb.Typing{Conversation: conv}}}); err != nil {
			t.Fatal(err)
		}
	}
	// Alice's Typings travel in order (one user, one partition, one
	// comet topic): dm, dm (dropped: too soon), a second later dm, lobby.
	typing(dm)
	typing(dm)
	time.Sleep(1100 * time.Millisecond)
	typing(dm)
	typing(lobby)
	var convs []string
	for len(convs) == 0 || convs[len(convs)-1] != lobby {
		u := nextFrame(t, b, "typing update", func(f *clientpb.ServerFrame) bool { return f.GetTyping() != nil }).GetTyping()
		if u.GetUser() != "alice" {
			t.Fatalf("typing update %v, want alice's", u)
		}
		convs = append(convs, u.GetConversation())
	}
	if len(convs) != 3 || convs[0] != dm || convs[1] != dm {
		t.Fatalf("bob saw typing in %v, want [%s %s %s]", convs, dm, dm, lobby)
	}
	// A Typing without a conversation is refused.
	f, err := a.Do(ctx, &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Typing{Typing: &clientpb.Typing{}}})
	if errCode(err) != clientpb.Error_INVALID {
		t.Fatalf("typing without a conversation: %v, %v", f, err)
	}
}

// TestE2EMentions: a room message mentioning a user counts in its unread
// mentions until the user reads past it; an offline notice names the
// mentioned offline user even in a room too big to notify.
func TestE2EMentions(t *testing.T) {
	t.Parallel()
	c := startCluster(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	alice := c.login("alice")
	lobby := topics.RoomConversation("lobby")
	if _, err := alice.SendRoom(ctx, "lobby", []byte("plain")); err != nil {
		t.Fatal(err)
	}
	sent, err := alice.Send(ctx, &clientpb.Send{ClientMsgId: "m2", To: &clientpb.Send_Room{Room: "lobby"}, Body: []byte("@carol"), Mentions: []string{"carol", "nobody"}})
	if err != nil {
		t.Fatal(err)
	}
	carol := c.dial(true)
	res, err := carol.Login(ctx, c.token("carol", time.Hour), "phone")
	if err != nil {
		t.Fatal(err)
	}
	if st := stateOf(res.GetConversations(), lobby); st.GetUnread() != 2 || st.GetUnreadMentions() != 1 {
		t.Fatalf("carol's lobby: %v, want 2 unread, 1 mention", st)
	}
	msgs := syncAll(t, carol, lobby, 0)
	if m := msgs[len(msgs)-1]; m.GetSeq() != sent.GetSeq() || len(m.GetMentions()) != 1 || m.GetMentions()[0] != "carol" {
		t.Fatalf("synced %v, want the mention of carol (nobody is no member)", m)
	}
	if _, err := ack(ctx, carol, lobby, sent.GetSeq()); err != nil {
		t.Fatal(err)
	}
	page, err := carol.Conversations(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if st := stateOf(page.GetConversations(), lobby); st.GetUnread() != 0 || st.GetUnreadMentions() != 0 {
		t.Fatalf("carol's lobby after reading: %v", st)
	}
}
