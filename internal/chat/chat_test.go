package chat_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/laneim/laneim/gateways/api"
	"github.com/laneim/laneim/gateways/comet/client"
	"github.com/laneim/laneim/internal/apptest"
	"github.com/laneim/laneim/internal/chat"
	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/apipb"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"),
	)
}

// session is one run of the chat, fed through a pipe.
type session struct {
	in  *io.PipeWriter
	out *testinfra.SyncBuffer
	err chan error
}

func start(ctx context.Context, cfg chat.Config) *session {
	r, w := io.Pipe()
	s := &session{in: w, out: &testinfra.SyncBuffer{}, err: make(chan error, 1)}
	go func() {
		s.err <- chat.Run(ctx, cfg, r, s.out)
		r.Close()
	}()
	return s
}

// shows waits until the output holds each of want, in that order.
func (s *session) shows(t *testing.T, want ...string) {
	t.Helper()
	testinfra.Eventually(t, 30*time.Second, func() error {
		out := s.out.String()
		for _, w := range want {
			i := strings.Index(out, w)
			if i < 0 {
				return fmt.Errorf("output lacks %q:\n%s", w, s.out.String())
			}
			out = out[i+len(w):]
		}
		return nil
	}, "chat output")
}

func (s *session) quit(t *testing.T) {
	t.Helper()
	fmt.Fprintln(s.in, "/quit")
	select {
	case err := <-s.err:
		if err != nil {
			t.Fatalf("chat ended with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("chat did not quit")
	}
	s.in.Close()
}

func TestChat(t *testing.T) {
	cl := apptest.Start(t, nil)
	proxy := cl.Proxy()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

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
	// Before bob runs the chat: a room message and a 1:1 message.
	if _, err := alice.SendRoom(ctx, "lobby", []byte("old news")); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendUser(ctx, "bob", []byte("while you were out")); err != nil {
		t.Fatal(err)
	}

	// bob's first comet is the one behind the proxy; when it goes away,
	// the pick names the other address, once reconnecting is let go: a
	// message sent meanwhile must have reached the comet before bob is
	// back there, or it comes live rather than as missed.
	var picks atomic.Int32
	reconnect := make(chan struct{})
	state := filepath.Join(t.TempDir(), "bob.json")
	cfg := chat.Config{
		Token: cl.Token("bob"), Room: "lobby", ShowIDs: true, StateFile: state,
		Pick: func(pctx context.Context) (string, error) {
			if picks.Add(1) == 1 {
				return proxy.URL, nil
			}
			select {
			case <-reconnect:
			case <-pctx.Done():
				return "", pctx.Err()
			}
			return cl.URL, nil
		},
		PingInterval: 100 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	}
	bob := start(ctx, cfg)
	bob.shows(t,
		"* logged in as bob",
		"(recent) [dm:alice:bob #1] alice: while you were out",
		"* joined lobby (2 online: alice, bob; latest #1)",
		"(history) [room:lobby #1] alice: old news  (id ",
		"[lobby]> ")

	fmt.Fprintln(bob.in, "/who")
	fmt.Fprintln(bob.in, "/rooms")
	bob.shows(t, "* online in lobby (2): alice, bob", "* joined: lobby (current)", "* also member of: dev")
	// carol comes: presence keeps the list current.
	carol, err := client.Dial(ctx, cl.URL, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer carol.Close()
	if _, err := carol.Login(ctx, cl.Token("carol"), "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := carol.Join(ctx, "lobby"); err != nil {
		t.Fatal(err)
	}
	bob.shows(t, "* carol joined lobby (3 online)")
	fmt.Fprintln(bob.in, "/who")
	bob.shows(t, "* carol joined lobby (3 online)", "* online in lobby (3): alice, bob, carol")

	// Silence longer than a few ping intervals changes nothing; then the
	// comet goes away.
	time.Sleep(500 * time.Millisecond)
	proxy.Cut()
	bob.shows(t, "* disconnected")
	if _, err := alice.SendRoom(ctx, "lobby", []byte("said meanwhile")); err != nil {
		t.Fatal(err)
	}
	// alice, joined on the comet bob comes back to, gets it live: the
	// comet has it, so bob must catch up on it.
	for seen := false; !seen; {
		select {
		case f := <-alice.Frames():
			for _, m := range f.GetMessages().GetMessages() {
				seen = seen || string(m.GetBody()) == "said meanwhile"
			}
		case <-ctx.Done():
			t.Fatal("alice never got her own message")
		}
	}
	close(reconnect)
	bob.shows(t, "* reconnected as bob", "(missed) [room:lobby #2] alice: said meanwhile")
	if picks.Load() < 2 {
		t.Fatalf("%d picks, want one per connection", picks.Load())
	}

	fmt.Fprintln(bob.in, "hello again")
	fmt.Fprintln(bob.in, "/msg alice psst")
	bob.shows(t, "[room:lobby #3] bob: hello again", "[dm:alice:bob #2] bob: psst")
	fmt.Fprintln(bob.in, "/history 2")
	bob.shows(t, "[dm:alice:bob #2] bob: psst", "(history) [room:lobby #2] alice: said meanwhile", "(history) [room:lobby #3] bob: hello again")
	fmt.Fprintln(bob.in, "/leave")
	fmt.Fprintln(bob.in, "where does this go")
	bob.shows(t, "* left lobby", "[no room]> ", "! no room")
	// A room without messages says so rather than print nothing.
	fmt.Fprintln(bob.in, "/join dev")
	bob.shows(t, "* joined dev")
	fmt.Fprintln(bob.in, "/history 5")
	bob.shows(t, "* no messages in dev yet")
	bob.quit(t)

	// The state file remembers what bob saw: a 1:1 message sent while
	// the chat was not running is shown as missed at the next login.
	if b, err := os.ReadFile(state); err != nil || !strings.Contains(string(b), `"dm:alice:bob":2`) {
		t.Fatalf("state file %q, %v", b, err)
	}
	if _, err := alice.SendUser(ctx, "bob", []byte("are you there?")); err != nil {
		t.Fatal(err)
	}
	cfg.Pick, cfg.URL = nil, cl.URL
	bob = start(ctx, cfg)
	bob.shows(t, "* logged in as bob", "(missed) [dm:alice:bob #3] alice: are you there?")
	bob.shows(t, "* joined lobby", "[lobby]> ")
	if strings.Contains(bob.out.String(), "#1] alice: while you were out") {
		t.Fatalf("a message seen in the last run shown again:\n%s", bob.out.String())
	}

	// The comet restarts; what the product pushed meanwhile is shown.
	pc, closer, err := api.Dial(ctx, cl.Settings.APIAddr, cl.Settings.APIToken)
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	cl.StopComet()
	bob.shows(t, "* disconnected")
	// While it reconnects, a line that needs the server is refused at
	// once, and /rooms still answers (newcomer check: a typed line held
	// the prompt, and /quit, until it timed out).
	fmt.Fprintln(bob.in, "typed while away")
	fmt.Fprintln(bob.in, "/rooms")
	bob.shows(t, `* not connected (reconnecting): "typed while away" not sent`, "* joined: lobby (current)")
	if _, err := pc.PushRoom(ctx, &apipb.PushRoomRequest{Room: "lobby", Content: &apipb.Content{Body: []byte("during the restart"), ClientMsgId: "r1"}}); err != nil {
		t.Fatal(err)
	}
	cl.StartComet()
	bob.shows(t, "* reconnected as bob", "(missed) [room:lobby #4] ~system: during the restart")
	bob.quit(t)
}

func TestChatRefusedLoginEnds(t *testing.T) {
	cl := apptest.Start(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := start(ctx, chat.Config{URL: cl.URL, Token: "not-a-token"})
	select {
	case err := <-s.err:
		if err == nil || !strings.Contains(err.Error(), "BAD_TOKEN") {
			t.Fatalf("chat with a bad token ended with %v, want BAD_TOKEN", err)
		}
	case <-ctx.Done():
		t.Fatal("chat with a bad token did not end")
	}
	s.in.Close()
}

func TestChatMovesToAnotherComet(t *testing.T) {
	cl := apptest.Start(t, nil, apptest.WithEtcd())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pc, closer, err := api.Dial(ctx, cl.Settings.APIAddr, cl.Settings.APIToken)
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	testinfra.Eventually(t, 30*time.Second, func() error {
		_, err := pc.PickComet(ctx, &apipb.PickCometRequest{})
		return err
	}, "the comet never registered")

	bob := start(ctx, chat.Config{
		Pick: chat.PickComet(pc), Token: cl.Token("bob"), Room: "lobby",
		PingInterval: 200 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	})
	bob.shows(t, "* logged in as bob (session c1/", "* joined lobby")

	// c1 stops (and leaves etcd); another comet, c2, starts elsewhere.
	cl.MoveComet("c2")
	cl.StopComet()
	bob.shows(t, "* disconnected")
	if _, err := pc.PushRoom(ctx, &apipb.PushRoomRequest{Room: "lobby", Content: &apipb.Content{Body: []byte("while moving"), ClientMsgId: "m1"}}); err != nil {
		t.Fatal(err)
	}
	cl.StartComet()
	bob.shows(t, "* reconnected as bob (session c2/", "(missed) [room:lobby #1] ~system: while moving")
	bob.quit(t)
}

// TestChatEndsWhenTheAccountIsDisabled: a chat whose account is disabled
// says so and ends, instead of reconnecting forever (outside check).
func TestChatEndsWhenTheAccountIsDisabled(t *testing.T) {
	cl := apptest.Start(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl.PutUser(&apipb.PutUserRequest{User: "dora", Name: "Dora"})
	s := start(ctx, chat.Config{URL: cl.URL, Token: cl.Token("dora"), MaxBackoff: 200 * time.Millisecond})
	defer s.in.Close()
	s.shows(t, "logged in as dora")
	cl.PutUser(&apipb.PutUserRequest{User: "dora", Name: "Dora", Disabled: true})
	select {
	case err := <-s.err:
		if err == nil || !strings.Contains(err.Error(), "UNKNOWN_USER") {
			t.Fatalf("chat of a disabled account ended with %v, want UNKNOWN_USER", err)
		}
	case <-ctx.Done():
		t.Fatalf("chat of a disabled account did not end:\n%s", s.out.String())
	}
	s.shows(t, "giving up")
}

// TestChatQuitsBeforeItConnects: a chat that cannot reach its comet says
// so, and /quit or the end of its input ends it (newcomer check: only a
// signal did).
func TestChatQuitsBeforeItConnects(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url := "ws://" + testinfra.FreeAddr(t) + "/ws" // nothing listens there
	for _, end := range []string{"/quit", "end of input"} {
		t.Run(end, func(t *testing.T) {
			s := start(ctx, chat.Config{URL: url, Token: "any", MaxBackoff: 100 * time.Millisecond})
			s.shows(t, "cannot connect", "retrying; /quit to stop")
			fmt.Fprintln(s.in, "hello?")
			s.shows(t, `not connected yet: "hello?" not sent`)
			if end == "/quit" {
				fmt.Fprintln(s.in, "/quit")
			} else {
				s.in.Close()
			}
			select {
			case err := <-s.err:
				if err != nil {
					t.Fatalf("chat ended with %v", err)
				}
			case <-ctx.Done():
				t.Fatal("chat did not end")
			}
			s.in.Close()
		})
	}
}
