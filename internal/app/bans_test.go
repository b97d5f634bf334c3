package app

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/laneim/laneim/gateways/comet/client"
	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/workers/binlogsync"
)

// TestE2EBanHolds: eve, logged in on several connections that keep
// sending and logging in again and again, is disabled in MySQL. Within
// 5 s every one of her connections is closed, logins racing the change
// included, and nothing she sends once the directory has the change
// (room or 1:1) reaches bob.
func TestE2EBanHolds(t *testing.T) {
	t.Parallel()
	db := testinfra.StartMariaDB(t, "laneim", binlogsync.Statements())
	sql := db.Admin(t)
	db.Exec(t, sql,
		"INSERT INTO users (id, name) VALUES ('eve', 'Eve'), ('bob', 'Bob')",
		"INSERT INTO rooms (id, name) VALUES ('lobby', 'Lobby')",
		"INSERT INTO room_members (room_id, user_id) VALUES ('lobby', 'eve'), ('lobby', 'bob')",
	)
	c := startCluster(t, func(s *Settings) {
		s.MySQL = fmt.Sprintf("mariadb://%s:%s@%s/%s", db.SyncUser, db.SyncPassword, db.Addr, db.Database)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var bob *client.Conn
	testinfra.Eventually(t, 20*time.Second, func() bool {
		conn := c.dial(false)
		if _, err := conn.Login(ctx, c.token("bob", time.Hour), "test"); err != nil {
			conn.Close()
			return false
		}
		bob = conn
		return true
	}, "bob never could log in")
	c.join(bob, "lobby")
	// What bob receives from eve, collected until the end.
	var (
		mu      sync.Mutex
		fromEve []string
	)
	bobDone := make(chan struct{})
	go func() {
		defer close(bobDone)
		for f := range bob.Frames() {
			for _, m := range f.GetMessages().GetMessages() {
				if m.GetSender() == "eve" {
					mu.Lock()
					fromEve = append(fromEve, string(m.GetBody()))
					mu.Unlock()
				}
			}
		}
	}()

	// banned is set once the directory has eve disabled: routing, which
	// reads the directory after, must refuse whatever she sends then.
	var banned atomic.Bool
	body := func(n int) []byte { return fmt.Appendf(nil, "eve %d banned=%v", n, banned.Load()) }
	var (
		connsMu  sync.Mutex
		eveConns []*client.Conn
		accepted atomic.Int64 // messages sent after the ban and acknowledged
	)
	track := func(conn *client.Conn) {
		connsMu.Lock()
		eveConns = append(eveConns, conn)
		connsMu.Unlock()
		go func() { // 1:1 messages come back to every connection of eve
			for range conn.Frames() {
			}
		}()
	}
	t.Cleanup(func() {
		connsMu.Lock()
		defer connsMu.Unlock()
		for _, conn := range eveConns {
			conn.Close()
		}
	})
	// send sends until the connection is refused or closed.
	send := func(conn *client.Conn, n int) bool {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		after := banned.Load()
		var err error
		if n%2 == 0 {
			_, err = conn.SendRoom(sctx, "lobby", body(n))
		} else {
			_, err = conn.SendUser(sctx, "bob", body(n))
		}
		if err == nil && after {
			accepted.Add(1)
		}
		return err == nil
	}

	token := c.token("eve", time.Hour)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	// Three connections logged in before, sending all along.
	for i := range 3 {
		conn := c.login("eve")
		track(conn)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := i * 1_000_000; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				if !send(conn, n) {
					if e := conn.Err(); e != nil || ctx.Err() != nil {
						return // closed
					}
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	// Logins racing the change, each sending once it is in.
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := (10 + i) * 1_000_000; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				conn, err := client.Dial(ctx, c.ws, client.Options{})
				if err != nil {
					return
				}
				track(conn)
				lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_, err = conn.Login(lctx, token, "race")
				cancel()
				if err != nil {
					conn.Close()
					continue
				}
				send(conn, n)
			}
		}()
	}

	time.Sleep(300 * time.Millisecond)
	db.Exec(t, sql, "UPDATE users SET disabled = 1 WHERE id = 'eve'")
	disabled := time.Now()
	testinfra.Eventually(t, 10*time.Second, func() bool {
		u, ok, err := c.store.User(ctx, "eve")
		return err == nil && ok && u.Disabled
	}, "eve's disable never reached the directory")
	banned.Store(true)
	t.Logf("the disable reached the directory after %v", time.Since(disabled).Round(time.Millisecond))
	time.Sleep(time.Second) // logins and sends go on against the ban
	close(stop)
	wg.Wait()

	// Within 5 s of the change every connection of eve is closed.
	until := disabled.Add(5 * time.Second)
	connsMu.Lock()
	conns := append([]*client.Conn(nil), eveConns...)
	connsMu.Unlock()
	open := 0
	for _, conn := range conns {
		select {
		case <-conn.Done():
		case <-time.After(time.Until(until)):
			open++
		}
	}
	if open > 0 {
		t.Errorf("%d of eve's %d connections still open 5 s after she was disabled", open, len(conns))
	}
	if n := accepted.Load(); n > 0 {
		t.Errorf("%d messages eve sent after the directory had her disabled were accepted", n)
	}
	// Anything routed would have reached bob by now; give it a moment.
	time.Sleep(500 * time.Millisecond)
	bob.Close()
	<-bobDone
	mu.Lock()
	defer mu.Unlock()
	var late []string
	for _, b := range fromEve {
		if strings.HasSuffix(b, "banned=true") {
			late = append(late, b)
		}
	}
	if len(late) > 0 {
		t.Errorf("bob received %d messages eve sent after her disable reached the directory, e.g. %q", len(late), late[0])
	}
	t.Logf("eve: %d connections, bob got %d of her messages before the ban", len(conns), len(fromEve)-len(late))

	// And eve cannot come back.
	again := c.dial(false)
	if _, err := again.Login(ctx, token, "test"); errCode(err) != clientpb.Error_UNKNOWN_USER {
		t.Errorf("login after the ban = %v, want UNKNOWN_USER", err)
	}
}
