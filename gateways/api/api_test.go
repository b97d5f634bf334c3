package api_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/laneim/laneim/gateways/api"
	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/apipb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/wiring/discovery"
)

type fakePresence struct{}

func (fakePresence) Online(_ context.Context, users ...string) (map[string]bool, error) {
	out := map[string]bool{}
	for _, u := range users {
		out[u] = u == "alice"
	}
	return out, nil
}

func (fakePresence) RoomOnline(_ context.Context, room string) (int, int, error) {
	return len(room), 2 * len(room), nil
}

// serve runs the gateway on a real loopback listener and returns a client
// presenting token.
func serve(t *testing.T, token string) (apipb.PushClient, *testinfra.Recorder) {
	return serveWith(t, token, api.Optional{})
}

// serveWith is serve with the server's optional dependencies.
func serveWith(t *testing.T, token string, opt api.Optional) (apipb.PushClient, *testinfra.Recorder) {
	t.Helper()
	rec := &testinfra.Recorder{}
	s, err := api.New(api.Config{Token: "secret-token", MaxBodyBytes: 10}, rec, fakePresence{}, opt, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveGRPC(t, s, l)
	pc, closer, err := api.Dial(context.Background(), l.Addr().String(), token)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closer.Close() })
	return pc, rec
}

// serveGRPC serves s's gRPC server on l until the test ends.
func serveGRPC(t *testing.T, s *api.Server, l net.Listener) {
	g := s.GRPCServer()
	done := make(chan error, 1)
	go func() { done <- g.Serve(l) }()
	t.Cleanup(func() {
		g.Stop()
		<-done
	})
}

func submitted(t *testing.T, rec *testinfra.Recorder) []*topicpb.Submitted {
	t.Helper()
	var out []*topicpb.Submitted
	for _, p := range rec.Take() {
		if p.Topic != topics.Submitted.Name {
			t.Fatalf("published to %s", p.Topic)
		}
		s, err := topics.Submitted.Decode(p.Msg)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func TestTokenRequired(t *testing.T) {
	t.Parallel()
	for _, tok := range []string{"", "wrong"} {
		pc, _ := serve(t, tok)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := pc.RoomOnline(ctx, &apipb.RoomOnlineRequest{Room: "r"})
		cancel()
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("token %q: %v, want Unauthenticated", tok, err)
		}
	}
}

func TestPushes(t *testing.T) {
	t.Parallel()
	pc, rec := serve(t, "secret-token")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	r, err := pc.PushUsers(ctx, &apipb.PushUsersRequest{From: "shop", Users: []string{"a", "b"}, Content: &apipb.Content{Body: []byte("hi"), ClientMsgId: "order-1"}})
	if err != nil || r.GetAccepted() != 2 {
		t.Fatalf("push users = %v, %v", r, err)
	}
	subs := submitted(t, rec)
	if len(subs) != 2 || subs[0].GetUser() != "a" || subs[1].GetUser() != "b" || subs[0].GetClientMsgId() != "order-1:a" || !subs[0].GetTrusted() || subs[0].GetSender() != "shop" {
		t.Fatalf("submitted %v", subs)
	}

	if _, err := pc.PushRoom(ctx, &apipb.PushRoomRequest{Room: "lobby", Content: &apipb.Content{Body: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	subs = submitted(t, rec)
	if len(subs) != 1 || subs[0].GetRoom() != "lobby" || subs[0].GetSender() != topics.SystemSender || subs[0].GetClientMsgId() == "" {
		t.Fatalf("room push %v", subs)
	}

	if _, err := pc.Broadcast(ctx, &apipb.BroadcastRequest{Content: &apipb.Content{Body: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	if subs = submitted(t, rec); len(subs) != 1 || !subs[0].GetBroadcast() {
		t.Fatalf("broadcast %v", subs)
	}
}

// TestPushesToUnknownAreNotFound: with a directory to look in, a push to
// a room or a user it does not have is refused NotFound, naming them, and
// nothing of it is published (routing would drop it unseen).
func TestPushesToUnknownAreNotFound(t *testing.T) {
	t.Parallel()
	pc, rec := serveWith(t, "secret-token", api.Optional{Lookup: knownOnly{"alice": true, "bob": true, "lobby": true}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	body := &apipb.Content{Body: []byte("x")}
	for _, tc := range []struct {
		push func() error
		want string // in the NotFound's text; empty: accepted
	}{
		{func() error {
			_, err := pc.PushRoom(ctx, &apipb.PushRoomRequest{Room: "lobby", Content: body})
			return err
		}, ""},
		{func() error {
			_, err := pc.PushRoom(ctx, &apipb.PushRoomRequest{Room: "nowhere", Content: body})
			return err
		}, `room "nowhere"`},
		{func() error {
			_, err := pc.PushUsers(ctx, &apipb.PushUsersRequest{Users: []string{"alice", "bob"}, Content: body})
			return err
		}, ""},
		{func() error {
			_, err := pc.PushUsers(ctx, &apipb.PushUsersRequest{Users: []string{"alice", "nobody", "bob", "ghost"}, Content: body})
			return err
		}, `user "nobody", user "ghost"`},
	} {
		err := tc.push()
		subs := submitted(t, rec)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("push to known: %v", err)
		case tc.want == "":
		case status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), tc.want):
			t.Errorf("push to unknown: %v, want NotFound naming %s", err, tc.want)
		case len(subs) > 0:
			t.Errorf("push refused NotFound published %v", subs)
		}
	}
}

// knownOnly is a directory holding the users and rooms it maps to true.
type knownOnly map[string]bool

func (k knownOnly) Users(_ context.Context, ids ...string) (map[string]directory.User, error) {
	return pick(k, ids, func(id string) directory.User { return directory.User{ID: id} }), nil
}

func (k knownOnly) Rooms(_ context.Context, ids ...string) (map[string]directory.Room, error) {
	return pick(k, ids, func(id string) directory.Room { return directory.Room{ID: id} }), nil
}

// pick maps each of ids that k holds to entry(id).
func pick[T any](k knownOnly, ids []string, entry func(string) T) map[string]T {
	out := map[string]T{}
	for _, id := range ids {
		if k[id] {
			out[id] = entry(id)
		}
	}
	return out
}

func TestInvalidArguments(t *testing.T) {
	t.Parallel()
	pc, rec := serve(t, "secret-token")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	body := &apipb.Content{Body: []byte("x")}
	calls := []struct {
		name string
		call func() error
	}{
		{"no users", func() error { _, err := pc.PushUsers(ctx, &apipb.PushUsersRequest{Content: body}); return err }},
		{"empty user", func() error {
			_, err := pc.PushUsers(ctx, &apipb.PushUsersRequest{Users: []string{""}, Content: body})
			return err
		}},
		{"no room", func() error { _, err := pc.PushRoom(ctx, &apipb.PushRoomRequest{Content: body}); return err }},
		{"empty body", func() error { _, err := pc.PushRoom(ctx, &apipb.PushRoomRequest{Room: "r"}); return err }},
		{"body too large", func() error {
			_, err := pc.Broadcast(ctx, &apipb.BroadcastRequest{Content: &apipb.Content{Body: make([]byte, 11)}})
			return err
		}},
		{"client_msg_id too long", func() error {
			_, err := pc.PushRoom(ctx, &apipb.PushRoomRequest{Room: "r", Content: &apipb.Content{Body: []byte("x"), ClientMsgId: strings.Repeat("i", topics.MaxClientMsgIDLen+1)}})
			return err
		}},
		{"content_type too long", func() error {
			_, err := pc.Broadcast(ctx, &apipb.BroadcastRequest{Content: &apipb.Content{Body: []byte("x"), ContentType: strings.Repeat("t", topics.MaxContentTypeLen+1)}})
			return err
		}},
		{"online without users", func() error { _, err := pc.OnlineStatus(ctx, &apipb.OnlineStatusRequest{}); return err }},
		// Ids follow the id rule; the system sender is the gateway's own.
		{"user with a colon", func() error {
			_, err := pc.PushUsers(ctx, &apipb.PushUsersRequest{Users: []string{"bob", "acme:alice"}, Content: body})
			return err
		}},
		{"room with a colon", func() error {
			_, err := pc.PushRoom(ctx, &apipb.PushRoomRequest{Room: "lobby:x", Content: body})
			return err
		}},
		{"sender with a colon", func() error {
			_, err := pc.PushRoom(ctx, &apipb.PushRoomRequest{From: "shop:x", Room: "lobby", Content: body})
			return err
		}},
		{"sender given as the system sender", func() error {
			_, err := pc.Broadcast(ctx, &apipb.BroadcastRequest{From: topics.SystemSender, Content: body})
			return err
		}},
		{"push to the system sender", func() error {
			_, err := pc.PushUsers(ctx, &apipb.PushUsersRequest{Users: []string{topics.SystemSender}, Content: body})
			return err
		}},
		{"online of a user too long", func() error {
			_, err := pc.OnlineStatus(ctx, &apipb.OnlineStatusRequest{Users: []string{strings.Repeat("x", topics.MaxIDLen+1)}})
			return err
		}},
		{"room online of a bad room", func() error {
			_, err := pc.RoomOnline(ctx, &apipb.RoomOnlineRequest{Room: "a b"})
			return err
		}},
	}
	for _, c := range calls {
		if err := c.call(); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", c.name, err)
		}
	}
	if out := rec.Take(); len(out) != 0 {
		t.Errorf("invalid calls published %d messages", len(out))
	}
}

func TestPublishFailureIsUnavailable(t *testing.T) {
	t.Parallel()
	pc, rec := serve(t, "secret-token")
	rec.Err = context.DeadlineExceeded
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := pc.PushRoom(ctx, &apipb.PushRoomRequest{Room: "r", Content: &apipb.Content{Body: []byte("x")}}); status.Code(err) != codes.Unavailable {
		t.Fatalf("push with broker down = %v, want Unavailable", err)
	}
}

func TestPresenceQueries(t *testing.T) {
	t.Parallel()
	pc, _ := serve(t, "secret-token")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	on, err := pc.OnlineStatus(ctx, &apipb.OnlineStatusRequest{Users: []string{"alice", "bob"}})
	if err != nil || !on.GetOnline()["alice"] || on.GetOnline()["bob"] {
		t.Fatalf("online = %v, %v", on, err)
	}
	ro, err := pc.RoomOnline(ctx, &apipb.RoomOnlineRequest{Room: "abc"})
	if err != nil || ro.GetOnlineUsers() != 3 || ro.GetConnections() != 6 {
		t.Fatalf("room online = %v, %v", ro, err)
	}
}

// TestTokenCheckedBeforeTheRequestIsRead: a call without the token is
// refused from its headers, before its request is read, so a caller
// without it cannot make the gateway read (and hold) megabytes; with
// the token, a request larger than the HTTP API's largest body is
// refused as too large.
func TestTokenCheckedBeforeTheRequestIsRead(t *testing.T) {
	t.Parallel()
	s, err := api.New(api.Config{Token: "secret-token", MaxBodyBytes: 10}, &testinfra.Recorder{}, fakePresence{}, api.Optional{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &countingListener{Listener: inner}
	serveGRPC(t, s, l)
	const size = 3 << 20
	big := &apipb.PushRoomRequest{Room: "r", From: "x", Content: &apipb.Content{Body: bytes.Repeat([]byte("x"), size)}}
	for _, tc := range []struct {
		token string
		want  codes.Code
	}{
		{"", codes.Unauthenticated},
		{"wrong", codes.Unauthenticated},
		{"secret-token", codes.ResourceExhausted},
	} {
		pc, closer, err := api.Dial(context.Background(), inner.Addr().String(), tc.token)
		if err != nil {
			t.Fatal(err)
		}
		before := l.read.Load()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = pc.PushRoom(ctx, big)
		cancel()
		read := l.read.Load() - before
		closer.Close()
		if status.Code(err) != tc.want {
			t.Errorf("token %q: %v, want %v", tc.token, err, tc.want)
		}
		if tc.want == codes.Unauthenticated && read > size/4 {
			t.Errorf("token %q: the gateway read %d bytes of a refused call's %d-byte request", tc.token, read, size)
		}
	}
}

// countingListener counts the bytes read from the connections it accepts.
type countingListener struct {
	net.Listener
	read atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countingConn{Conn: c, read: &l.read}, nil
}

type countingConn struct {
	net.Conn
	read *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

// TestPickCometWithEtcdAway: a PickComet whose etcd does not answer is
// answered Unavailable within api.PickCometTimeout, rather than waiting
// for as long as its caller does.
func TestPickCometWithEtcdAway(t *testing.T) {
	t.Parallel()
	hanging := func(ctx context.Context) ([]discovery.Comet, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	pc, _ := serveWith(t, "secret-token", api.Optional{Comets: hanging})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := pc.PickComet(ctx, &apipb.PickCometRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("PickComet with etcd away: %v, want Unavailable", err)
	}
}
