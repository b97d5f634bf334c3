package app

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/laneim/laneim/gateways/comet/client"
	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/workers/binlogsync"
)

// TestE2EMySQLIsTheSystemOfRecord runs the cluster with the binlog worker
// following a real MariaDB, and checks what users see when MySQL changes.
func TestE2EMySQLIsTheSystemOfRecord(t *testing.T) {
	t.Parallel()
	db := testinfra.StartMariaDB(t, "laneim", binlogsync.Statements())
	sql := db.Admin(t)
	db.Exec(t, sql,
		"INSERT INTO users (id, name) VALUES ('alice', 'Alice'), ('bob', 'Bob'), ('carol', 'Carol')",
		"INSERT INTO rooms (id, name) VALUES ('lobby', 'Lobby'), ('tmp', 'Temporary')",
		"INSERT INTO room_members (room_id, user_id) VALUES ('lobby', 'alice'), ('lobby', 'bob'), ('lobby', 'carol'), ('tmp', 'alice')",
	)
	c := startCluster(t, func(s *Settings) {
		s.MySQL = fmt.Sprintf("mariadb://%s:%s@%s/%s", db.SyncUser, db.SyncPassword, db.Addr, db.Database)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// The snapshot reached the directory: alice logs in and joins.
	var alice *client.Conn
	testinfra.Eventually(t, 20*time.Second, func() bool {
		conn := c.dial(false)
		if _, err := conn.Login(ctx, c.token("alice", time.Hour), "test"); err != nil {
			conn.Close()
			return false
		}
		alice = conn
		return true
	}, "alice never could log in")
	c.join(alice, "lobby")

	// A user created in MySQL can log in.
	dave := c.dial(false)
	if _, err := dave.Login(ctx, c.token("dave", time.Hour), "test"); errCode(err) != clientpb.Error_UNKNOWN_USER {
		t.Fatalf("dave before insert: %v", err)
	}
	db.Exec(t, sql, "INSERT INTO users (id, name) VALUES ('dave', 'Dave')")
	created := time.Now()
	testinfra.Eventually(t, 10*time.Second, func() bool {
		conn := c.dial(false)
		defer conn.Close()
		_, err := conn.Login(ctx, c.token("dave", time.Hour), "test")
		return err == nil
	}, "dave created in MySQL never could log in")
	t.Logf("a user created in MySQL could log in after %v", time.Since(created).Round(time.Millisecond))

	// A membership removed in MySQL: bob stops receiving and sending.
	bob := c.login("bob")
	c.join(bob, "lobby")
	carol := c.login("carol")
	c.join(carol, "lobby")
	db.Exec(t, sql, "DELETE FROM room_members WHERE room_id = 'lobby' AND user_id = 'bob'")
	testinfra.Eventually(t, 10*time.Second, func() bool {
		_, err := bob.SendRoom(ctx, "lobby", []byte("still in?"))
		return errCode(err) == clientpb.Error_NOT_MEMBER
	}, "bob could still send to the lobby")
	sent, err := alice.SendRoom(ctx, "lobby", []byte("after bob left"))
	if err != nil {
		t.Fatal(err)
	}
	// carol, still in the lobby, receives alice's message and hears that
	// bob went, as if bob had left himself.
	conv := topics.RoomConversation("lobby")
	var gotMsg bool
	var bobWent *clientpb.PresenceChange
	timeout := time.After(20 * time.Second)
	for !gotMsg || bobWent == nil {
		select {
		case f, ok := <-carol.Frames():
			if !ok {
				t.Fatalf("carol's connection closed: %v", carol.Err())
			}
			for _, m := range f.GetMessages().GetMessages() {
				if m.GetConversation() == conv && m.GetSeq() == sent.GetSeq() {
					gotMsg = true
				}
			}
			if p := f.GetPresence(); p.GetRoom() == "lobby" && p.GetUser() == "bob" && !p.GetOnline() {
				bobWent = p
			}
		case <-timeout:
			t.Fatalf("carol got alice's message %v, a PresenceChange for bob %v; want both", gotMsg, bobWent)
		}
	}
	if bobWent.GetOnlineCount() != 2 {
		t.Errorf("lobby online count after bob was removed = %d, want 2 (alice, carol)", bobWent.GetOnlineCount())
	}
	// bob got a Left for the lobby and nothing of the lobby after it.
	gotLeft := false
	deadline := time.After(2 * time.Second)
drain:
	for {
		select {
		case f := <-bob.Frames():
			if f.GetLeft().GetRoom() == "lobby" {
				gotLeft = true
				continue
			}
			for _, m := range f.GetMessages().GetMessages() {
				if string(m.GetBody()) == "after bob left" {
					t.Fatal("bob received a room message after his membership was removed")
				}
			}
			if p := f.GetPresence(); gotLeft && p.GetRoom() == "lobby" {
				t.Fatalf("bob received a lobby presence frame after his Left: %v", p)
			}
		case <-deadline:
			break drain
		}
	}
	if !gotLeft {
		t.Error("bob was not told he left the lobby")
	}

	// A deleted room is gone.
	db.Exec(t, sql, "DELETE FROM rooms WHERE id = 'tmp'")
	testinfra.Eventually(t, 10*time.Second, func() bool {
		_, err := alice.Join(ctx, "tmp")
		return errCode(err) == clientpb.Error_UNKNOWN_ROOM
	}, "deleted room still joinable")

	// A disabled user's live sessions are closed.
	db.Exec(t, sql, "UPDATE users SET disabled = 1 WHERE id = 'carol'")
	select {
	case <-carol.Done():
	case <-ctx.Done():
		t.Fatal("disabled user still connected")
	}
	if got := websocket.CloseStatus(carol.Err()); got != websocket.StatusPolicyViolation {
		t.Errorf("disabled user closed with %v (%v), want 1008", got, carol.Err())
	}
	// alice, in the lobby with carol, hears that carol went.
	timeout = time.After(20 * time.Second)
	for carolWent := false; !carolWent; {
		select {
		case f, ok := <-alice.Frames():
			if !ok {
				t.Fatalf("alice's connection closed: %v", alice.Err())
			}
			p := f.GetPresence()
			carolWent = p.GetRoom() == "lobby" && p.GetUser() == "carol" && !p.GetOnline()
		case <-timeout:
			t.Fatal("alice never heard that the disabled carol went")
		}
	}
	again := c.dial(false)
	if _, err := again.Login(ctx, c.token("carol", time.Hour), "test"); errCode(err) != clientpb.Error_UNKNOWN_USER {
		t.Errorf("disabled user login = %v, want UNKNOWN_USER", err)
	}
}
