package app

// End-to-end tests: the whole pipeline in one fx app, speaking the Kafka
// protocol to an in-process kfake broker and Redis to a real redis-server,
// with clients on real WebSocket connections.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/coder/websocket"
	"go.uber.org/fx"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/laneim/laneim/gateways/api"
	"github.com/laneim/laneim/gateways/comet"
	"github.com/laneim/laneim/gateways/comet/client"
	"github.com/laneim/laneim/internal/chat"
	"github.com/laneim/laneim/internal/seed"
	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/apipb"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/workers/login"
)

type cluster struct {
	t        *testing.T
	settings Settings
	ws       string
	store    *directory.Store
	comet    *comet.Comet
}

// startCluster runs every role against fresh infrastructure and the demo seed.
func startCluster(t *testing.T, tune func(*Settings)) *cluster {
	t.Helper()
	return startClusterRoles(t, tune, append(append([]Role{}, Workers...), Comet, API))
}

// startClusterRoles runs the given roles against fresh infrastructure.
func startClusterRoles(t *testing.T, tune func(*Settings), roles []Role) *cluster {
	t.Helper()
	kcfg := testinfra.Kafka(t)
	s := Settings{
		Kafka:         strings.Join(kcfg.Brokers, ","),
		Redis:         testinfra.Redis(t),
		Secret:        "e2e-secret-of-the-end-to-end-tests",
		APIToken:      "e2e-api-token",
		CometID:       "c1",
		CometAddr:     testinfra.FreeAddr(t),
		APIAddr:       testinfra.FreeAddr(t),
		SessionTTL:    30 * time.Second,
		NotifyLimit:   200,
		MaxBodyBytes:  16 << 10,
		BatchWindow:   10 * time.Millisecond,
		SendQueue:     256,
		MaxFrameBytes: 64 << 10,
		// Tests send as fast as the pipeline answers; the comet's limits
		// have tests of their own (gateways/comet TestLimits), and so has
		// the cluster-wide send rate (limits_test.go).
		RequestRate:  -1,
		UserSendRate: -1,
		LogLevel:     "error",
		History:      filepath.Join(t.TempDir(), "history.db"),
		AdminAddr:    testinfra.FreeAddr(t),
	}
	if tune != nil {
		tune(&s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rdb, err := wiring.NewRedis(ctx, s.Infra().Redis)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	store := directory.New(rdb)
	if s.MySQL != "" {
		roles = append(roles, Binlog)
	} else {
		sd, err := seed.Load(testinfra.DemoSeed())
		if err != nil {
			t.Fatal(err)
		}
		if err := sd.Apply(ctx, store); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Validate(roles...); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var cm *comet.Comet
	a := testinfra.StartOnFreePorts(t, ctx,
		func() *fx.App { return fx.New(s.Options(logger, roles...), fx.Populate(&cm)) },
		func() {
			s.CometAddr, s.APIAddr, s.AdminAddr = testinfra.FreeAddr(t), testinfra.FreeAddr(t), testinfra.FreeAddr(t)
		})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := a.Stop(ctx); err != nil {
			t.Errorf("stop cluster: %v", err)
		}
	})
	return &cluster{t: t, settings: s, ws: "ws://" + s.CometAddr + "/ws", store: store, comet: cm}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (c *cluster) token(user string, ttl time.Duration) string {
	c.t.Helper()
	tok, err := login.MintToken([]byte(c.settings.Secret), user, ttl)
	if err != nil {
		c.t.Fatal(err)
	}
	return tok
}

// dial opens a connection without logging in.
func (c *cluster) dial(json bool) *client.Conn {
	return c.dialWith(client.Options{JSON: json})
}

func (c *cluster) dialWith(opts client.Options) *client.Conn {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := client.Dial(ctx, c.ws, opts)
	if err != nil {
		c.t.Fatalf("dial: %v", err)
	}
	c.t.Cleanup(func() { conn.Close() })
	return conn
}

// login opens a connection logged in as user.
func (c *cluster) login(user string) *client.Conn {
	c.t.Helper()
	return c.loginWith(user, client.Options{})
}

// loginWith logs user in on a new connection. A Login answered
// UNAVAILABLE (a pipeline still starting on a loaded machine, or a test's
// short --request-timeout) is tried again on a new connection, as
// docs/protocol.md asks of clients, up to ten times.
func (c *cluster) loginWith(user string, opts client.Options) *client.Conn {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for attempt := 1; ; attempt++ {
		conn := c.dialWith(opts)
		res, err := conn.Login(ctx, c.token(user, time.Hour), "test")
		if errCode(err) == clientpb.Error_UNAVAILABLE && attempt < 10 && ctx.Err() == nil {
			conn.Close()
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if err != nil {
			c.t.Fatalf("login %s: %v", user, err)
		}
		if !res.GetOk() || res.GetUser() != user {
			c.t.Fatalf("login %s: %v", user, res)
		}
		return conn
	}
}

func (c *cluster) join(conn *client.Conn, room string) *clientpb.Joined {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for attempt := 1; ; attempt++ {
		j, err := conn.Join(ctx, room)
		if errCode(err) == clientpb.Error_UNAVAILABLE && attempt < 10 && ctx.Err() == nil {
			time.Sleep(100 * time.Millisecond)
			continue // answered UNAVAILABLE: try again, as a client does
		}
		if err != nil {
			c.t.Fatalf("join %s: %v", room, err)
		}
		return j
	}
}

// nextMessages reads frames until n messages of conversation arrived.
func nextMessages(t *testing.T, conn *client.Conn, conversation string, n int) []*clientpb.Message {
	t.Helper()
	var out []*clientpb.Message
	timeout := time.After(30 * time.Second)
	for len(out) < n {
		select {
		case f, ok := <-conn.Frames():
			if !ok {
				t.Fatalf("connection closed after %d of %d messages: %v", len(out), n, conn.Err())
			}
			for _, m := range f.GetMessages().GetMessages() {
				if m.GetConversation() == conversation {
					out = append(out, m)
				}
			}
		case <-timeout:
			t.Fatalf("got %d of %d messages of %s", len(out), n, conversation)
		}
	}
	return out
}

func errCode(err error) clientpb.Error_Code {
	var e *client.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return clientpb.Error_CODE_UNSPECIFIED
}

func TestE2ELogin(t *testing.T) {
	t.Parallel()
	c := startCluster(t, nil)
	tests := []struct {
		name  string
		token string
		want  clientpb.Error_Code
	}{
		{"good", c.token("alice", time.Hour), clientpb.Error_CODE_UNSPECIFIED},
		{"expired", c.token("alice", -time.Minute), clientpb.Error_BAD_TOKEN},
		{"bad signature", func() string { tok, _ := login.MintToken([]byte("other"), "alice", time.Hour); return tok }(), clientpb.Error_BAD_TOKEN},
		{"garbage", "not-a-jwt", clientpb.Error_BAD_TOKEN},
		{"unknown user", c.token("zed", time.Hour), clientpb.Error_UNKNOWN_USER},
		{"disabled user", c.token("mallory", time.Hour), clientpb.Error_UNKNOWN_USER},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := c.dial(false)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			res, err := conn.Login(ctx, tt.token, "test")
			if tt.want == clientpb.Error_CODE_UNSPECIFIED {
				if err != nil || !res.GetOk() || res.GetUser() != "alice" || res.GetProtocolVersion() != 1 {
					t.Fatalf("login = %v, %v", res, err)
				}
				return
			}
			if got := errCode(err); got != tt.want {
				t.Fatalf("login error = %v (%v), want %v", got, err, tt.want)
			}
			// Refused connections still may not do anything else.
			if _, err := conn.Join(ctx, "lobby"); errCode(err) != clientpb.Error_UNAUTHENTICATED {
				t.Fatalf("join after refused login = %v, want UNAUTHENTICATED", err)
			}
		})
	}
}

func TestE2EUnauthenticatedFramesRefused(t *testing.T) {
	t.Parallel()
	c := startCluster(t, nil)
	conn := c.dial(true)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := conn.Join(ctx, "lobby"); errCode(err) != clientpb.Error_UNAUTHENTICATED {
		t.Errorf("join = %v, want UNAUTHENTICATED", err)
	}
	if _, err := conn.SendRoom(ctx, "lobby", []byte("hi")); errCode(err) != clientpb.Error_UNAUTHENTICATED {
		t.Errorf("send = %v, want UNAUTHENTICATED", err)
	}
	// The connection is still usable: log in and join.
	if _, err := conn.Login(ctx, c.token("bob", time.Hour), "test"); err != nil {
		t.Fatalf("login after refusals: %v", err)
	}
	c.join(conn, "lobby")
}

func TestE2ERoomMessageReachesEveryMemberInOrder(t *testing.T) {
	t.Parallel()
	c := startCluster(t, nil)
	users := []string{"alice", "bob", "carol", "dave", "erin"}
	var conns []*client.Conn
	for _, u := range users {
		conn := c.login(u)
		c.join(conn, "lobby")
		conns = append(conns, conn)
	}
	// A second device of bob, in the JSON encoding.
	bob2 := c.dial(true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := bob2.Login(ctx, c.token("bob", time.Hour), "tablet"); err != nil {
		t.Fatal(err)
	}
	c.join(bob2, "lobby")
	conns = append(conns, bob2)

	const n = 30
	var lastSeq uint64
	for i := range n {
		res, err := conns[i%2].SendRoom(ctx, "lobby", []byte(fmt.Sprintf("m%d", i)))
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		if res.GetSeq() <= lastSeq {
			t.Fatalf("send %d got seq %d after %d", i, res.GetSeq(), lastSeq)
		}
		lastSeq = res.GetSeq()
	}
	conv := topics.RoomConversation("lobby")
	for i, conn := range conns {
		msgs := nextMessages(t, conn, conv, n)
		for j, m := range msgs {
			if want := fmt.Sprintf("m%d", j); string(m.GetBody()) != want || m.GetSeq() != uint64(j+1) {
				t.Fatalf("member %d message %d = seq %d %q, want seq %d %q", i, j, m.GetSeq(), m.GetBody(), j+1, want)
			}
		}
	}
}

func TestE2EDirectMessageReachesEveryDevice(t *testing.T) {
	t.Parallel()
	c := startCluster(t, nil)
	alice := c.login("alice")
	alice2 := c.login("alice")
	bob := c.login("bob")
	bob2 := c.login("bob")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := alice.SendUser(ctx, "bob", []byte("hi bob"))
	if err != nil {
		t.Fatal(err)
	}
	conv := topics.DirectConversation("alice", "bob")
	if res.GetConversation() != conv || res.GetSeq() != 1 {
		t.Fatalf("send result %v", res)
	}
	for _, conn := range []*client.Conn{bob, bob2, alice2} {
		m := nextMessages(t, conn, conv, 1)[0]
		if m.GetSender() != "alice" || string(m.GetBody()) != "hi bob" || m.GetSeq() != 1 {
			t.Fatalf("got %v", m)
		}
	}
	// erin blocks dave; unknown users are refused.
	dave := c.login("dave")
	if _, err := dave.SendUser(ctx, "erin", []byte("hey")); errCode(err) != clientpb.Error_BLOCKED {
		t.Errorf("blocked send = %v, want BLOCKED", err)
	}
	if _, err := dave.SendUser(ctx, "nobody", []byte("hey")); errCode(err) != clientpb.Error_UNKNOWN_USER {
		t.Errorf("send to unknown = %v, want UNKNOWN_USER", err)
	}
}

func TestE2EJoinRefusals(t *testing.T) {
	t.Parallel()
	c := startCluster(t, nil)
	carol := c.login("carol")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := carol.Join(ctx, "no-such-room"); errCode(err) != clientpb.Error_UNKNOWN_ROOM {
		t.Errorf("join unknown room = %v, want UNKNOWN_ROOM", err)
	}
	if _, err := carol.Join(ctx, "dev"); errCode(err) != clientpb.Error_NOT_MEMBER {
		t.Errorf("join dev = %v, want NOT_MEMBER", err)
	}
	if _, err := carol.SendRoom(ctx, "dev", []byte("x")); errCode(err) != clientpb.Error_NOT_MEMBER {
		t.Errorf("send to dev = %v, want NOT_MEMBER", err)
	}
}

// TestE2ELoginJoins: a Login that names rooms (Login.join) is answered
// with what JoinRooms of them would have got, and its connection gets
// the messages of the rooms joined, in either subprotocol.
func TestE2ELoginJoins(t *testing.T) {
	t.Parallel()
	c := startCluster(t, nil)
	for _, json := range []bool{false, true} {
		t.Run(fmt.Sprint("json=", json), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			carol := c.dial(json)
			res, err := carol.Login(ctx, c.token("carol", time.Hour), "test", "lobby", "dev", "no-such-room")
			if err != nil {
				t.Fatal(err)
			}
			if j := res.GetJoined(); len(j) != 1 || j[0].GetRoom() != "lobby" || j[0].GetConversation() != "room:lobby" {
				t.Fatalf("joined %v, want lobby", j)
			}
			refused := map[string]clientpb.Error_Code{}
			for _, r := range res.GetJoinRefused() {
				refused[r.GetRoom()] = r.GetError().GetCode()
			}
			if want := map[string]clientpb.Error_Code{"dev": clientpb.Error_NOT_MEMBER, "no-such-room": clientpb.Error_UNKNOWN_ROOM}; !maps.Equal(refused, want) {
				t.Fatalf("refused %v, want %v", refused, want)
			}
			alice := c.dial(json)
			if _, err := alice.Login(ctx, c.token("alice", time.Hour), "test", "lobby"); err != nil {
				t.Fatal(err)
			}
			sent, err := alice.SendRoom(ctx, "lobby", []byte("hello"))
			if err != nil {
				t.Fatal(err)
			}
			for _, conn := range []*client.Conn{carol, alice} {
				if m := nextMessages(t, conn, "room:lobby", 1)[0]; m.GetSeq() != sent.GetSeq() || string(m.GetBody()) != "hello" {
					t.Fatalf("got %v, want seq %d", m, sent.GetSeq())
				}
			}
		})
	}
}

func TestE2EOversizedFrameRefused(t *testing.T) {
	t.Parallel()
	c := startCluster(t, func(s *Settings) { s.MaxFrameBytes = 4 << 10 })
	conn := c.login("alice")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, _ = conn.SendRoom(ctx, "lobby", make([]byte, 8<<10))
	select {
	case <-conn.Done():
	case <-ctx.Done():
		t.Fatal("connection not closed after an oversized frame")
	}
	if got := websocket.CloseStatus(conn.Err()); got != websocket.StatusMessageTooBig {
		t.Fatalf("close status = %v (%v), want 1009", got, conn.Err())
	}
	// The comet still serves others.
	c.join(c.login("bob"), "lobby")
}

func TestE2EPlainHTTPOnWebSocketPath(t *testing.T) {
	t.Parallel()
	c := startCluster(t, nil)
	resp, err := http.Get("http://" + c.settings.CometAddr + "/ws")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode < 400 || resp.StatusCode >= 500 {
		t.Fatalf("status %d, want a 4xx", resp.StatusCode)
	}
}

func TestE2ESlowClientDisconnectedOthersKeepReceiving(t *testing.T) {
	t.Parallel()
	c := startCluster(t, func(s *Settings) { s.SendQueue = 4; s.MaxBodyBytes = 60 << 10 })
	fast := c.login("alice")
	c.join(fast, "lobby")
	// bob's client buffers one frame and then stops reading.
	slow := c.loginWith("bob", client.Options{FrameBuffer: 1})
	c.join(slow, "lobby")
	pusher := c.login("carol")
	// 300 sends one after another, each answered through the whole
	// pipeline: ~60 s on a loaded two-core machine under -race (send 281
	// of 300 once ran out of a 60 s bound in CI), so the bound is wide.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// bob never reads: his client library buffer, the kernel's socket
	// buffers and then his queue on the comet fill up.
	// 300 x 60 KB is more than loopback socket buffers hold.
	const n = 300
	body := make([]byte, 60<<10)
	conv := topics.RoomConversation("lobby")
	got := 0
	for i := 0; i < n; i++ {
		if _, err := pusher.SendRoom(ctx, "lobby", body); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		// alice keeps up.
		for drained := false; !drained; {
			select {
			case f, ok := <-fast.Frames():
				if !ok {
					t.Fatalf("fast member's connection ended after %d messages: %v", got, fast.Err())
				}
				for _, m := range f.GetMessages().GetMessages() {
					if m.GetConversation() == conv {
						got++
					}
				}
			default:
				drained = true
			}
		}
	}
	rest := nextMessages(t, fast, conv, n-got)
	if got+len(rest) != n {
		t.Fatalf("fast member got %d of %d", got+len(rest), n)
	}
	// The comet dropped bob (its close frame may not get through his full
	// socket buffer, so the comet's own count is the evidence) and kept
	// alice and carol.
	testinfra.Eventually(t, 30*time.Second, func() error {
		if st := c.comet.Stats(); st.SlowConsumers != 1 || st.Connections != 2 {
			return fmt.Errorf("comet stats %+v", st)
		}
		return nil
	}, "slow consumer not dropped")
	// Once bob's client reads again it finds the connection gone.
	gone := time.After(30 * time.Second)
	for open := true; open; {
		select {
		case _, open = <-slow.Frames():
		case <-gone:
			t.Fatal("the slow member's connection still open 30 s after the comet dropped it")
		}
	}
	<-slow.Done()
}

func TestE2EAPIPushAndPresence(t *testing.T) {
	t.Parallel()
	c := startCluster(t, nil)
	alice := c.login("alice")
	c.join(alice, "lobby")
	bob := c.login("bob")
	c.join(bob, "lobby")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	bad, badCloser, err := api.Dial(ctx, c.settings.APIAddr, "wrong-token")
	if err != nil {
		t.Fatal(err)
	}
	_, err = bad.OnlineStatus(ctx, &apipb.OnlineStatusRequest{Users: []string{"alice"}})
	badCloser.Close()
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("api call with a wrong token = %v, want Unauthenticated", err)
	}
	pc, closer, err := api.Dial(ctx, c.settings.APIAddr, c.settings.APIToken)
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()

	if _, err := pc.PushRoom(ctx, &apipb.PushRoomRequest{Room: "lobby", Content: &apipb.Content{Body: []byte("announcement")}}); err != nil {
		t.Fatal(err)
	}
	for _, conn := range []*client.Conn{alice, bob} {
		m := nextMessages(t, conn, topics.RoomConversation("lobby"), 1)[0]
		if string(m.GetBody()) != "announcement" || m.GetSender() != topics.SystemSender {
			t.Fatalf("room push: got %v", m)
		}
	}
	if _, err := pc.PushUsers(ctx, &apipb.PushUsersRequest{From: "support", Users: []string{"bob"}, Content: &apipb.Content{Body: []byte("ticket 7")}}); err != nil {
		t.Fatal(err)
	}
	if m := nextMessages(t, bob, topics.DirectConversation("support", "bob"), 1)[0]; string(m.GetBody()) != "ticket 7" {
		t.Fatalf("user push: got %v", m)
	}
	if _, err := pc.Broadcast(ctx, &apipb.BroadcastRequest{Content: &apipb.Content{Body: []byte("maintenance")}}); err != nil {
		t.Fatal(err)
	}
	for _, conn := range []*client.Conn{alice, bob} {
		if m := nextMessages(t, conn, topics.BroadcastConversation, 1)[0]; string(m.GetBody()) != "maintenance" {
			t.Fatalf("broadcast: got %v", m)
		}
	}

	online, err := pc.OnlineStatus(ctx, &apipb.OnlineStatusRequest{Users: []string{"alice", "carol"}})
	if err != nil {
		t.Fatal(err)
	}
	if !online.GetOnline()["alice"] || online.GetOnline()["carol"] {
		t.Errorf("online = %v, want alice only", online.GetOnline())
	}
	ro, err := pc.RoomOnline(ctx, &apipb.RoomOnlineRequest{Room: "lobby"})
	if err != nil {
		t.Fatal(err)
	}
	if ro.GetOnlineUsers() != 2 || ro.GetConnections() != 2 {
		t.Errorf("room online = %v, want 2 users on 2 connections", ro)
	}
	// bob leaves: the count drops once presence has the LEFT event.
	if err := bob.Leave(ctx, "lobby"); err != nil {
		t.Fatal(err)
	}
	testinfra.Eventually(t, 10*time.Second, func() bool {
		ro, err := pc.RoomOnline(ctx, &apipb.RoomOnlineRequest{Room: "lobby"})
		return err == nil && ro.GetOnlineUsers() == 1
	}, "lobby online users did not drop to 1")
}

func TestE2EPoisonMessageGoesToDeadLettersPipelineGoesOn(t *testing.T) {
	t.Parallel()
	c := startCluster(t, nil)
	pub, err := wiring.NewPublisher(c.settings.Infra().Kafka)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	for _, topic := range []string{topics.Submitted.Name, topics.Routed.Name, topics.SessionEvents.Name, topics.LoginRequests.Name, topics.Delivery("c1")} {
		if err := pub.Publish(topic, message.NewMessage("poison-"+topic, []byte("\xff\xff not protobuf"))); err != nil {
			t.Fatal(err)
		}
	}
	alice := c.login("alice")
	c.join(alice, "lobby")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := alice.SendRoom(ctx, "lobby", []byte("still here")); err != nil {
		t.Fatal(err)
	}
	if m := nextMessages(t, alice, topics.RoomConversation("lobby"), 1)[0]; string(m.GetBody()) != "still here" {
		t.Fatalf("got %v", m)
	}
	sub, err := wiring.NewSubscriber(c.settings.Infra().Kafka, "e2e.deadletters", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ch, err := sub.Subscribe(ctx, topics.DeadLetters)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for len(seen) < 5 {
		select {
		case m := <-ch:
			seen[m.UUID] = true
			m.Ack()
		case <-ctx.Done():
			t.Fatalf("dead letters: got %v, want 5", seen)
		}
	}
}

// shows returns nil if the output holds want, or an error quoting it.
func shows(out *testinfra.SyncBuffer, want string) error {
	if got := out.String(); !strings.Contains(got, want) {
		return fmt.Errorf("%q lacks %q", got, want)
	}
	return nil
}

func TestE2EChatClients(t *testing.T) {
	t.Parallel()
	c := startCluster(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	type side struct {
		in  *io.PipeWriter
		out *testinfra.SyncBuffer
		err chan error
	}
	start := func(user string) *side {
		r, w := io.Pipe()
		s := &side{in: w, out: &testinfra.SyncBuffer{}, err: make(chan error, 1)}
		go func() {
			s.err <- chat.Run(ctx, chat.Config{URL: c.ws, Token: c.token(user, time.Hour), Room: "lobby"}, r, s.out)
		}()
		testinfra.Eventually(t, 20*time.Second, func() error { return shows(s.out, "joined lobby") }, "%s did not join", user)
		return s
	}
	alice, bob := start("alice"), start("bob")
	fmt.Fprintln(alice.in, "hello bob")
	fmt.Fprintln(bob.in, "/dm alice psst")
	fmt.Fprintln(bob.in, "/join ops")
	for _, want := range []string{"alice: hello bob", "[dm:alice:bob #1] bob: psst"} {
		testinfra.Eventually(t, 20*time.Second, func() error {
			return errors.Join(shows(alice.out, want), shows(bob.out, want))
		}, "alice and bob shown %q", want)
	}
	testinfra.Eventually(t, 20*time.Second, func() error { return shows(bob.out, "NOT_MEMBER") }, "bob's refused join not shown")
	for _, s := range []*side{alice, bob} {
		fmt.Fprintln(s.in, "/quit")
		if err := <-s.err; err != nil {
			t.Errorf("chat ended with %v", err)
		}
		s.in.Close()
	}
}

func TestE2EMetricsAndHealth(t *testing.T) {
	t.Parallel()
	c := startCluster(t, nil)
	alice := c.login("alice")
	c.join(alice, "lobby")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := alice.SendRoom(ctx, "lobby", []byte("counted")); err != nil {
		t.Fatal(err)
	}
	nextMessages(t, alice, topics.RoomConversation("lobby"), 1)
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + c.settings.AdminAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, _ := get(p); code != http.StatusOK {
			t.Errorf("%s = %d", p, code)
		}
	}
	want := []string{
		`laneim_handler_messages_total{handler="routing",result="ok"}`,
		`laneim_handler_messages_total{handler="fanout",result="ok"}`,
		`laneim_handler_payloads_total{handler="presence",result="ok"}`,
		`laneim_handler_seconds_count{handler="comet.c1"}`,
		`laneim_comet_connections{comet="c1"} 1`,
		`laneim_comet_frames_sent_total{comet="c1"}`,
		`laneim_handler_lag_messages{handler="routing",partition="0",topic="messages.submitted"}`,
	}
	testinfra.Eventually(t, 10*time.Second, func() bool {
		_, body := get("/metrics")
		for _, w := range want {
			if !strings.Contains(body, w) {
				return false
			}
		}
		return true
	}, "metrics lack one of %q", want)
}
