package client_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/laneim/laneim/gateways/api"
	"github.com/laneim/laneim/gateways/comet/client"
	"github.com/laneim/laneim/internal/app"
	"github.com/laneim/laneim/internal/apptest"
	"github.com/laneim/laneim/proto/apipb"
	"github.com/laneim/laneim/proto/clientpb"
)

// next returns the next event of kind, skipping others; it fails the
// test after 30 s.
func next(t *testing.T, c *client.Client, kind client.EventKind) client.Event {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case ev, ok := <-c.Events():
			if !ok {
				t.Fatalf("events closed waiting for %v", kind)
			}
			if ev.Kind == kind {
				return ev
			}
		case <-timeout:
			t.Fatalf("no %v event in 30 s", kind)
		}
	}
}

// collect gathers Messages events until want says it has enough; it
// fails the test after 30 s.
func collect(t *testing.T, c *client.Client, got map[string][]*clientpb.Message, want func() bool) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for !want() {
		select {
		case ev, ok := <-c.Events():
			if !ok {
				t.Fatal("events closed")
			}
			for _, m := range ev.Messages {
				got[m.GetConversation()] = append(got[m.GetConversation()], m)
			}
		case <-timeout:
			t.Fatalf("messages so far: %v", seqs(got))
		}
	}
}

// pushClient dials cl's api gateway, until the test ends.
func pushClient(t *testing.T, cl *apptest.Cluster) apipb.PushClient {
	t.Helper()
	pc, closer, err := api.Dial(context.Background(), cl.Settings.APIAddr, cl.Settings.APIToken)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closer.Close() })
	return pc
}

func seqs(got map[string][]*clientpb.Message) map[string][]uint64 {
	out := map[string][]uint64{}
	for conv, ms := range got {
		for _, m := range ms {
			out[conv] = append(out[conv], m.GetSeq())
		}
	}
	return out
}

func TestClientReconnectsAndCatchesUpExactlyOnce(t *testing.T) {
	cl := apptest.Start(t, nil)
	proxy := cl.Proxy()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// alice talks on her own connection, straight to the comet.
	alice, err := client.Dial(ctx, cl.URL, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	if _, err := alice.Login(ctx, cl.Token("alice"), "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Join(ctx, "lobby"); err != nil {
		t.Fatal(err)
	}

	tokens := 0
	bob, err := client.New(client.Config{
		URL: proxy.URL,
		Token: func(context.Context) (string, error) {
			tokens++ // only the Client's goroutine calls it
			return cl.Token("bob"), nil
		},
		PingInterval: 100 * time.Millisecond,
		MinBackoff:   20 * time.Millisecond,
		MaxBackoff:   200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	if ev := next(t, bob, client.Connected); ev.Reconnect || ev.Login.GetUser() != "bob" {
		t.Fatalf("first connection: %+v", ev)
	}
	j, err := bob.Join(ctx, "lobby")
	if err != nil {
		t.Fatal(err)
	}
	// Joined lists who is online in the lobby: alice and bob.
	if fmt.Sprint(j.GetOnlineUsers()) != "[alice bob]" {
		t.Fatalf("Joined.online_users %v, want [alice bob]", j.GetOnlineUsers())
	}
	start := j.GetLatestSeq()

	send := func(n int, what string) {
		for i := range n {
			if _, err := alice.SendRoom(ctx, "lobby", []byte(fmt.Sprint(what, i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	got := map[string][]*clientpb.Message{}
	send(3, "before ")
	collect(t, bob, got, func() bool { return len(got["room:lobby"]) >= 3 })

	// The connection drops: pings and the reader see it; alice goes on.
	proxy.Cut()
	next(t, bob, client.Disconnected)
	send(5, "meanwhile ")
	for i := range 2 {
		if _, err := alice.SendUser(ctx, "bob", []byte(fmt.Sprint("psst ", i))); err != nil {
			t.Fatal(err)
		}
	}
	proxy.Restore()
	if ev := next(t, bob, client.Connected); !ev.Reconnect {
		t.Fatalf("second connection not a reconnect: %+v", ev)
	}
	send(2, "after ")
	dm := "dm:alice:bob"
	collect(t, bob, got, func() bool { return len(got["room:lobby"]) >= 10 && len(got[dm]) >= 2 })
	// One more message marks the end: nothing else may come before it.
	send(1, "last ")
	collect(t, bob, got, func() bool { return len(got["room:lobby"]) >= 11 })

	var want []uint64
	for s := start + 1; s <= start+11; s++ {
		want = append(want, s)
	}
	if g := seqs(got); !slices.Equal(g["room:lobby"], want) || !slices.Equal(g[dm], []uint64{1, 2}) {
		t.Fatalf("bob got %v, want lobby %v and %s [1 2], each once and in order", g, want, dm)
	}
	for i, m := range got["room:lobby"][3:8] {
		if string(m.GetBody()) != fmt.Sprint("meanwhile ", i) {
			t.Fatalf("missed message %d: %q", i, m.GetBody())
		}
	}
	if tokens < 2 {
		t.Fatalf("token asked %d times, want one per login", tokens)
	}
	if p := bob.Positions(); p["room:lobby"] != start+11 || p[dm] != 2 {
		t.Fatalf("positions %v", p)
	}
	if r := bob.Rooms(); !slices.Equal(r, []string{"lobby"}) {
		t.Fatalf("rooms %v", r)
	}

	// bob comes back later with the positions he kept: joining the lobby
	// catches up what was said since, with no live message to show a gap.
	positions := bob.Positions()
	bob.Close()
	send(2, "while closed ")
	bob, err = client.New(client.Config{
		URL: cl.URL, Positions: positions,
		Token: func(context.Context) (string, error) { return cl.Token("bob"), nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	next(t, bob, client.Connected)
	if _, err := bob.Join(ctx, "lobby"); err != nil {
		t.Fatal(err)
	}
	later := map[string][]*clientpb.Message{}
	collect(t, bob, later, func() bool { return len(later["room:lobby"]) >= 2 })
	if g := seqs(later)["room:lobby"]; !slices.Equal(g, []uint64{start + 12, start + 13}) {
		t.Fatalf("after the join with positions: %v, want %d and %d", g, start+12, start+13)
	}
}

func TestClientCloseEndsEverything(t *testing.T) {
	// Nothing listens: the Client retries until Close, which must end
	// its goroutine (goleak checks at the end of the package's tests).
	c, err := client.New(client.Config{
		URL:        "ws://127.0.0.1:1/ws",
		Token:      func(context.Context) (string, error) { return "x", nil },
		MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(t, c, client.Disconnected); ev.Err == nil {
		t.Fatal("disconnected without a reason")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.SendRoom(ctx, "lobby", []byte("x")); err == nil {
		t.Fatal("a send without a connection succeeded")
	}
	c.Close()
	for range c.Events() {
	}
	if _, err := c.Join(context.Background(), "lobby"); err == nil {
		t.Fatal("join after Close succeeded")
	}
}

func TestBackoffGrowsWithJitterWithinBounds(t *testing.T) {
	for attempt := range 40 {
		want := min(250*time.Millisecond<<min(attempt, 20), 30*time.Second)
		for range 20 {
			d := client.Backoff(attempt, 250*time.Millisecond, 30*time.Second)
			if d < want/2 || d > want {
				t.Fatalf("attempt %d: %v outside [%v, %v]", attempt, d, want/2, want)
			}
		}
	}
}

func TestClientReconnectsAfterCometRestart(t *testing.T) {
	cl := apptest.Start(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pc := pushClient(t, cl)
	push := func(n int, what string) {
		for i := range n {
			if _, err := pc.PushRoom(ctx, &apipb.PushRoomRequest{Room: "lobby", Content: &apipb.Content{Body: []byte(fmt.Sprint(what, i)), ClientMsgId: fmt.Sprint(what, i)}}); err != nil {
				t.Fatal(err)
			}
		}
	}

	bob, err := client.New(client.Config{
		URL:        cl.URL,
		Token:      func(context.Context) (string, error) { return cl.Token("bob"), nil },
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	next(t, bob, client.Connected)
	j, err := bob.Join(ctx, "lobby")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]*clientpb.Message{}
	push(2, "before ")
	collect(t, bob, got, func() bool { return len(got["room:lobby"]) >= 2 })

	// The comet stops (1001, going away); messages go on meanwhile; a
	// comet comes back at the same address.
	cl.StopComet()
	if ev := next(t, bob, client.Disconnected); websocket.CloseStatus(ev.Err) != websocket.StatusGoingAway {
		t.Fatalf("disconnected with %v, want 1001", ev.Err)
	}
	push(3, "meanwhile ")
	cl.StartComet()
	if ev := next(t, bob, client.Connected); !ev.Reconnect {
		t.Fatalf("not a reconnect: %+v", ev)
	}
	push(1, "after ")
	collect(t, bob, got, func() bool { return len(got["room:lobby"]) >= 6 })
	var want []uint64
	for s := j.GetLatestSeq() + 1; s <= j.GetLatestSeq()+6; s++ {
		want = append(want, s)
	}
	if g := seqs(got)["room:lobby"]; !slices.Equal(g, want) {
		t.Fatalf("bob got %v, want %v once each, in order", g, want)
	}
}

func TestClientPingsKeepASilentConnection(t *testing.T) {
	const idle = time.Second
	cl := apptest.Start(t, nil, apptest.IdleTimeout(idle))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// Without pings the comet closes a silent connection...
	mute, err := client.Dial(ctx, cl.URL, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()
	if _, err := mute.Login(ctx, cl.Token("alice"), "test"); err != nil {
		t.Fatal(err)
	}
	// ...while a Client pinging more often than that stays.
	c, err := client.New(client.Config{
		URL:          cl.URL,
		Token:        func(context.Context) (string, error) { return cl.Token("bob"), nil },
		PingInterval: idle / 4,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	next(t, c, client.Connected)
	select {
	case <-mute.Done():
		if websocket.CloseStatus(mute.Err()) != websocket.StatusPolicyViolation {
			t.Fatalf("the silent connection ended with %v, want 1008", mute.Err())
		}
	case <-ctx.Done():
		t.Fatal("the silent connection was not closed")
	}
	quiet := time.After(3 * idle)
	for done := false; !done; {
		select {
		case ev := <-c.Events():
			if ev.Kind == client.Disconnected {
				t.Fatalf("the pinging client was disconnected: %v", ev.Err)
			}
		case <-quiet:
			done = true
		}
	}
	if _, err := c.SendRoom(ctx, "lobby", []byte("still here")); err != nil {
		t.Fatal(err)
	}
}

// TestClientReadTypingEditRecall: the Client's helpers for read state,
// typing, edit and recall (issue 14) against a whole cluster: bob's Ack
// is answered with his position, alice sees it as a read receipt in
// their 1:1 conversation, her typing reaches bob, and her edit and recall
// reach him as new messages naming the seq they change.
func TestClientReadTypingEditRecall(t *testing.T) {
	cl := apptest.Start(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	connect := func(user string) *client.Client {
		c, err := client.New(client.Config{URL: cl.URL, Token: func(context.Context) (string, error) { return cl.Token(user), nil }})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		next(t, c, client.Connected)
		return c
	}
	alice, bob := connect("alice"), connect("bob")

	sent, err := alice.SendUser(ctx, "bob", []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	conv := sent.GetConversation()
	if ev := next(t, bob, client.Messages); ev.Messages[0].GetSeq() != sent.GetSeq() {
		t.Fatalf("bob got %v, want seq %d", ev.Messages, sent.GetSeq())
	}

	read, err := bob.Ack(ctx, conv, sent.GetSeq())
	if err != nil {
		t.Fatal(err)
	}
	if read.GetSeq() != sent.GetSeq() || read.GetUser() != "bob" {
		t.Fatalf("Ack answered %v, want bob at %d", read, sent.GetSeq())
	}
	if ev := next(t, alice, client.Read); ev.Read.GetUser() != "bob" || ev.Read.GetSeq() != sent.GetSeq() {
		t.Fatalf("alice's read receipt %v", ev.Read)
	}

	if err := alice.Typing(ctx, conv); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, bob, client.Typing); ev.Typing.GetUser() != "alice" || ev.Typing.GetConversation() != conv {
		t.Fatalf("bob's typing event %v", ev.Typing)
	}

	// The original's client_msg_id names it for its edit and recall.
	orig := &clientpb.Send{ClientMsgId: "orig-1", To: &clientpb.Send_User{User: "bob"}, Body: []byte("first")}
	o, err := alice.Send(ctx, orig)
	if err != nil {
		t.Fatal(err)
	}
	next(t, bob, client.Messages)
	if _, err := alice.Edit(ctx, &clientpb.Send{To: &clientpb.Send_User{User: "bob"}, Body: []byte("first, edited")}, "orig-1"); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, bob, client.Messages); ev.Messages[0].GetEdits() != o.GetSeq() || string(ev.Messages[0].GetBody()) != "first, edited" {
		t.Fatalf("edit reached bob as %v, want edits=%d", ev.Messages[0], o.GetSeq())
	}
	if _, err := alice.Recall(ctx, &clientpb.Send{To: &clientpb.Send_User{User: "bob"}}, "orig-1"); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, bob, client.Messages); ev.Messages[0].GetRecalls() != o.GetSeq() {
		t.Fatalf("recall reached bob as %v, want recalls=%d", ev.Messages[0], o.GetSeq())
	}
}

// TestClientWaitsWhenRateLimited: a Client whose messages pass the
// server's burst waits as each RATE_LIMITED answer says and sends again,
// so every message goes through; a bare Conn sending at once meanwhile
// is refused, with the wait in its Error.
func TestClientWaitsWhenRateLimited(t *testing.T) {
	cl := apptest.Start(t, func(s *app.Settings) { s.RequestRate, s.RequestBurst, s.SendBurst = 4, 50, 2 })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := client.New(client.Config{
		URL:   cl.URL,
		Token: func(context.Context) (string, error) { return cl.Token("alice"), nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	next(t, c, client.Connected)
	for i := range 6 {
		if _, err := c.SendRoom(ctx, "lobby", []byte(fmt.Sprint("m", i))); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	raw, err := client.Dial(ctx, cl.URL, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Login(ctx, cl.Token("alice"), "test"); err != nil {
		t.Fatal(err)
	}
	// Three at once, not one after the other: alice's budget is shared
	// and at most one is left, but a send waiting for its answer on a
	// loaded machine could outlast the refill (one every 250 ms).
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() { _, errs[i] = raw.SendRoom(ctx, "lobby", []byte(fmt.Sprint("raw", i))) })
	}
	wg.Wait()
	var e *client.Error
	for _, err := range errs {
		if errors.As(err, &e) && e.Code == clientpb.Error_RATE_LIMITED {
			break
		}
		e = nil
	}
	if e == nil || e.RetryAfter <= 0 {
		t.Fatalf("bare connection sending three at once: %v, want a RATE_LIMITED with a wait", errs)
	}
}

// TestClientJoinsConfiguredRoomsInItsLogin: Config.Rooms are joined in
// the first login (Login.join): the room's messages arrive without a
// Join, and a room the user may not join is reported Left.
func TestClientJoinsConfiguredRoomsInItsLogin(t *testing.T) {
	cl := apptest.Start(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pc := pushClient(t, cl)
	carol, err := client.New(client.Config{
		URL:   cl.URL,
		Token: func(context.Context) (string, error) { return cl.Token("carol"), nil },
		Rooms: []string{"lobby", "dev"}, // carol is no member of dev
	})
	if err != nil {
		t.Fatal(err)
	}
	defer carol.Close()
	if ev := next(t, carol, client.Left); ev.Room != "dev" {
		t.Fatalf("left %q, want dev", ev.Room)
	}
	next(t, carol, client.Connected)
	if _, err := pc.PushRoom(ctx, &apipb.PushRoomRequest{Room: "lobby", Content: &apipb.Content{Body: []byte("hi"), ClientMsgId: "hi"}}); err != nil {
		t.Fatal(err)
	}
	got := map[string][]*clientpb.Message{}
	collect(t, carol, got, func() bool { return len(got["room:lobby"]) >= 1 })
	if rooms := carol.Rooms(); !slices.Equal(rooms, []string{"lobby"}) {
		t.Fatalf("rooms %v, want [lobby]", rooms)
	}
}

// TestClientTakesTheServersPositionsWhenItsOwnAreAhead: positions kept
// from another history (a reset deployment, another deployment) are past
// the server's latest seqs, or name 1:1 conversations the server does
// not list; the client takes the server's instead of dropping the new
// messages as repeats, in a room joined in the Login, in one joined
// later and in a 1:1 conversation.
func TestClientTakesTheServersPositionsWhenItsOwnAreAhead(t *testing.T) {
	cl := apptest.Start(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pc := pushClient(t, cl)
	bob, err := client.New(client.Config{
		URL:       cl.URL,
		Token:     func(context.Context) (string, error) { return cl.Token("bob"), nil },
		Rooms:     []string{"lobby"},
		Positions: map[string]uint64{"room:lobby": 1000, "room:dev": 1000, "dm:bob:dave": 1000},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	next(t, bob, client.Connected)
	if _, err := bob.Join(ctx, "dev"); err != nil {
		t.Fatal(err)
	}
	for _, room := range []string{"lobby", "dev"} {
		if _, err := pc.PushRoom(ctx, &apipb.PushRoomRequest{Room: room, Content: &apipb.Content{Body: []byte("hi"), ClientMsgId: "hi-" + room}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pc.PushUsers(ctx, &apipb.PushUsersRequest{From: "dave", Users: []string{"bob"}, Content: &apipb.Content{Body: []byte("hi"), ClientMsgId: "hi-dm"}}); err != nil {
		t.Fatal(err)
	}
	got := map[string][]*clientpb.Message{}
	collect(t, bob, got, func() bool {
		return len(got["room:lobby"]) >= 1 && len(got["room:dev"]) >= 1 && len(got["dm:bob:dave"]) >= 1
	})
	if p := bob.Positions(); p["room:lobby"] >= 1000 || p["room:dev"] >= 1000 || p["dm:bob:dave"] >= 1000 {
		t.Errorf("positions %v still past the server's", p)
	}
}

// TestClientGivesUpWhenItsLoginIsRefusedForGood: a Client whose account
// is disabled while it is connected reconnects, is refused UNKNOWN_USER,
// reports a final Disconnected and stops (outside check: the terminal chat
// retried forever); one whose token is refused twice in a row stops too.
func TestClientGivesUpWhenItsLoginIsRefusedForGood(t *testing.T) {
	cl := apptest.Start(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl.PutUser(&apipb.PutUserRequest{User: "dora", Name: "Dora"})
	final := func(c *client.Client, code clientpb.Error_Code) {
		t.Helper()
		var last client.Event
		timeout := time.After(30 * time.Second)
		for open := true; open; {
			select {
			case ev, ok := <-c.Events():
				if ok {
					last = ev
				}
				open = ok
			case <-timeout:
				t.Fatalf("still running 30 s on; last event %+v", last)
			}
		}
		var e *client.Error
		if last.Kind != client.Disconnected || !last.Final || !errors.As(last.Err, &e) || e.Code != code {
			t.Fatalf("last event %+v, want a final Disconnected with %v", last, code)
		}
		if _, err := c.SendUser(ctx, "bob", []byte("hi")); !errors.Is(err, client.ErrClosed) {
			t.Fatalf("a send after giving up: %v, want ErrClosed", err)
		}
	}

	dora, err := client.New(client.Config{
		URL:        cl.URL,
		Token:      func(context.Context) (string, error) { return cl.Token("dora"), nil },
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer dora.Close()
	next(t, dora, client.Connected)
	cl.PutUser(&apipb.PutUserRequest{User: "dora", Name: "Dora", Disabled: true})
	final(dora, clientpb.Error_UNKNOWN_USER)

	var mu sync.Mutex
	asked := 0
	bad, err := client.New(client.Config{
		URL: cl.URL,
		Token: func(context.Context) (string, error) {
			mu.Lock()
			defer mu.Unlock()
			asked++
			return "not-a-token", nil
		},
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	final(bad, clientpb.Error_BAD_TOKEN)
	mu.Lock()
	defer mu.Unlock()
	if asked != 2 {
		t.Fatalf("token asked %d times, want 2 (one more chance after the first refusal)", asked)
	}
}
