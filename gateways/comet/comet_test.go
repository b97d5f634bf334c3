package comet_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/coder/websocket"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/gateways/comet"
	"github.com/laneim/laneim/gateways/comet/client"
	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/auth"
	"github.com/laneim/laneim/wiring/pipeline"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Sarama's metrics library starts one process-wide ticker (module test).
		goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"),
	)
}

const wait = 5 * time.Second

// testSecret signs the tokens of the tests' logins.
const testSecret = "test-secret-of-the-comet-tests-0123456789"

// token returns a valid token of user, signed with testSecret.
func token(t *testing.T, user string) string {
	t.Helper()
	tok, err := auth.MintToken([]byte(testSecret), user, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

type fixture struct {
	t       *testing.T
	comet   *comet.Comet
	h       pipeline.Handler
	rec     *testinfra.Recorder
	backlog []testinfra.Published // taken from rec, not yet looked at by next
	url     string
	srv     *httptest.Server
}

// newFixture serves a comet "c1" publishing to a Recorder on an httptest
// server; everything is closed, and checked for leaks, when the test ends.
func newFixture(t *testing.T, cfg comet.Config) *fixture {
	t.Helper()
	cfg.ID = "c1"
	if cfg.Secret == "" {
		cfg.Secret = testSecret
	}
	rec := &testinfra.Recorder{}
	c, err := comet.New(cfg, rec, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c)
	f := &fixture{t: t, comet: c, h: c.Pipeline(), rec: rec, srv: srv, url: "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"}
	t.Cleanup(func() {
		c.Close()
		srv.Close()
	})
	return f
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

func (f *fixture) dial(opts client.Options) *client.Conn {
	f.t.Helper()
	conn, err := client.Dial(ctxT(f.t), f.url, opts)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { conn.Close() })
	return conn
}

// deliver feeds a Delivery to the comet's handler, as the router would.
func (f *fixture) deliver(d *topicpb.Delivery) {
	f.t.Helper()
	msg, err := topics.Deliveries.Encode(d)
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.h.Handle(msg); err != nil {
		f.t.Fatalf("handle delivery: %v", err)
	}
}

// next waits for the oldest message published to topic that next has not
// returned yet.
func next[T proto.Message](f *fixture, topic topics.Topic[T]) T {
	f.t.Helper()
	var out T
	testinfra.Eventually(f.t, wait, func() bool {
		f.backlog = append(f.backlog, f.rec.Take()...)
		for i, p := range f.backlog {
			if p.Topic != topic.Name {
				continue
			}
			v, err := topic.Decode(p.Msg)
			if err != nil {
				f.t.Fatal(err)
			}
			f.backlog = append(f.backlog[:i:i], f.backlog[i+1:]...)
			out = v
			return true
		}
		return false
	}, "nothing published to %s", topic.Name)
	return out
}

// login logs a new connection in as user, playing the pipeline's part,
// and returns the connection and its id.
func (f *fixture) login(user string, opts client.Options) (*client.Conn, string) {
	f.t.Helper()
	return f.loginWith(user, opts, &clientpb.Login{Device: "test"})
}

// loginWith is login with a Login frame of login's fields and the user's
// token.
func (f *fixture) loginWith(user string, opts client.Options, login *clientpb.Login) (*client.Conn, string) {
	f.t.Helper()
	conn := f.dial(opts)
	ctx := ctxT(f.t)
	login.Token = token(f.t, user)
	if err := conn.Write(ctx, &clientpb.ClientFrame{RequestId: 7, Body: &clientpb.ClientFrame_Login{Login: login}}); err != nil {
		f.t.Fatal(err)
	}
	req := next(f, topics.LoginRequests)
	if req.GetUser() != user || req.GetSession().GetComet() != "c1" || req.GetRequestId() != 7 {
		f.t.Fatalf("login request %v", req)
	}
	f.acceptLogin(req)
	fr := nextFrame(f.t, conn)
	if fr.GetRequestId() != 7 || fr.GetLoginResult().GetUser() != user {
		f.t.Fatalf("login answer %v", fr)
	}
	return conn, req.GetSession().GetConn()
}

// acceptLogin answers the login request req as presence does: the comet
// authenticates the connection as req's user and writes a LoginResult
// under req's request id.
func (f *fixture) acceptLogin(req *topicpb.LoginRequest) {
	f.t.Helper()
	f.deliver(&topicpb.Delivery{
		Conns:   []string{req.GetSession().GetConn()},
		Control: &topicpb.Control{Authenticate: req.GetUser()},
		Frame:   &clientpb.ServerFrame{RequestId: req.GetRequestId(), Body: &clientpb.ServerFrame_LoginResult{LoginResult: &clientpb.LoginResult{Ok: true, User: req.GetUser()}}},
	})
}

func (f *fixture) join(id, room string) {
	f.t.Helper()
	f.deliver(&topicpb.Delivery{Conns: []string{id}, Control: &topicpb.Control{Join: room}})
}

func nextFrame(t *testing.T, conn *client.Conn) *clientpb.ServerFrame {
	t.Helper()
	return nextFrameWithin(t, conn, wait)
}

// nextFrameWithin is nextFrame waiting up to d.
func nextFrameWithin(t *testing.T, conn *client.Conn, d time.Duration) *clientpb.ServerFrame {
	t.Helper()
	select {
	case fr, ok := <-conn.Frames():
		if !ok {
			t.Fatalf("connection closed: %v", conn.Err())
		}
		return fr
	case <-time.After(d):
		t.Fatalf("no frame in %v", d)
	}
	return nil
}

func roomMessage(room string, seq uint64) *topicpb.Delivery {
	return &topicpb.Delivery{Room: room, Frame: &clientpb.ServerFrame{Body: &clientpb.ServerFrame_Messages{Messages: &clientpb.MessageBatch{
		Messages: []*clientpb.Message{{Conversation: topics.RoomConversation(room), Seq: seq, Body: []byte("x")}},
	}}}}
}

// sentinel is a frame sent to one connection to prove nothing came before it.
func sentinel(id string) *topicpb.Delivery {
	return &topicpb.Delivery{Conns: []string{id}, Frame: &clientpb.ServerFrame{Body: &clientpb.ServerFrame_Presence{Presence: &clientpb.PresenceChange{Room: "sentinel"}}}}
}

func (f *fixture) expectNothingMore(conn *client.Conn, id string) {
	f.t.Helper()
	f.deliver(sentinel(id))
	if fr := nextFrame(f.t, conn); fr.GetPresence().GetRoom() != "sentinel" {
		f.t.Fatalf("unexpected frame %v", fr)
	}
}

// readMessages collects n messages and the batches (frames) they came in.
func readMessages(t *testing.T, conn *client.Conn, n int) (msgs []*clientpb.Message, batches [][]*clientpb.Message) {
	t.Helper()
	return readMessagesWithin(t, conn, n, wait)
}

// readMessagesWithin is readMessages waiting up to d for each frame.
func readMessagesWithin(t *testing.T, conn *client.Conn, n int, d time.Duration) (msgs []*clientpb.Message, batches [][]*clientpb.Message) {
	t.Helper()
	for len(msgs) < n {
		fr := nextFrameWithin(t, conn, d)
		b := fr.GetMessages()
		if b == nil {
			t.Fatalf("got %v, want messages", fr)
		}
		batches = append(batches, b.GetMessages())
		msgs = append(msgs, b.GetMessages()...)
	}
	return msgs, batches
}

func code(err error) clientpb.Error_Code {
	var e *client.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return -1
}

func closeError(t *testing.T, conn *client.Conn) websocket.CloseError {
	t.Helper()
	select {
	case <-conn.Done():
	case <-time.After(wait):
		t.Fatal("connection not closed")
	}
	var ce websocket.CloseError
	if !errors.As(conn.Err(), &ce) {
		t.Fatalf("closed without a close frame: %v", conn.Err())
	}
	return ce
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  comet.Config
		err  string
	}{
		{"defaults", comet.Config{ID: "comet-1", Secret: testSecret}, ""},
		{"no id", comet.Config{Secret: testSecret}, "no id"},
		{"slash in id", comet.Config{ID: "a/b", Secret: testSecret}, "must not contain /"},
		{"relative path", comet.Config{ID: "a", Path: "ws", Secret: testSecret}, "path must start with /"},
		{"no secret", comet.Config{ID: "a"}, "no token secret"},
		{"short secret", comet.Config{ID: "a", Secret: "0123456789"}, "at least 32"},
		{"placeholder secret", comet.Config{ID: "a", Secret: "change-me: the HMAC key of login tokens"}, "placeholder"},
		{"negative token lifetime", comet.Config{ID: "a", Secret: testSecret, Token: auth.Policy{MaxLifetime: -time.Second}}, "negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := comet.New(tc.cfg, &testinfra.Recorder{}, nil)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			got := c.Config()
			want := comet.Config{ID: "comet-1", Secret: testSecret, Addr: "127.0.0.1:8080", Path: "/ws", MaxFrameBytes: 64 << 10, SendQueue: 256,
				WriteTimeout: 10 * time.Second, LoginTimeout: 10 * time.Second, IdleTimeout: 60 * time.Second, RequestTimeout: 5 * time.Second, MaxInFlight: 32, MaxReadsInFlight: 256, RecentBytes: 64 << 20, RequestRate: 20, RequestBurst: 50, SendBurst: 5, MaxTokenBytes: 4 << 10, SendQueueBytes: 4 << 20, MaxConnsPerUser: 100, MaxConnsPerAddress: 1000, MaxQueuedBytes: 512 << 20, MaxStrikes: 5,
				HeartbeatInterval: 10 * time.Second, BatchWindow: 10 * time.Millisecond, MaxBatchWindow: 500 * time.Millisecond, FrameBudget: 60000}
			if got != want {
				t.Errorf("config %+v, want %+v", got, want)
			}
		})
	}
	if _, err := comet.New(comet.Config{ID: "a", Secret: testSecret}, nil, nil); err == nil {
		t.Error("New without a publisher succeeded")
	}
}

func TestHandler(t *testing.T) {
	f := newFixture(t, comet.Config{})
	if f.h.Name != "comet.c1" || f.h.Topic != "deliver.c1" || pipeline.ConsumerGroup(f.h.Name) != "laneim.comet.c1" {
		t.Errorf("handler %q on %q", f.h.Name, f.h.Topic)
	}
	if err := f.h.Handle(message.NewMessage("poison", []byte{0xff, 0xff})); !pipeline.IsPermanent(err) {
		t.Errorf("undecodable delivery: %v, want a permanent error", err)
	}
	// Stale targets are skipped.
	f.deliver(&topicpb.Delivery{Conns: []string{"gone.1"}, Control: &topicpb.Control{Authenticate: "x", Join: "r", Close: "bye"}, Frame: &clientpb.ServerFrame{}})
	f.deliver(roomMessage("nobody-here", 1))
	f.deliver(&topicpb.Delivery{Users: []string{"nobody"}, Frame: &clientpb.ServerFrame{}})
	if st := f.comet.Stats(); st.Connections != 0 || st.Rooms != 0 || st.Users != 0 {
		t.Errorf("stale deliveries changed the comet: %+v", st)
	}
}

func TestLoginFlow(t *testing.T) {
	f := newFixture(t, comet.Config{})
	conn := f.dial(client.Options{})
	ctx := ctxT(t)
	type answer struct {
		res *clientpb.LoginResult
		err error
	}
	done := make(chan answer, 1)
	go func() { // ends when the comet answers or ctx expires
		res, err := conn.Login(ctx, token(t, "alice"), "ios")
		done <- answer{res, err}
	}()
	req := next(f, topics.LoginRequests)
	id := req.GetSession().GetConn()
	if !regexp.MustCompile(`^[0-9a-f]{8}\.[0-9]+$`).MatchString(id) || req.GetSession().GetComet() != "c1" ||
		req.GetUser() != "alice" || req.GetTokenExpiresUnixMs() <= time.Now().UnixMilli() || req.GetDevice() != "ios" || req.GetRequestId() == 0 ||
		time.Since(time.UnixMilli(req.GetReceivedUnixMs())) > time.Minute ||
		req.GetDeadlineUnixMs()-req.GetReceivedUnixMs() != (5*time.Second).Milliseconds() { // the default RequestTimeout
		t.Fatalf("login request %v", req)
	}
	f.deliver(&topicpb.Delivery{
		Conns:   []string{id},
		Control: &topicpb.Control{Authenticate: "alice"},
		Frame: &clientpb.ServerFrame{RequestId: req.GetRequestId(), Body: &clientpb.ServerFrame_LoginResult{LoginResult: &clientpb.LoginResult{
			Ok: true, User: "alice", Session: "c1/" + id, ProtocolVersion: 1,
		}}},
	})
	a := <-done
	if a.err != nil || !a.res.GetOk() || a.res.GetUser() != "alice" || a.res.GetSession() != "c1/"+id {
		t.Fatalf("login = %v, %v", a.res, a.err)
	}
	if st := f.comet.Stats(); st.Connections != 1 || st.Users != 1 {
		t.Errorf("stats %+v", st)
	}
	if _, err := conn.Login(ctx, "again", ""); code(err) != clientpb.Error_ALREADY_LOGGED_IN {
		t.Errorf("second login = %v", err)
	}
	// A second connection is a new id.
	_, id2 := f.login("alice", client.Options{})
	if id2 == id || !strings.HasPrefix(id2, strings.Split(id, ".")[0]+".") {
		t.Errorf("ids %s and %s", id, id2)
	}
}

func TestUnauthenticatedFramesRefused(t *testing.T) {
	f := newFixture(t, comet.Config{})
	conn := f.dial(client.Options{})
	ctx := ctxT(t)
	for _, body := range []*clientpb.ClientFrame{
		{Body: &clientpb.ClientFrame_Join{Join: &clientpb.JoinRoom{Room: "lobby"}}},
		{Body: &clientpb.ClientFrame_Send{Send: &clientpb.Send{ClientMsgId: "1", To: &clientpb.Send_Room{Room: "lobby"}}}},
		{Body: &clientpb.ClientFrame_Leave{Leave: &clientpb.LeaveRoom{Room: "lobby"}}},
		{Body: &clientpb.ClientFrame_Ack{Ack: &clientpb.Ack{Conversation: "room:lobby", Seq: 1}}},
		{Body: &clientpb.ClientFrame_Sync{Sync: &clientpb.Sync{Conversation: "room:lobby"}}},
		{Body: &clientpb.ClientFrame_Conversations{Conversations: &clientpb.Conversations{}}},
	} {
		res, err := conn.Do(ctx, body)
		if code(err) != clientpb.Error_UNAUTHENTICATED || res.GetRequestId() != body.GetRequestId() {
			t.Errorf("%T before login = %v, %v", body.GetBody(), res, err)
		}
	}
	if _, err := conn.Ping(ctx); err != nil {
		t.Errorf("ping before login = %v", err)
	}
	if out := f.rec.Take(); len(out) != 0 {
		t.Errorf("published %d messages for an unauthenticated client", len(out))
	}
}

func TestBadFramesKeepConnection(t *testing.T) {
	for _, useJSON := range []bool{false, true} {
		t.Run("json="+strconv.FormatBool(useJSON), func(t *testing.T) {
			f := newFixture(t, comet.Config{})
			conn := f.dial(client.Options{JSON: useJSON})
			ctx := ctxT(t)
			for _, bad := range []struct {
				typ websocket.MessageType
				b   []byte
			}{
				{websocket.MessageBinary, []byte{0xff, 0xff, 0xff}},
				{websocket.MessageText, []byte(`{"nope":`)},
				{websocket.MessageText, []byte("\xff\xfe not json")},
				{websocket.MessageBinary, nil}, // decodes, but has no body
				{websocket.MessageText, []byte(`{"requestId":"3"}`)},
			} {
				if err := conn.WriteRaw(ctx, bad.typ, bad.b); err != nil {
					t.Fatal(err)
				}
				if fr := nextFrame(t, conn); fr.GetError().GetCode() != clientpb.Error_BAD_FRAME {
					t.Fatalf("%q: got %v, want BAD_FRAME", bad.b, fr)
				}
			}
			// A frame that does not decode but whose request id can be
			// read is answered under it.
			for _, bad := range []struct {
				typ websocket.MessageType
				b   []byte
				req uint64
			}{
				{websocket.MessageText, []byte(`{"requestId":"7","send":{"clientMsgId":"m","room":"lobby","user":"bob"}}`), 7},
				{websocket.MessageText, []byte(`{"request_id":8,"ping":{},"join":{}}`), 8},
				{websocket.MessageBinary, []byte{0x08, 0x09, 0x6a, 0x80, 0x80, 0x80, 0x80, 0x08}, 9}, // a Send longer than the frame
				{websocket.MessageText, []byte(`{"requestId":"10","ping":{`), 10},                    // JSON cut short after the id
				{websocket.MessageBinary, []byte{0x08, 0x0b, 0x7a, 0x00, 0x5a, 0x00}, 11},            // two bodies, a Ping and a JoinRoom
				{websocket.MessageBinary, []byte{0x08, 0x0c, 0x7a, 0x03, 0x0a, 0x01, 0x00}, 12},      // a Ping whose time is sent as bytes
			} {
				if err := conn.WriteRaw(ctx, bad.typ, bad.b); err != nil {
					t.Fatal(err)
				}
				if fr := nextFrame(t, conn); fr.GetError().GetCode() != clientpb.Error_BAD_FRAME || fr.GetRequestId() != bad.req {
					t.Fatalf("%q: got %v, want BAD_FRAME answering request %d", bad.b, fr, bad.req)
				}
			}
			if _, err := conn.Ping(ctx); err != nil {
				t.Fatalf("connection unusable after bad frames: %v", err)
			}
		})
	}
}

// rawDial opens a WebSocket without the client library.
func rawDial(t *testing.T, url string, subprotocols ...string) *websocket.Conn {
	t.Helper()
	ws, _, err := websocket.Dial(ctxT(t), url, &websocket.DialOptions{Subprotocols: subprotocols})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.CloseNow() })
	return ws
}

// TestControlFramesAfterAnIdleSpell: a WebSocket ping, and the client's
// close, are answered on a connection whose last write was long ago.
// The deadline of that write had passed, and the library's pong and
// close frames failed on it: the connection dropped without a close
// frame (1006) at the first ping after WriteTimeout of quiet, losing
// the request sent with it (found by an abuse script: a client
// library's keepalive every 10-15 s).
func TestControlFramesAfterAnIdleSpell(t *testing.T) {
	f := newFixture(t, comet.Config{WriteTimeout: 100 * time.Millisecond})
	ws := rawDial(t, f.url, comet.SubprotocolJSON)
	ctx := ctxT(t)
	if err := ws.Write(ctx, websocket.MessageText, []byte(`{"requestId":"7","login":{"token":"`+token(t, "alice")+`"}}`)); err != nil {
		t.Fatal(err)
	}
	f.acceptLogin(next(f, topics.LoginRequests))
	frames := make(chan string, 8)
	go func() { // the reader a ping needs; ends with the connection
		defer close(frames)
		for {
			_, b, err := ws.Read(context.Background())
			if err != nil {
				return
			}
			frames <- string(b)
		}
	}()
	if fr := <-frames; !strings.Contains(fr, "loginResult") {
		t.Fatalf("login answered %s", fr)
	}
	time.Sleep(300 * time.Millisecond) // the login answer's write deadline passes
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := ws.Ping(pctx); err != nil {
		t.Fatalf("WebSocket ping after an idle spell: %v", err)
	}
	if err := ws.Write(ctx, websocket.MessageText, []byte(`{"requestId":"42","ping":{}}`)); err != nil {
		t.Fatal(err)
	}
	if fr := <-frames; !strings.Contains(fr, `"requestId":"42"`) || !strings.Contains(fr, "pong") {
		t.Fatalf("ping request answered %s, want its Pong", fr)
	}
	time.Sleep(300 * time.Millisecond)
	if err := ws.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Fatalf("close after an idle spell: %v, want the close handshake", err)
	}
}

func TestJSONRoundTrip(t *testing.T) {
	f := newFixture(t, comet.Config{})
	for _, tc := range []struct {
		name         string
		subprotocols []string
		in           string
	}{
		{"json subprotocol, camelCase", []string{comet.SubprotocolJSON}, `{"requestId":"5","ping":{"clientTimeUnixMs":"0"}}`},
		{"json subprotocol, proto names", []string{comet.SubprotocolJSON}, `{"request_id":5,"ping":{}}`},
		{"no subprotocol", nil, `{"requestId":"5","ping":{}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ws := rawDial(t, f.url, tc.subprotocols...)
			want := ""
			if len(tc.subprotocols) > 0 {
				want = comet.SubprotocolJSON
			}
			if ws.Subprotocol() != want {
				t.Fatalf("subprotocol %q", ws.Subprotocol())
			}
			ctx := ctxT(t)
			if err := ws.Write(ctx, websocket.MessageText, []byte(tc.in)); err != nil {
				t.Fatal(err)
			}
			typ, b, err := ws.Read(ctx)
			if err != nil || typ != websocket.MessageText {
				t.Fatalf("read %v %s %v", typ, b, err)
			}
			var fr clientpb.ServerFrame
			if err := protojson.Unmarshal(b, &fr); err != nil || fr.GetRequestId() != 5 || fr.GetPong().GetServerTimeUnixMs() == 0 {
				t.Fatalf("pong %s: %v", b, err)
			}
			// camelCase names, unset fields left out.
			var keys map[string]json.RawMessage
			if err := json.Unmarshal(b, &keys); err != nil {
				t.Fatal(err)
			}
			var pong map[string]json.RawMessage
			if err := json.Unmarshal(keys["pong"], &pong); err != nil {
				t.Fatal(err)
			}
			if _, ok := keys["requestId"]; !ok || len(keys) != 2 {
				t.Errorf("frame keys %s", b)
			}
			if _, ok := pong["serverTimeUnixMs"]; !ok || len(pong) != 1 {
				t.Errorf("pong keys %s", b)
			}
		})
	}
	// Offered both, the comet takes the client's first (RFC 6455: the
	// client lists them by preference; abuse check: it took protobuf
	// whatever the order).
	for _, order := range [][]string{{comet.SubprotocolJSON, comet.SubprotocolProto}, {comet.SubprotocolProto, comet.SubprotocolJSON}} {
		if ws := rawDial(t, f.url, order...); ws.Subprotocol() != order[0] {
			t.Errorf("offered %v: subprotocol %q, want the first", order, ws.Subprotocol())
		}
	}
	// The subprotocol is matched without regard to case (the library
	// accepts it so, and echoes the client's spelling): an accepted
	// protobuf subprotocol means protobuf frames, however it is spelt.
	for _, sub := range []string{comet.SubprotocolProto, strings.ToUpper(comet.SubprotocolProto), "Laneim.V1.Proto"} {
		t.Run("proto subprotocol "+sub, func(t *testing.T) {
			ws := rawDial(t, f.url, "mqtt", sub)
			if ws.Subprotocol() != sub {
				t.Fatalf("subprotocol %q", ws.Subprotocol())
			}
			ctx := ctxT(t)
			b, _ := proto.Marshal(&clientpb.ClientFrame{RequestId: 9, Body: &clientpb.ClientFrame_Ping{Ping: &clientpb.Ping{}}})
			if err := ws.Write(ctx, websocket.MessageBinary, b); err != nil {
				t.Fatal(err)
			}
			typ, b, err := ws.Read(ctx)
			var fr clientpb.ServerFrame
			if err != nil || typ != websocket.MessageBinary || proto.Unmarshal(b, &fr) != nil || fr.GetRequestId() != 9 || fr.GetPong() == nil {
				t.Fatalf("pong %v %v %v", typ, &fr, err)
			}
		})
	}
}

func TestHandshakes(t *testing.T) {
	f := newFixture(t, comet.Config{})
	resp, err := http.Get(f.srv.URL + "/ws")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode < 400 || resp.StatusCode >= 500 {
		t.Errorf("plain GET: status %d, want 4xx", resp.StatusCode)
	}
	_, resp, err = websocket.Dial(ctxT(t), f.url, &websocket.DialOptions{Subprotocols: []string{"mqtt"}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("unknown subprotocol: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), comet.SubprotocolProto) || !strings.Contains(string(body), comet.SubprotocolJSON) {
		t.Errorf("refusal %q does not name the subprotocols", body)
	}
	// The comet still serves.
	conn := f.dial(client.Options{})
	if _, err := conn.Ping(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

func TestOversizedFrameCloses1009(t *testing.T) {
	f := newFixture(t, comet.Config{MaxFrameBytes: 1024})
	conn := f.dial(client.Options{})
	ctx := ctxT(t)
	// A frame just under the limit is served.
	tok := token(t, "alice")
	if err := conn.Write(ctx, &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Login{Login: &clientpb.Login{Token: tok, Device: strings.Repeat("d", 128)}}}); err != nil {
		t.Fatal(err)
	}
	if err := conn.Write(ctx, &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Ping{Ping: &clientpb.Ping{}}}); err != nil {
		t.Fatal(err)
	}
	if fr := nextFrame(t, conn); fr.GetPong() == nil {
		t.Fatalf("got %v, want a pong", fr)
	}
	_ = conn.WriteRaw(ctx, websocket.MessageBinary, make([]byte, 4096))
	if ce := closeError(t, conn); ce.Code != websocket.StatusMessageTooBig {
		t.Fatalf("close %v, want 1009", ce)
	}
}

func TestLoginTimeout(t *testing.T) {
	// alice's login must be answered within LoginTimeout, on a loaded CI
	// machine too.
	f := newFixture(t, comet.Config{LoginTimeout: 1500 * time.Millisecond})
	loggedIn, _ := f.login("alice", client.Options{})
	idle := f.dial(client.Options{})
	if ce := closeError(t, idle); ce.Code != websocket.StatusPolicyViolation || ce.Reason != "login timeout" {
		t.Fatalf("close %v, want 1008 login timeout", ce)
	}
	// alice is older than the closed connection, and still served.
	if _, err := loggedIn.Ping(ctxT(t)); err != nil {
		t.Fatalf("logged-in connection: %v", err)
	}
	testinfra.Eventually(t, wait, func() bool { return f.comet.Stats().Connections == 1 }, "closed connection not forgotten")
}

// TestLoginAnsweredAfterItsConnectionEnded: a LoginResult that comes for
// a connection already gone (its client hung up after the comet answered
// UNAVAILABLE, and the login worker served the Login once it recovered)
// closes the session it opened, instead of leaving it to expire 30 s
// later, counting its user online (fault injection, round 4).
func TestLoginAnsweredAfterItsConnectionEnded(t *testing.T) {
	f := newFixture(t, comet.Config{})
	ws := rawDial(t, f.url, comet.SubprotocolJSON)
	if err := ws.Write(ctxT(t), websocket.MessageText, []byte(`{"requestId":"7","login":{"token":"`+token(t, "alice")+`"}}`)); err != nil {
		t.Fatal(err)
	}
	req := next(f, topics.LoginRequests)
	ws.Close(websocket.StatusNormalClosure, "")
	testinfra.Eventually(t, wait, func() bool { return f.comet.Stats().Connections == 0 }, "connection not forgotten")
	f.acceptLogin(req)
	ev := next(f, topics.SessionEvents)
	if ev.GetKind() != topicpb.SessionEvent_CLOSED || ev.GetUser() != "alice" ||
		ev.GetSession().GetComet() != "c1" || ev.GetSession().GetConn() != req.GetSession().GetConn() {
		t.Fatalf("event %v, want CLOSED of alice's session %v", ev, req.GetSession())
	}
}

// TestIdleTimeout checks that a silent connection is closed with 1008
// "idle timeout" while one that pings often (ten times per timeout) lives
// on past several timeouts. The bounds are generous: only an absurdly
// slow machine could miss them, and no duration is asserted.
func TestIdleTimeout(t *testing.T) {
	const idle = time.Second
	f := newFixture(t, comet.Config{IdleTimeout: idle})
	active, _ := f.login("alice", client.Options{})
	silent, _ := f.login("bob", client.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	outlived := time.Now().Add(4 * idle) // alice must live on until then
	tick := time.NewTicker(idle / 10)
	defer tick.Stop()
	silentDone := silent.Done()
	for silentDone != nil || time.Now().Before(outlived) {
		select {
		case <-silentDone:
			silentDone = nil // closed: wait only for alice's time to pass
		case <-tick.C:
			if _, err := active.Ping(ctx); err != nil {
				t.Fatalf("active connection: %v", err)
			}
		case <-ctx.Done():
			t.Fatal("silent connection not closed")
		}
	}
	if ce := closeError(t, silent); ce.Code != websocket.StatusPolicyViolation || ce.Reason != "idle timeout" {
		t.Fatalf("close %v, want 1008 idle timeout", ce)
	}
	if _, err := active.Ping(ctxT(t)); err != nil {
		t.Fatalf("active connection: %v", err)
	}
	testinfra.Eventually(t, wait, func() bool { return f.comet.Stats().Connections == 1 }, "closed connection not forgotten")
}

func TestRequests(t *testing.T) {
	f := newFixture(t, comet.Config{})
	conn, id := f.login("alice", client.Options{JSON: true})
	ctx := ctxT(t)

	if err := conn.Write(ctx, &clientpb.ClientFrame{RequestId: 11, Body: &clientpb.ClientFrame_Join{Join: &clientpb.JoinRoom{Room: "lobby"}}}); err != nil {
		t.Fatal(err)
	}
	ev := next(f, topics.SessionEvents)
	if ev.GetKind() != topicpb.SessionEvent_JOINED || ev.GetRoom() != "lobby" || ev.GetUser() != "alice" ||
		ev.GetSession().GetConn() != id || ev.GetSession().GetComet() != "c1" || ev.GetRequestId() != 11 {
		t.Fatalf("join event %v", ev)
	}
	f.join(id, "lobby")
	f.join(id, "other")

	for _, s := range []*clientpb.Send{
		{To: &clientpb.Send_Room{Room: "lobby"}, Body: []byte("x")},
		{ClientMsgId: "m1", Body: []byte("x")},
		{ClientMsgId: "m1", To: &clientpb.Send_Room{}},
	} {
		if _, err := conn.Send(ctx, s); code(err) != clientpb.Error_INVALID {
			t.Errorf("send %v = %v, want INVALID", s, err)
		}
	}
	if err := conn.Write(ctx, &clientpb.ClientFrame{RequestId: 12, Body: &clientpb.ClientFrame_Send{Send: &clientpb.Send{
		ClientMsgId: "m2", To: &clientpb.Send_User{User: "bob"}, Body: []byte("hi"), ContentType: "text/plain",
	}}}); err != nil {
		t.Fatal(err)
	}
	sub := next(f, topics.Submitted)
	if sub.GetSender() != "alice" || sub.GetUser() != "bob" || string(sub.GetBody()) != "hi" || sub.GetContentType() != "text/plain" ||
		sub.GetOrigin().GetConn() != id || sub.GetOrigin().GetComet() != "c1" || sub.GetClientMsgId() != "m2" ||
		sub.GetRequestId() != 12 || sub.GetSubmittedUnixMs() == 0 || sub.GetTrusted() {
		t.Fatalf("submitted %v", sub)
	}

	if _, err := conn.Do(ctx, &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Sync{Sync: &clientpb.Sync{}}}); code(err) != clientpb.Error_INVALID {
		t.Errorf("sync without conversation = %v, want INVALID", err)
	}
	if err := conn.Write(ctx, &clientpb.ClientFrame{RequestId: 14, Body: &clientpb.ClientFrame_Sync{Sync: &clientpb.Sync{Conversation: "room:lobby", AfterSeq: 5, Limit: 20}}}); err != nil {
		t.Fatal(err)
	}
	if hr := next(f, topics.HistoryRequests); hr.GetConversation() != "room:lobby" || hr.GetAfterSeq() != 5 || hr.GetLimit() != 20 ||
		hr.GetUser() != "alice" || hr.GetRequestId() != 14 || hr.GetSession().GetConn() != id ||
		time.Since(time.UnixMilli(hr.GetReceivedUnixMs())) > time.Minute || hr.GetDeadlineUnixMs()-hr.GetReceivedUnixMs() != (5*time.Second).Milliseconds() {
		t.Fatalf("history request %v", hr)
	}
	if err := conn.Write(ctx, &clientpb.ClientFrame{RequestId: 15, Body: &clientpb.ClientFrame_Conversations{Conversations: &clientpb.Conversations{Cursor: "d:1:dm:a:b", Limit: 50}}}); err != nil {
		t.Fatal(err)
	}
	if hr := next(f, topics.HistoryRequests); hr.GetConversations().GetCursor() != "d:1:dm:a:b" || hr.GetConversations().GetLimit() != 50 || hr.GetConversation() != "" ||
		hr.GetUser() != "alice" || hr.GetRequestId() != 15 || hr.GetSession().GetConn() != id {
		t.Fatalf("conversations request %v", hr)
	}
	// Ack gets no answer: the next frame is the sentinel.
	if err := conn.Write(ctx, &clientpb.ClientFrame{RequestId: 13, Body: &clientpb.ClientFrame_Ack{Ack: &clientpb.Ack{Conversation: "room:lobby", Seq: 3}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Ping(ctx); err != nil { // the Ack has been served
		t.Fatal(err)
	}
	if hr := next(f, topics.HistoryRequests); hr.GetAck().GetSeq() != 3 || hr.GetRequestId() != 13 || hr.GetDeadlineUnixMs() == 0 {
		t.Fatalf("ack request %v, want one with a deadline", hr)
	}
	// An Ack without an id waits for no answer: it has no deadline, and
	// no worker drops it as late.
	if err := conn.Write(ctx, &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Ack{Ack: &clientpb.Ack{Conversation: "room:lobby", Seq: 4}}}); err != nil {
		t.Fatal(err)
	}
	if hr := next(f, topics.HistoryRequests); hr.GetAck().GetSeq() != 4 || hr.GetDeadlineUnixMs() != 0 || hr.GetReceivedUnixMs() != 0 {
		t.Fatalf("ack request %v, want one without a deadline", hr)
	}
	f.expectNothingMore(conn, id)

	if err := conn.Leave(ctx, "lobby"); err != nil {
		t.Fatalf("leave: %v", err)
	}
	if ev := next(f, topics.SessionEvents); ev.GetKind() != topicpb.SessionEvent_LEFT || ev.GetRoom() != "lobby" || ev.GetUser() != "alice" || ev.GetSession().GetConn() != id {
		t.Fatalf("leave event %v", ev)
	}
	if err := conn.Leave(ctx, ""); code(err) != clientpb.Error_INVALID {
		t.Errorf("leave without room = %v", err)
	}
	f.deliver(roomMessage("lobby", 1))
	f.deliver(roomMessage("other", 1))
	if msgs, _ := readMessages(t, conn, 1); msgs[0].GetConversation() != "room:other" {
		t.Fatalf("got %v after leaving lobby", msgs[0])
	}
	f.expectNothingMore(conn, id)
	if st := f.comet.Stats(); st.Rooms != 1 {
		t.Errorf("rooms %d, want 1", st.Rooms)
	}

	conn.Close()
	closed := next(f, topics.SessionEvents)
	if closed.GetKind() != topicpb.SessionEvent_CLOSED || closed.GetUser() != "alice" || closed.GetSession().GetConn() != id {
		t.Fatalf("close event %v", closed)
	}
	testinfra.Eventually(t, wait, func() bool {
		st := f.comet.Stats()
		return st.Connections == 0 && st.Users == 0 && st.Rooms == 0
	}, "closed connection not forgotten: %+v", f.comet.Stats())
}

func TestPublishFailureAnswersUnavailable(t *testing.T) {
	f := newFixture(t, comet.Config{})
	conn, _ := f.login("alice", client.Options{})
	f.rec.Err = errors.New("kafka down")
	ctx := ctxT(t)
	if _, err := conn.Join(ctx, "lobby"); code(err) != clientpb.Error_UNAVAILABLE {
		t.Errorf("join = %v", err)
	}
	if _, err := conn.SendRoom(ctx, "lobby", []byte("x")); code(err) != clientpb.Error_UNAVAILABLE {
		t.Errorf("send = %v", err)
	}
	other := f.dial(client.Options{})
	if _, err := other.Login(ctx, token(t, "bob"), ""); code(err) != clientpb.Error_UNAVAILABLE {
		t.Errorf("login = %v", err)
	}
	f.comet.Heartbeat() // logs, does not fail
	if _, err := conn.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestRoomFanOutMergesBatchesInOrder(t *testing.T) {
	// A window long enough that messages delivered back to back fall in
	// it however the test is scheduled.
	f := newFixture(t, comet.Config{BatchWindow: 2 * time.Second})
	type member struct {
		conn  *client.Conn
		id    string
		rooms []string
	}
	members := map[string]*member{
		"alice": {rooms: []string{"lobby", "other"}},
		"bob":   {rooms: []string{"lobby", "other"}},
		"carol": {rooms: []string{"lobby"}},
		"dave":  {rooms: []string{"other"}},
	}
	for u, m := range members {
		m.conn, m.id = f.login(u, client.Options{JSON: u == "bob" || u == "dave"})
		for _, r := range m.rooms {
			f.join(m.id, r)
		}
	}
	sent := map[string]int{"lobby": 6, "other": 3}
	for seq := uint64(1); seq <= 6; seq++ {
		f.deliver(roomMessage("lobby", seq))
		if seq <= 3 {
			f.deliver(roomMessage("other", seq))
		}
	}
	for u, m := range members {
		want := 0
		for _, r := range m.rooms {
			want += sent[r]
		}
		msgs, batches := readMessages(t, m.conn, want)
		got := map[string][]uint64{}
		for _, msg := range msgs {
			got[msg.GetConversation()] = append(got[msg.GetConversation()], msg.GetSeq())
		}
		for _, r := range m.rooms {
			seqs := got[topics.RoomConversation(r)]
			for i, s := range seqs {
				if s != uint64(i+1) {
					t.Fatalf("%s: %s seqs %v", u, r, seqs)
				}
			}
			if len(seqs) != sent[r] {
				t.Fatalf("%s: %s seqs %v", u, r, seqs)
			}
		}
		// A frame carries one room's messages. Per room, the first message
		// goes at once and the rest are merged: however the deliveries
		// were scheduled, some frame carries more than one message, so
		// there are fewer frames than messages.
		sizes := map[string][]int{}
		for _, b := range batches {
			if len(b) == 0 {
				t.Fatalf("%s: an empty batch", u)
			}
			conv := b[0].GetConversation()
			for _, msg := range b {
				if msg.GetConversation() != conv {
					t.Fatalf("%s: one frame mixes rooms: %v", u, b)
				}
			}
			sizes[conv] = append(sizes[conv], len(b))
		}
		for _, r := range m.rooms {
			if n := sizes[topics.RoomConversation(r)]; len(n) >= sent[r] {
				t.Errorf("%s: %s's %d messages came in frames of %v, want some merged", u, r, sent[r], n)
			}
		}
		f.expectNothingMore(m.conn, m.id)
	}
	if st := f.comet.Stats(); st.Connections != 4 || st.Users != 4 || st.Rooms != 2 {
		t.Errorf("stats %+v", st)
	}
}

// TestCompactBatchesOverAWebSocket: a connection that asked for compact
// batches reads a room's conversation, sender and content type once per
// frame, in MessageBatch.shared (protobuf and JSON), and the Go client
// gives it the same messages as a connection that did not ask.
func TestCompactBatchesOverAWebSocket(t *testing.T) {
	f := newFixture(t, comet.Config{BatchWindow: 2 * time.Second})
	// A JSON connection without the client library, to read the frames
	// as they are written.
	raw := rawDial(t, f.url, comet.SubprotocolJSON)
	ctx := ctxT(t)
	if err := raw.Write(ctx, websocket.MessageText, []byte(`{"requestId":"7","login":{"token":"`+token(t, "raw")+`","compactBatches":true}}`)); err != nil {
		t.Fatal(err)
	}
	req := next(f, topics.LoginRequests)
	f.acceptLogin(req)
	if _, b, err := raw.Read(ctx); err != nil || !strings.Contains(string(b), `"loginResult"`) {
		t.Fatalf("login answer %s, %v", b, err)
	}
	f.join(req.GetSession().GetConn(), "lobby")
	type member struct {
		conn *client.Conn
		id   string
		mu   sync.Mutex
		raw  []*clientpb.MessageBatch // as they came, not expanded
	}
	members := map[string]*member{"compact": {}, "whole": {}, "json": {}}
	for name, m := range members {
		opts := client.Options{JSON: name == "json", Peek: func(data []byte) bool {
			var fr clientpb.ServerFrame
			if proto.Unmarshal(data, &fr) == nil && fr.GetMessages() != nil {
				m.mu.Lock()
				m.raw = append(m.raw, fr.GetMessages())
				m.mu.Unlock()
			}
			return false
		}}
		m.conn, m.id = f.loginWith(name, opts, &clientpb.Login{CompactBatches: name != "whole"})
		f.join(m.id, "lobby")
	}
	conv := topics.RoomConversation("lobby")
	var sent []*clientpb.Message
	for seq := uint64(1); seq <= 6; seq++ {
		m := &clientpb.Message{Id: fmt.Sprint("m", seq), Conversation: conv, Seq: seq, Sender: "s", Body: []byte("x"), ContentType: "text/plain", ServerTimeUnixMs: 9}
		sent = append(sent, m)
		f.deliver(&topicpb.Delivery{Room: "lobby", Frame: &clientpb.ServerFrame{Body: &clientpb.ServerFrame_Messages{Messages: &clientpb.MessageBatch{Messages: []*clientpb.Message{m}}}}})
	}
	// The raw JSON connection: the first message alone and whole (a JSON
	// frame of one message gains nothing from shared), the others merged
	// in compact batches; all expanding to the messages sent.
	var got []*clientpb.Message
	compacted := 0
	for len(got) < len(sent) {
		_, b, err := raw.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var fr clientpb.ServerFrame
		if err := protojson.Unmarshal(b, &fr); err != nil {
			t.Fatal(err)
		}
		batch := fr.GetMessages()
		var want *clientpb.Message
		if len(batch.GetMessages()) > 1 {
			want = &clientpb.Message{Conversation: conv, Sender: "s", ContentType: "text/plain"}
			compacted++
		}
		if !proto.Equal(batch.GetShared(), want) {
			t.Fatalf("raw JSON frame %s: shared %v, want %v", b, batch.GetShared(), want)
		}
		for _, m := range batch.GetMessages() {
			if (m.GetConversation() == "") != (want != nil) {
				t.Fatalf("raw JSON frame %s", b)
			}
		}
		batch.Expand()
		got = append(got, batch.GetMessages()...)
	}
	if compacted == 0 {
		t.Fatal("no JSON frame merged messages")
	}
	for i := range sent {
		if !proto.Equal(got[i], sent[i]) {
			t.Fatalf("raw JSON: message %d is %v, want %v", i, got[i], sent[i])
		}
	}
	for name, m := range members {
		msgs, _ := readMessages(t, m.conn, len(sent))
		for i := range sent {
			if !proto.Equal(msgs[i], sent[i]) {
				t.Fatalf("%s: message %d is %v, want %v", name, i, msgs[i], sent[i])
			}
		}
		f.expectNothingMore(m.conn, m.id)
		m.mu.Lock()
		raw := m.raw
		m.mu.Unlock()
		if name == "json" {
			if len(raw) != 0 {
				t.Fatalf("json: %d binary batches", len(raw))
			}
			continue
		}
		if len(raw) == 0 {
			t.Fatalf("%s: no batch seen", name)
		}
		for _, b := range raw {
			want := (*clientpb.Message)(nil)
			if name == "compact" {
				want = &clientpb.Message{Conversation: conv, Sender: "s", ContentType: "text/plain"}
			}
			if !proto.Equal(b.GetShared(), want) {
				t.Fatalf("%s: batch shared %v, want %v", name, b.GetShared(), want)
			}
			for _, msg := range b.GetMessages() {
				if (msg.GetConversation() == "") != (name == "compact") {
					t.Fatalf("%s: message %v as it came", name, msg)
				}
			}
		}
	}
}

func TestDirectAndBroadcastDelivery(t *testing.T) {
	f := newFixture(t, comet.Config{})
	phone, phoneID := f.login("bob", client.Options{})
	laptop, laptopID := f.login("bob", client.Options{JSON: true})
	carol, carolID := f.login("carol", client.Options{})
	anon := f.dial(client.Options{})
	dm := &topicpb.Delivery{Users: []string{"alice", "bob"}, Frame: &clientpb.ServerFrame{Body: &clientpb.ServerFrame_Messages{Messages: &clientpb.MessageBatch{
		Messages: []*clientpb.Message{{Conversation: "dm:alice:bob", Seq: 1, Body: []byte("hi")}},
	}}}}
	f.deliver(dm)
	for _, conn := range []*client.Conn{phone, laptop} {
		if msgs, _ := readMessages(t, conn, 1); msgs[0].GetConversation() != "dm:alice:bob" || string(msgs[0].GetBody()) != "hi" {
			t.Fatalf("got %v", msgs[0])
		}
	}
	f.expectNothingMore(carol, carolID)

	f.deliver(&topicpb.Delivery{Broadcast: true, Frame: &clientpb.ServerFrame{Body: &clientpb.ServerFrame_Messages{Messages: &clientpb.MessageBatch{
		Messages: []*clientpb.Message{{Conversation: "broadcast", Seq: 1}},
	}}}})
	for _, conn := range []*client.Conn{phone, laptop, carol} {
		if msgs, _ := readMessages(t, conn, 1); msgs[0].GetConversation() != "broadcast" {
			t.Fatalf("got %v", msgs[0])
		}
	}
	f.expectNothingMore(phone, phoneID)
	f.expectNothingMore(laptop, laptopID)
	// The connection that is not logged in got nothing; a ping proves it is open.
	if _, err := anon.Ping(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	select {
	case fr := <-anon.Frames():
		t.Fatalf("unauthenticated connection got %v", fr)
	default:
	}
}

func TestCloseControl(t *testing.T) {
	f := newFixture(t, comet.Config{})
	phone, _ := f.login("mallory", client.Options{})
	laptop, _ := f.login("mallory", client.Options{JSON: true})
	other, otherID := f.login("alice", client.Options{})
	reason := strings.Repeat("é", 100) // 200 bytes: more than a close frame holds
	f.deliver(&topicpb.Delivery{Users: []string{"mallory"}, Control: &topicpb.Control{Close: reason},
		Frame: &clientpb.ServerFrame{Body: &clientpb.ServerFrame_Error{Error: &clientpb.Error{Code: clientpb.Error_UNKNOWN_USER, Text: "disabled"}}}})
	for _, conn := range []*client.Conn{phone, laptop} {
		if fr := nextFrame(t, conn); fr.GetError().GetText() != "disabled" {
			t.Errorf("frame before close: %v", fr)
		}
		ce := closeError(t, conn)
		if ce.Code != websocket.StatusPolicyViolation || !strings.HasPrefix(reason, ce.Reason) || len(ce.Reason) < 100 {
			t.Errorf("close %v", ce)
		}
	}
	f.expectNothingMore(other, otherID)
	testinfra.Eventually(t, wait, func() bool { return f.comet.Stats().Users == 1 }, "kicked user not forgotten")
}

func TestLeaveControl(t *testing.T) {
	f := newFixture(t, comet.Config{})
	conn, id := f.login("alice", client.Options{})
	f.join(id, "lobby")
	f.join(id, "other")
	f.deliver(&topicpb.Delivery{Conns: []string{id}, Control: &topicpb.Control{Leave: "lobby"}})
	f.deliver(roomMessage("lobby", 1))
	f.deliver(roomMessage("other", 1))
	if msgs, _ := readMessages(t, conn, 1); msgs[0].GetConversation() != "room:other" {
		t.Fatalf("got %v after the leave control", msgs[0])
	}
	f.expectNothingMore(conn, id)
	if st := f.comet.Stats(); st.Rooms != 1 {
		t.Errorf("rooms %d, want 1", st.Rooms)
	}
	for _, p := range f.rec.Take() {
		if p.Topic == topics.SessionEvents.Name {
			t.Errorf("leave control published a session event")
		}
	}
}

func TestSlowConsumerDroppedRoomGoesOn(t *testing.T) {
	f := newFixture(t, comet.Config{SendQueue: 4, BatchWindow: -1, WriteTimeout: time.Second})
	fast, fastID := f.login("alice", client.Options{})
	f.join(fastID, "lobby")

	// bob logs in and never reads again.
	slow := rawDial(t, f.url, comet.SubprotocolProto)
	b, _ := proto.Marshal(&clientpb.ClientFrame{Body: &clientpb.ClientFrame_Login{Login: &clientpb.Login{Token: token(t, "bob")}}})
	if err := slow.Write(ctxT(t), websocket.MessageBinary, b); err != nil {
		t.Fatal(err)
	}
	slowID := next(f, topics.LoginRequests).GetSession().GetConn()
	f.deliver(&topicpb.Delivery{Conns: []string{slowID}, Control: &topicpb.Control{Authenticate: "bob", Join: "lobby"}})

	big := make([]byte, 60<<10)
	seq := uint64(0)
	deliver := func() {
		seq++
		d := roomMessage("lobby", seq)
		d.GetFrame().GetMessages().GetMessages()[0].Body = big
		f.deliver(d)
		if msgs, _ := readMessages(t, fast, 1); msgs[0].GetSeq() != seq {
			t.Fatalf("alice got seq %d, want %d", msgs[0].GetSeq(), seq)
		}
	}
	// Loopback buffers hold a few MB; bob's queue fills after them.
	for f.comet.Stats().SlowConsumers == 0 {
		if seq == 2000 {
			t.Fatalf("bob not dropped after %d messages: %+v", seq, f.comet.Stats())
		}
		deliver()
	}
	for range 10 {
		deliver()
	}
	testinfra.Eventually(t, 10*time.Second, func() bool {
		st := f.comet.Stats()
		return st.SlowConsumers == 1 && st.Connections == 1 && st.Users == 1
	}, "bob not forgotten: %+v", f.comet.Stats())
	if ev := next(f, topics.SessionEvents); ev.GetKind() != topicpb.SessionEvent_CLOSED || ev.GetUser() != "bob" {
		t.Errorf("event %v, want bob CLOSED", ev)
	}
}

func TestHeartbeat(t *testing.T) {
	t.Run("loop", func(t *testing.T) {
		f := newFixture(t, comet.Config{HeartbeatInterval: 20 * time.Millisecond})
		f.comet.Start()
		f.comet.Start() // a second call does nothing
		_, id := f.login("alice", client.Options{})
		f.dial(client.Options{}) // not logged in: not live
		testinfra.Eventually(t, wait, func() bool {
			for _, p := range f.rec.Take() {
				ev, err := topics.SessionEvents.Decode(p.Msg)
				if err != nil || ev.GetKind() != topicpb.SessionEvent_HEARTBEAT {
					continue
				}
				if p.Msg.Metadata.Get(topics.KeyMetadata) != "comet/c1" || ev.GetSession().GetComet() != "c1" {
					t.Fatalf("heartbeat %v key %q", ev, p.Msg.Metadata.Get(topics.KeyMetadata))
				}
				if len(ev.GetLive()) == 1 && ev.GetLive()[0].GetConn() == id && ev.GetLive()[0].GetUser() == "alice" {
					return true
				}
			}
			return false
		}, "no heartbeat with alice")
	})
	t.Run("chunks", func(t *testing.T) {
		f := newFixture(t, comet.Config{})
		f.comet.Heartbeat()
		if ev := next(f, topics.SessionEvents); ev.GetKind() != topicpb.SessionEvent_HEARTBEAT || len(ev.GetLive()) != 0 {
			t.Fatalf("empty comet heartbeat %v", ev)
		}
		const n = 2500
		for i := range n {
			f.comet.AddTestMember("lobby", "u"+strconv.Itoa(i))
		}
		f.comet.Heartbeat()
		seen := map[string]bool{}
		var sizes []int
		for _, p := range f.rec.Take() {
			ev, err := topics.SessionEvents.Decode(p.Msg)
			if err != nil || ev.GetKind() != topicpb.SessionEvent_HEARTBEAT {
				t.Fatalf("published %v %v", ev, err)
			}
			sizes = append(sizes, len(ev.GetLive()))
			for _, l := range ev.GetLive() {
				seen[l.GetConn()+"/"+l.GetUser()] = true
			}
		}
		if len(sizes) != 3 || sizes[0] != 1000 || sizes[1] != 1000 || sizes[2] != 500 || len(seen) != n {
			t.Fatalf("chunks %v, %d distinct sessions", sizes, len(seen))
		}
	})
}

func TestCloseGoesAwayAndWaits(t *testing.T) {
	f := newFixture(t, comet.Config{BatchWindow: time.Minute})
	conn, id := f.login("alice", client.Options{})
	f.join(id, "lobby")
	f.comet.Start()
	// The first message goes out; the second waits a minute in the batch.
	f.deliver(roomMessage("lobby", 1))
	f.deliver(roomMessage("lobby", 2))
	readMessages(t, conn, 1)

	closed := make(chan error, 1)
	go func() { closed <- f.comet.Close() }() // Close must return long before the batch window
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(wait):
		t.Fatal("Close did not return")
	}
	if ce := closeError(t, conn); ce.Code != websocket.StatusGoingAway {
		t.Errorf("close %v, want 1001", ce)
	}
	if st := f.comet.Stats(); st.Connections != 0 || st.Users != 0 {
		t.Errorf("stats after Close %+v", st)
	}
	if ev := next(f, topics.SessionEvents); ev.GetKind() != topicpb.SessionEvent_CLOSED {
		t.Errorf("event %v, want CLOSED", ev)
	}
	_, resp, err := websocket.Dial(ctxT(t), f.url, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("dial after Close: %v", err)
	}
	f.deliver(&topicpb.Delivery{Conns: []string{id}, Control: &topicpb.Control{Authenticate: "x", Join: "r"}})
	f.comet.Start()
	if err := f.comet.Close(); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkRoomBroadcast measures the comet's room fan-out: one op is one
// message delivered to a room of N local members (no sockets: members
// encode and discard), including the time for every member's writer to
// take it. "unbatched" writes one frame per message (BatchWindow -1);
// "adaptive" is the default, where a frame still going out holds the next
// messages back and merges them. It reports frames written per message
// and messages per frame; compare ns/op across sizes and modes, not
// against a fixed number.
func BenchmarkRoomBroadcast(b *testing.B) {
	for _, mode := range []struct {
		name   string
		window time.Duration
	}{{"unbatched", -1}, {"adaptive", 0}} {
		for _, members := range []int{1, 100, 1000, 10000} {
			b.Run(fmt.Sprintf("%s/%dMembers", mode.name, members), func(b *testing.B) {
				c, err := comet.New(comet.Config{ID: "bench", Secret: testSecret, BatchWindow: mode.window, SendQueue: 1 << 16}, &testinfra.Recorder{}, slog.New(slog.DiscardHandler))
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				for i := range members {
					c.AddTestMember("lobby", "u"+strconv.Itoa(i))
				}
				// Each op its own seq: the room drops repeats.
				msgs := make([]*message.Message, b.N)
				for i := range msgs {
					if msgs[i], err = topics.Deliveries.Encode(roomMessage("lobby", uint64(i+1))); err != nil {
						b.Fatal(err)
					}
				}
				h := c.Pipeline()
				before := c.Stats().FramesSent
				b.ReportAllocs()
				b.ResetTimer()
				for _, msg := range msgs {
					if err := h.Handle(msg); err != nil {
						b.Fatal(err)
					}
				}
				if !c.WaitWritten(time.Minute) {
					b.Fatal("frames still queued after a minute")
				}
				b.StopTimer()
				st := c.Stats()
				frames := float64(st.FramesSent - before)
				b.ReportMetric(frames/float64(b.N), "frames/op")
				b.ReportMetric(float64(b.N)*float64(members)/frames, "msgs/frame")
				b.ReportMetric(float64(b.N)*float64(members)/b.Elapsed().Seconds(), "deliveries/s")
				if st.SlowConsumers != 0 {
					b.Logf("%d slow consumers", st.SlowConsumers)
				}
			})
		}
	}
}

// messagesDelivery is a Delivery of one batch of conversation's seqs.
func messagesDelivery(d *topicpb.Delivery, conversation string, seqs ...uint64) *topicpb.Delivery {
	b := &clientpb.MessageBatch{}
	for _, s := range seqs {
		b.Messages = append(b.Messages, &clientpb.Message{Conversation: conversation, Seq: s, Body: []byte("x")})
	}
	d.Frame = &clientpb.ServerFrame{Body: &clientpb.ServerFrame_Messages{Messages: b}}
	return d
}

// readSeqs reads n messages and returns their seqs.
func readSeqs(t *testing.T, conn *client.Conn, n int) []uint64 {
	t.Helper()
	msgs, _ := readMessages(t, conn, n)
	seqs := make([]uint64, len(msgs))
	for i, m := range msgs {
		seqs[i] = m.GetSeq()
	}
	return seqs
}

// TestRoomDropsRepeats: a room's message at or below the highest seq the
// room queued is dropped once for all its members and counted; a message
// after a gap goes out, a late one below it does not; a room created anew
// remembers nothing.
func TestRoomDropsRepeats(t *testing.T) {
	for _, tt := range []struct {
		name   string
		window time.Duration
	}{{"unbatched", -1}, {"batched", 20 * time.Millisecond}} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, comet.Config{BatchWindow: tt.window})
			alice, aliceID := f.login("alice", client.Options{})
			bob, bobID := f.login("bob", client.Options{JSON: true})
			f.join(aliceID, "lobby")
			f.join(bobID, "lobby")
			lobby := topics.RoomConversation("lobby")
			for _, seqs := range [][]uint64{
				{1}, {2}, {1}, {2}, // repeats
				{4},       // after a gap: goes out
				{3},       // the gap, late: the members saw 4 and Sync 3
				{4, 5, 6}, // a batch with a repeat in it
				{6},
			} {
				f.deliver(messagesDelivery(&topicpb.Delivery{Room: "lobby"}, lobby, seqs...))
			}
			want := []uint64{1, 2, 4, 5, 6}
			for _, m := range []struct {
				conn *client.Conn
				id   string
			}{{alice, aliceID}, {bob, bobID}} {
				if got := readSeqs(t, m.conn, len(want)); !slices.Equal(got, want) {
					t.Fatalf("member got seqs %v, want %v", got, want)
				}
				f.expectNothingMore(m.conn, m.id)
			}
			if st := f.comet.Stats(); st.RepeatsDropped != 5 {
				t.Errorf("repeats dropped %d, want 5 (counted per room, not per member)", st.RepeatsDropped)
			}

			// Everyone leaves: the room goes. Joined anew, it has no memory,
			// so an old seq goes out (clients drop it by conversation and seq).
			for _, id := range []string{aliceID, bobID} {
				f.deliver(&topicpb.Delivery{Conns: []string{id}, Control: &topicpb.Control{Leave: "lobby"}})
			}
			if st := f.comet.Stats(); st.Rooms != 0 {
				t.Fatalf("rooms %d after everyone left, want 0", st.Rooms)
			}
			f.join(aliceID, "lobby")
			f.deliver(messagesDelivery(&topicpb.Delivery{Room: "lobby"}, lobby, 6))
			f.deliver(messagesDelivery(&topicpb.Delivery{Room: "lobby"}, lobby, 6))
			if got := readSeqs(t, alice, 1); !slices.Equal(got, []uint64{6}) {
				t.Fatalf("new room: got seqs %v, want [6]", got)
			}
			f.expectNothingMore(alice, aliceID)
			f.expectNothingMore(bob, bobID)
		})
	}
}

// TestDirectDropsRepeats: a 1:1 or broadcast message a connection was
// queued before is dropped for that connection and counted; connections
// missing part of a batch get that part; a message after a gap goes out.
func TestDirectDropsRepeats(t *testing.T) {
	f := newFixture(t, comet.Config{})
	phone, phoneID := f.login("bob", client.Options{})
	alice, aliceID := f.login("alice", client.Options{JSON: true})
	const dm = "dm:alice:bob"
	users := func() *topicpb.Delivery { return &topicpb.Delivery{Users: []string{"alice", "bob"}} }
	steps := []struct {
		name  string
		d     *topicpb.Delivery
		login bool                // bob logs in on a laptop before this step
		want  map[string][]uint64 // per connection, the seqs of its one frame; none: no frame
	}{
		{"first", messagesDelivery(users(), dm, 1), false, map[string][]uint64{"phone": {1}, "alice": {1}}},
		{"repeat", messagesDelivery(users(), dm, 1), false, nil},
		{"after a gap", messagesDelivery(users(), dm, 3), false, map[string][]uint64{"phone": {3}, "alice": {3}}},
		{"the gap, late", messagesDelivery(users(), dm, 2), false, nil},
		// The laptop has nothing yet: it gets the whole batch, the others the new part.
		{"batch with a repeat", messagesDelivery(users(), dm, 3, 4), true, map[string][]uint64{"phone": {4}, "alice": {4}, "laptop": {3, 4}}},
		{"broadcast", messagesDelivery(&topicpb.Delivery{Broadcast: true}, topics.BroadcastConversation, 1), false, map[string][]uint64{"phone": {1}, "alice": {1}, "laptop": {1}}},
		{"broadcast repeat", messagesDelivery(&topicpb.Delivery{Broadcast: true}, topics.BroadcastConversation, 1), false, nil},
		{"to one connection", messagesDelivery(&topicpb.Delivery{Conns: []string{phoneID}}, dm, 4, 5), false, map[string][]uint64{"phone": {5}}},
	}
	conns := map[string]*client.Conn{"phone": phone, "alice": alice}
	ids := map[string]string{"phone": phoneID, "alice": aliceID}
	for _, st := range steps {
		if st.login {
			conns["laptop"], ids["laptop"] = f.login("bob", client.Options{JSON: true})
		}
		f.deliver(st.d)
		for name, conn := range conns {
			if want := st.want[name]; want != nil {
				fr := nextFrame(t, conn) // one frame each
				var got []uint64
				for _, m := range fr.GetMessages().GetMessages() {
					got = append(got, m.GetSeq())
				}
				if !slices.Equal(got, want) {
					t.Fatalf("%s: %s got frame %v, want seqs %v", st.name, name, fr, want)
				}
			}
			f.expectNothingMore(conn, ids[name])
		}
	}
	// repeat 2, the gap 2, batch 2, broadcast repeat 3, to one connection 1
	if st := f.comet.Stats(); st.RepeatsDropped != 10 {
		t.Errorf("repeats dropped %d, want 10 (counted per connection)", st.RepeatsDropped)
	}
}

// TestEveryRequestAnswered: a request the pipeline never answers (a
// worker down) is answered UNAVAILABLE by the comet after RequestTimeout;
// one the pipeline answers is not answered twice; and a connection with
// MaxInFlight requests waiting gets UNAVAILABLE at once for more.
func TestEveryRequestAnswered(t *testing.T) {
	t.Parallel()
	// RequestTimeout leaves a loaded CI machine time to answer request 2
	// before the comet would.
	f := newFixture(t, comet.Config{RequestTimeout: time.Second, MaxInFlight: 2})
	conn, id := f.login("alice", client.Options{})
	ctx := ctxT(t)
	send := func(req uint64) {
		t.Helper()
		if err := conn.Write(ctx, &clientpb.ClientFrame{RequestId: req, Body: &clientpb.ClientFrame_Send{Send: &clientpb.Send{
			ClientMsgId: fmt.Sprint("m", req), To: &clientpb.Send_Room{Room: "lobby"}, Body: []byte("x"),
		}}}); err != nil {
			t.Fatal(err)
		}
		next(f, topics.Submitted)
	}
	send(1) // never answered
	send(2) // answered by the pipeline
	if err := conn.Write(ctx, &clientpb.ClientFrame{RequestId: 3, Body: &clientpb.ClientFrame_Sync{Sync: &clientpb.Sync{Conversation: "room:lobby"}}}); err != nil {
		t.Fatal(err)
	}
	if fr := nextFrame(t, conn); fr.GetRequestId() != 3 || fr.GetError().GetCode() != clientpb.Error_UNAVAILABLE {
		t.Fatalf("third request in flight answered %v, want UNAVAILABLE at once", fr)
	}
	f.deliver(&topicpb.Delivery{Conns: []string{id}, Frame: &clientpb.ServerFrame{RequestId: 2, Body: &clientpb.ServerFrame_SendResult{SendResult: &clientpb.SendResult{Seq: 1}}}})
	if fr := nextFrame(t, conn); fr.GetRequestId() != 2 || fr.GetSendResult() == nil {
		t.Fatalf("answer %v, want the SendResult of 2", fr)
	}
	if fr := nextFrame(t, conn); fr.GetRequestId() != 1 || fr.GetError().GetCode() != clientpb.Error_UNAVAILABLE {
		t.Fatalf("unanswered request got %v, want UNAVAILABLE from the comet", fr)
	}
	// Request 2 was answered once: nothing more comes for it.
	time.Sleep(2 * time.Second) // two timeouts
	f.expectNothingMore(conn, id)
	if st := f.comet.Stats(); st.Unanswered != 1 {
		t.Fatalf("Stats.Unanswered = %d, want 1", st.Unanswered)
	}

	// The comet's answer says what to do about the request it answers: a
	// Login is made again, a Send resent with its client_msg_id.
	other := f.dial(client.Options{})
	if err := other.Write(ctx, &clientpb.ClientFrame{RequestId: 9, Body: &clientpb.ClientFrame_Login{Login: &clientpb.Login{Token: token(t, "bob")}}}); err != nil {
		t.Fatal(err)
	}
	next(f, topics.LoginRequests)
	if e := nextFrame(t, other).GetError(); e.GetCode() != clientpb.Error_UNAVAILABLE || !strings.Contains(e.GetText(), "log in again") || strings.Contains(e.GetText(), "Send") {
		t.Fatalf("unanswered Login got %v, want UNAVAILABLE saying to log in again", e)
	}
}

// TestLimits: what one connection may send is bounded, each refusal a
// clear Error (issue 11).
func TestLimits(t *testing.T) {
	t.Parallel()
	t.Run("request rate", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, comet.Config{RequestRate: 1, RequestBurst: 3})
		conn, _ := f.login("alice", client.Options{}) // the Login takes one
		ctx := ctxT(t)
		var limited *clientpb.Error
		for i := range 5 {
			if err := conn.Write(ctx, &clientpb.ClientFrame{RequestId: uint64(10 + i), Body: &clientpb.ClientFrame_Ping{Ping: &clientpb.Ping{}}}); err != nil {
				t.Fatal(err)
			}
		}
		for range 5 {
			if e := nextFrame(t, conn).GetError(); e != nil && limited == nil {
				limited = e
			}
		}
		if limited.GetCode() != clientpb.Error_RATE_LIMITED || limited.GetRetryAfterMs() == 0 {
			t.Fatalf("a burst past the budget got %v, want RATE_LIMITED with a retry-after", limited)
		}
		if st := f.comet.Stats(); st.RateLimited == 0 {
			t.Fatalf("Stats.RateLimited = 0")
		}
	})
	t.Run("a user's budget outlives its connections", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, comet.Config{RequestRate: 0.1, RequestBurst: 3})
		ping := func(conn *client.Conn) *clientpb.Error {
			t.Helper()
			if err := conn.Write(ctxT(t), &clientpb.ClientFrame{RequestId: 9, Body: &clientpb.ClientFrame_Ping{Ping: &clientpb.Ping{}}}); err != nil {
				t.Fatal(err)
			}
			return nextFrame(t, conn).GetError()
		}
		// A Login takes one of the connection's 3 and one of alice's;
		// pings take one of the connection's and one of alice's.
		first, _ := f.login("alice", client.Options{})
		if e := ping(first); e != nil {
			t.Fatalf("a ping within the budget: %v", e)
		}
		first.Close()
		// A new connection has a budget of its own, but alice has her
		// Login left, not three requests.
		second, _ := f.login("alice", client.Options{})
		if e := ping(second); e.GetCode() != clientpb.Error_RATE_LIMITED {
			t.Fatalf("alice reconnected got %v, want RATE_LIMITED", e)
		}
		// bob is not affected.
		bob, _ := f.login("bob", client.Options{})
		if e := ping(bob); e != nil {
			t.Fatalf("bob: %v", e)
		}
	})
	t.Run("logins spend their user's budget", func(t *testing.T) {
		t.Parallel()
		// A client whose logins keep failing (its account disabled, say)
		// and that reconnects in a loop: its Logins are refused before
		// the pipeline once its user's budget is spent, whatever the
		// connection (outside abuse check: 1,000 a second reached it).
		f := newFixture(t, comet.Config{RequestRate: 0.1, RequestBurst: 3})
		for range 3 {
			f.login("alice", client.Options{})
		}
		conn := f.dial(client.Options{})
		if err := conn.Write(ctxT(t), &clientpb.ClientFrame{RequestId: 7, Body: &clientpb.ClientFrame_Login{Login: &clientpb.Login{Token: token(t, "alice")}}}); err != nil {
			t.Fatal(err)
		}
		if e := nextFrame(t, conn).GetError(); e.GetCode() != clientpb.Error_RATE_LIMITED || e.GetRetryAfterMs() == 0 {
			t.Fatalf("alice's fourth Login got %v, want RATE_LIMITED with a wait", e)
		}
		// bob is not affected, and the next login request published is
		// his: alice's refused Login never reached the pipeline.
		f.login("bob", client.Options{})
	})
	t.Run("messages come in small bursts", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, comet.Config{RequestRate: 0.1, RequestBurst: 20, SendBurst: 3})
		conn, _ := f.login("alice", client.Options{})
		ctx := ctxT(t)
		send := func(i int) {
			t.Helper()
			if err := conn.Write(ctx, &clientpb.ClientFrame{RequestId: uint64(100 + i), Body: &clientpb.ClientFrame_Send{Send: &clientpb.Send{
				ClientMsgId: fmt.Sprintf("m-%d", i), To: &clientpb.Send_Room{Room: "lobby"}, Body: []byte("hi"),
			}}}); err != nil {
				t.Fatal(err)
			}
		}
		// Three messages go on at once; the fourth waits its turn.
		for i := range 3 {
			send(i)
			if sub := next(f, topics.Submitted); sub.GetClientMsgId() != fmt.Sprintf("m-%d", i) {
				t.Fatalf("submitted %v, want m-%d", sub, i)
			}
		}
		send(3)
		e := nextFrame(t, conn).GetError()
		if e.GetCode() != clientpb.Error_RATE_LIMITED || e.GetRetryAfterMs() == 0 || !strings.Contains(e.GetText(), "3 at once") {
			t.Fatalf("fourth message got %v, want RATE_LIMITED with a wait, 3 at once", e)
		}
		// Other requests keep their own budget.
		if err := conn.Write(ctx, &clientpb.ClientFrame{RequestId: 9, Body: &clientpb.ClientFrame_Ping{Ping: &clientpb.Ping{}}}); err != nil {
			t.Fatal(err)
		}
		if fr := nextFrame(t, conn); fr.GetPong() == nil {
			t.Fatalf("ping got %v, want a Pong", fr)
		}
	})
	t.Run("a connection that does not wait is closed", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, comet.Config{RequestRate: 0.1, RequestBurst: 1})
		conn, _ := f.login("alice", client.Options{})
		ctx := ctxT(t)
		for i := range 200 {
			if err := conn.Write(ctx, &clientpb.ClientFrame{RequestId: uint64(100 + i), Body: &clientpb.ClientFrame_Ping{Ping: &clientpb.Ping{}}}); err != nil {
				break // closed meanwhile
			}
		}
		refusals := make(chan int, 1)
		go func() { // count what came before the close
			n := 0
			for fr := range conn.Frames() {
				if fr.GetError().GetCode() == clientpb.Error_RATE_LIMITED {
					n++
				}
			}
			refusals <- n
		}()
		if ce := closeError(t, conn); ce.Code != websocket.StatusPolicyViolation || ce.Reason != "rate limit exceeded" {
			t.Fatalf("close %v, want 1008 rate limit exceeded", ce)
		}
		// Every refusal is written before the close: the client can
		// count them as docs/protocol.md does.
		select {
		case n := <-refusals:
			if n != 100 {
				t.Fatalf("%d RATE_LIMITED answers before the close, want 100", n)
			}
		case <-time.After(wait):
			t.Fatal("frames not closed after the close")
		}
	})
	t.Run("connections per user", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, comet.Config{MaxConnsPerUser: 2})
		f.login("alice", client.Options{})
		f.login("alice", client.Options{})
		conn := f.dial(client.Options{})
		ctx := ctxT(t)
		if err := conn.Write(ctx, &clientpb.ClientFrame{RequestId: 7, Body: &clientpb.ClientFrame_Login{Login: &clientpb.Login{Token: token(t, "alice")}}}); err != nil {
			t.Fatal(err)
		}
		id := next(f, topics.LoginRequests).GetSession().GetConn()
		f.deliver(&topicpb.Delivery{
			Conns:   []string{id},
			Control: &topicpb.Control{Authenticate: "alice", Join: "lobby"},
			Frame:   &clientpb.ServerFrame{RequestId: 7, Body: &clientpb.ServerFrame_LoginResult{LoginResult: &clientpb.LoginResult{Ok: true, User: "alice"}}},
		})
		if fr := nextFrame(t, conn); fr.GetRequestId() != 7 || fr.GetError().GetCode() != clientpb.Error_RATE_LIMITED {
			t.Fatalf("a third connection of alice got %v, want RATE_LIMITED", fr)
		}
		if ce := closeError(t, conn); ce.Code != websocket.StatusPolicyViolation {
			t.Fatalf("close %v, want 1008", ce)
		}
		// Presence hears that the session it opened is gone.
		if ev := next(f, topics.SessionEvents); ev.GetKind() != topicpb.SessionEvent_CLOSED || ev.GetSession().GetConn() != id {
			t.Fatalf("event %v, want CLOSED of %s", ev, id)
		}
		if st := f.comet.Stats(); st.Connections != 2 || st.Rooms != 0 {
			t.Fatalf("stats %+v, want alice's two connections and no room", st)
		}
	})
	t.Run("one login at a time and a token cap", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, comet.Config{MaxTokenBytes: 200})
		conn := f.dial(client.Options{})
		ctx := ctxT(t)
		login := func(req uint64, token string) {
			if err := conn.Write(ctx, &clientpb.ClientFrame{RequestId: req, Body: &clientpb.ClientFrame_Login{Login: &clientpb.Login{Token: token}}}); err != nil {
				t.Fatal(err)
			}
		}
		login(1, strings.Repeat("t", 201))
		if e := nextFrame(t, conn).GetError(); e.GetCode() != clientpb.Error_BAD_TOKEN {
			t.Fatalf("a long token got %v, want BAD_TOKEN", e)
		}
		login(2, token(t, "alice"))
		login(3, token(t, "mallory"))
		if fr := nextFrame(t, conn); fr.GetRequestId() != 3 || fr.GetError().GetCode() != clientpb.Error_ALREADY_LOGGED_IN {
			t.Fatalf("a second Login in flight got %v, want ALREADY_LOGGED_IN", fr)
		}
		if req := next(f, topics.LoginRequests); req.GetRequestId() != 2 {
			t.Fatalf("forwarded login %v, want request 2", req)
		}
		if st := f.comet.Stats(); st.Refused != 2 {
			t.Errorf("Stats.Refused = %d, want 2", st.Refused)
		}
	})
	t.Run("a login refused lets the client log in again", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, comet.Config{})
		conn := f.dial(client.Options{})
		ctx := ctxT(t)
		if err := conn.Write(ctx, &clientpb.ClientFrame{RequestId: 1, Body: &clientpb.ClientFrame_Login{Login: &clientpb.Login{Token: token(t, "zed")}}}); err != nil {
			t.Fatal(err)
		}
		req := next(f, topics.LoginRequests)
		f.deliver(&topicpb.Delivery{Conns: []string{req.GetSession().GetConn()}, Frame: topics.ErrorFrame(1, clientpb.Error_UNKNOWN_USER, "unknown or disabled user")})
		if e := nextFrame(t, conn).GetError(); e.GetCode() != clientpb.Error_UNKNOWN_USER {
			t.Fatalf("answer %v", e)
		}
		if err := conn.Write(ctx, &clientpb.ClientFrame{RequestId: 2, Body: &clientpb.ClientFrame_Login{Login: &clientpb.Login{Token: token(t, "alice")}}}); err != nil {
			t.Fatal(err)
		}
		if req := next(f, topics.LoginRequests); req.GetRequestId() != 2 {
			t.Fatalf("second login %v not forwarded", req)
		}
	})
	t.Run("small frames before login", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, comet.Config{})
		conn := f.dial(client.Options{})
		_ = conn.WriteRaw(ctxT(t), websocket.MessageBinary, make([]byte, 20<<10))
		if ce := closeError(t, conn); ce.Code != websocket.StatusMessageTooBig {
			t.Fatalf("a 20 KiB frame before login: close %v, want 1009", ce)
		}
		// After login, MaxFrameBytes (64 KiB) applies.
		conn2, _ := f.login("alice", client.Options{})
		ctx := ctxT(t)
		if err := conn2.Write(ctx, &clientpb.ClientFrame{RequestId: 5, Body: &clientpb.ClientFrame_Send{Send: &clientpb.Send{
			ClientMsgId: "m", To: &clientpb.Send_Room{Room: "lobby"}, Body: make([]byte, 20<<10),
		}}}); err != nil {
			t.Fatal(err)
		}
		if sub := next(f, topics.Submitted); len(sub.GetBody()) != 20<<10 {
			t.Fatalf("a 20 KiB Send after login was not forwarded")
		}
	})
	t.Run("string caps", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, comet.Config{})
		conn, _ := f.login("alice", client.Options{})
		ctx := ctxT(t)
		for i, s := range []*clientpb.Send{
			{ClientMsgId: strings.Repeat("m", 129), To: &clientpb.Send_Room{Room: "lobby"}},
			{ClientMsgId: "m", ContentType: strings.Repeat("c", 60000), To: &clientpb.Send_Room{Room: "lobby"}},
			{ClientMsgId: "m", To: &clientpb.Send_Room{Room: strings.Repeat("r", 129)}},
		} {
			_, err := conn.Do(ctx, &clientpb.ClientFrame{RequestId: uint64(20 + i), Body: &clientpb.ClientFrame_Send{Send: s}})
			if code(err) != clientpb.Error_INVALID {
				t.Errorf("send %d: %v, want INVALID", i, err)
			}
		}
		if _, err := conn.Do(ctx, &clientpb.ClientFrame{RequestId: 30, Body: &clientpb.ClientFrame_Sync{Sync: &clientpb.Sync{Conversation: strings.Repeat("c", 300)}}}); code(err) != clientpb.Error_INVALID {
			t.Errorf("sync with a 300-byte conversation: %v, want INVALID", err)
		}
		// A room id that breaks the id rule (docs/protocol.md, Ids) is
		// refused INVALID, saying so, before it goes anywhere.
		for i, room := range []string{"a:b", "sp ace", strings.Repeat("r", 65)} {
			for j, fr := range []*clientpb.ClientFrame{
				{Body: &clientpb.ClientFrame_Join{Join: &clientpb.JoinRoom{Room: room}}},
				{Body: &clientpb.ClientFrame_Leave{Leave: &clientpb.LeaveRoom{Room: room}}},
			} {
				fr.RequestId = uint64(40 + 2*i + j)
				if _, err := conn.Do(ctx, fr); code(err) != clientpb.Error_INVALID || !strings.Contains(err.Error(), "room id") {
					t.Errorf("%v: %v, want INVALID naming the room id", fr, err)
				}
			}
		}
		if pubs := f.rec.Take(); len(pubs) != 0 {
			t.Errorf("refused frames published %v", pubs)
		}
		if st := f.comet.Stats(); st.Refused != 10 {
			t.Errorf("Stats.Refused = %d, want 10", st.Refused)
		}
	})
	t.Run("bytes queued per connection", func(t *testing.T) {
		t.Parallel()
		// Frames alone would allow 100,000 queued: only the byte budget
		// can drop bob.
		f := newFixture(t, comet.Config{SendQueue: 100_000, SendQueueBytes: 256 << 10, BatchWindow: -1, WriteTimeout: 5 * time.Second})
		slow := rawDial(t, f.url, comet.SubprotocolProto)
		b, _ := proto.Marshal(&clientpb.ClientFrame{Body: &clientpb.ClientFrame_Login{Login: &clientpb.Login{Token: token(t, "bob")}}})
		if err := slow.Write(ctxT(t), websocket.MessageBinary, b); err != nil {
			t.Fatal(err)
		}
		slowID := next(f, topics.LoginRequests).GetSession().GetConn()
		f.deliver(&topicpb.Delivery{Conns: []string{slowID}, Control: &topicpb.Control{Authenticate: "bob", Join: "lobby"}})
		big := make([]byte, 60<<10)
		for seq := uint64(1); f.comet.Stats().SlowConsumers == 0; seq++ {
			if seq == 2000 { // ~120 MB: far past loopback buffers
				t.Fatalf("bob not dropped after %d frames of 60 KiB: %+v", seq, f.comet.Stats())
			}
			d := roomMessage("lobby", seq)
			d.GetFrame().GetMessages().GetMessages()[0].Body = big
			f.deliver(d)
		}
	})
	t.Run("bytes queued per comet", func(t *testing.T) {
		t.Parallel()
		// Per connection 100,000 frames and 64 MiB would be allowed: only
		// the comet's budget of 1 MiB can drop bob, the largest queue;
		// carol, who does not read either but has little queued, stays,
		// and so does alice, who reads.
		f := newFixture(t, comet.Config{SendQueue: 100_000, SendQueueBytes: 64 << 20, MaxQueuedBytes: 1 << 20, BatchWindow: -1, WriteTimeout: time.Second})
		slowLogin := func(user string) (*websocket.Conn, string) {
			ws := rawDial(t, f.url, comet.SubprotocolProto)
			b, _ := proto.Marshal(&clientpb.ClientFrame{Body: &clientpb.ClientFrame_Login{Login: &clientpb.Login{Token: token(t, user)}}})
			if err := ws.Write(ctxT(t), websocket.MessageBinary, b); err != nil {
				t.Fatal(err)
			}
			id := next(f, topics.LoginRequests).GetSession().GetConn()
			f.deliver(&topicpb.Delivery{Conns: []string{id}, Control: &topicpb.Control{Authenticate: user}})
			return ws, id
		}
		_, bobID := slowLogin("bob")
		carol, carolID := slowLogin("carol")
		alice, aliceID := f.login("alice", client.Options{})
		small := &topicpb.Delivery{Conns: []string{carolID}, Frame: &clientpb.ServerFrame{Body: &clientpb.ServerFrame_Presence{Presence: &clientpb.PresenceChange{Room: "for-carol"}}}}
		big := make([]byte, 60<<10)
		for seq := uint64(1); f.comet.Stats().OverBudget == 0; seq++ {
			if seq == 2000 { // ~120 MB: far past loopback buffers
				t.Fatalf("nobody dropped after %d frames of 60 KiB: %+v", seq, f.comet.Stats())
			}
			f.deliver(small)
			f.deliver(&topicpb.Delivery{Conns: []string{bobID}, Frame: &clientpb.ServerFrame{Body: &clientpb.ServerFrame_Messages{Messages: &clientpb.MessageBatch{
				Messages: []*clientpb.Message{{Conversation: "dm:alice:bob", Seq: seq, Body: big}},
			}}}})
		}
		// The close handshake waits up to 5 s for bob, who does not read.
		testinfra.Eventually(t, 3*wait, func() bool { return f.comet.Stats().Connections == 2 }, "bob's connection not closed")
		st := f.comet.Stats()
		if st.OverBudget != 1 || st.SlowConsumers != 1 || st.QueuedBytes > 1<<20 {
			t.Fatalf("stats %+v, want one closed over the budget and the queues within it", st)
		}
		// carol reads now: her frames are all there, her connection open.
		_, data, err := carol.Read(ctxT(t))
		if err != nil {
			t.Fatalf("carol: %v", err)
		}
		var fr clientpb.ServerFrame
		if err := proto.Unmarshal(data, &fr); err != nil || fr.GetPresence().GetRoom() != "for-carol" {
			t.Fatalf("carol got %v, %v", &fr, err)
		}
		f.expectNothingMore(alice, aliceID)
	})
}

// blockingPub is a publisher whose Publish blocks until release is closed,
// as with the broker down.
type blockingPub struct{ release chan struct{} }

func (p blockingPub) Publish(string, ...*message.Message) error {
	<-p.release
	return errors.New("broker down")
}
func (p blockingPub) Close() error { return nil }

// TestBrokerStuckReaderGoesOn: while the broker does not take a request,
// the client gets UNAVAILABLE after RequestTimeout and the connection's
// next frames are still read and answered (issue 10's soak: a reader
// blocked in a publish left retried Sends unanswered).
func TestBrokerStuckReaderGoesOn(t *testing.T) {
	t.Parallel()
	pub := blockingPub{release: make(chan struct{})}
	c, err := comet.New(comet.Config{ID: "c1", Secret: testSecret, RequestTimeout: 300 * time.Millisecond}, pub, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c)
	t.Cleanup(func() {
		close(pub.release) // the stuck publishes return, then Close can wait for them
		c.Close()
		srv.Close()
	})
	conn, err := client.Dial(ctxT(t), "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx := ctxT(t)
	if _, err := conn.Do(ctx, &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Login{Login: &clientpb.Login{Token: token(t, "alice")}}}); code(err) != clientpb.Error_UNAVAILABLE {
		t.Fatalf("login with the broker stuck: %v, want UNAVAILABLE", err)
	}
	// The publish is still stuck; a reader held there would never answer.
	if _, err := conn.Ping(ctx); err != nil {
		t.Fatalf("ping while the login's publish is stuck: %v", err)
	}
}

// TestBroadcastToStalledReaderKeepsOrder fills a member's socket while it
// does not read: a room's frames are first written without blocking, and
// what the kernel does not take (part of a message, then whole ones) goes
// to the connection's writer. When the member reads again, every message
// arrives whole and in order, in each of the three WebSocket length forms
// (under 126 bytes, up to 64 KiB, more), in both encodings.
func TestBroadcastToStalledReaderKeepsOrder(t *testing.T) {
	f := newFixture(t, comet.Config{BatchWindow: -1, SendQueue: 1 << 12, SendQueueBytes: 256 << 20, WriteTimeout: time.Minute})
	sizes := []int{10, 300, 200_000}
	const n = 240 // about 16 MB of messages: more than loopback buffers hold
	for _, useJSON := range []bool{false, true} {
		user := fmt.Sprintf("stalled-%v", useJSON)
		// The client's own buffer holds one frame: the socket fills.
		conn, id := f.login(user, client.Options{JSON: useJSON, FrameBuffer: 1})
		f.join(id, "big")
		active, activeID := f.login(user+"-reader", client.Options{JSON: useJSON})
		f.join(activeID, "big")
		base := uint64(0)
		if useJSON {
			base = n
		}
		done := make(chan error, 1)
		go func() { // the active member reads as frames come
			for i := 0; i < n; {
				select {
				case fr, ok := <-active.Frames():
					if !ok {
						done <- fmt.Errorf("closed: %w", active.Err())
						return
					}
					i += len(fr.GetMessages().GetMessages())
				case <-time.After(time.Minute):
					done <- fmt.Errorf("no frame in a minute after %d messages", i)
					return
				}
			}
			done <- nil
		}()
		for i := range uint64(n) {
			d := roomMessage("big", base+i+1)
			d.Frame.GetMessages().Messages[0].Body = bytes.Repeat([]byte{byte(i)}, sizes[i%3])
			before := f.comet.Stats().FramesSent
			f.deliver(d)
			// Paced, so that most writes find the connections idle
			// and go without blocking until the socket is full.
			for range 10 {
				if f.comet.Stats().FramesSent >= before+2 {
					break
				}
				time.Sleep(200 * time.Microsecond)
			}
		}
		if err := <-done; err != nil {
			t.Fatalf("json=%v: the reading member: %v", useJSON, err)
		}
		// Each frame may take up to 30s: on a loaded CI machine, under
		// the race detector, one of these 200 KB frames once took more
		// than the usual 5s; a writer that stalled would still fail
		// this, as it would wait for WriteTimeout (a minute).
		msgs, _ := readMessagesWithin(t, conn, n, 30*time.Second)
		for i, m := range msgs {
			if m.GetSeq() != base+uint64(i)+1 || len(m.GetBody()) != sizes[i%3] || m.GetBody()[0] != byte(i) {
				t.Fatalf("json=%v: message %d: seq %d, %d bytes; want seq %d, %d bytes", useJSON, i, m.GetSeq(), len(m.GetBody()), base+uint64(i)+1, sizes[i%3])
			}
		}
	}
	if st := f.comet.Stats(); st.SlowConsumers != 0 {
		t.Errorf("%d slow consumers; want none", st.SlowConsumers)
	}
}

// TestBroadcastAfterAWriteDeadlinePassed: a connection's writer bounds
// each batch by a deadline on the socket; once that has passed, a room's
// frame written without blocking still goes out.
func TestBroadcastAfterAWriteDeadlinePassed(t *testing.T) {
	f := newFixture(t, comet.Config{BatchWindow: -1, WriteTimeout: 50 * time.Millisecond})
	conn, id := f.login("late", client.Options{}) // its answer set the deadline
	f.join(id, "lobby")
	time.Sleep(200 * time.Millisecond)
	for seq := uint64(1); seq <= 3; seq++ {
		f.deliver(roomMessage("lobby", seq))
		time.Sleep(10 * time.Millisecond)
	}
	msgs, _ := readMessages(t, conn, 3)
	for i, m := range msgs {
		if m.GetSeq() != uint64(i)+1 {
			t.Fatalf("message %d has seq %d", i, m.GetSeq())
		}
	}
}

// TestLoginTokenVerifiedByComet: the comet verifies a Login's token
// itself, answers a bad one BAD_TOKEN as the login worker did, forwards
// nothing for it, and forwards a good one as its claims only.
func TestLoginTokenVerifiedByComet(t *testing.T) {
	policy := auth.Policy{Issuer: "auth", Audience: "laneim", MaxLifetime: 2 * time.Hour}
	mintFor := func(secret, user string, ttl time.Duration, iss, aud string) string {
		tok, err := auth.MintTokenFor([]byte(secret), user, ttl, iss, aud)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tests := []struct {
		name, token, text string // text: "" when accepted
	}{
		{"good", mintFor(testSecret, "alice", time.Hour, "auth", "laneim"), ""},
		{"expired", mintFor(testSecret, "alice", -time.Second, "auth", "laneim"), "token expired"},
		{"other secret", mintFor("another-secret-of-the-comet-tests-0123456789", "alice", time.Hour, "auth", "laneim"), "invalid token"},
		{"garbage", "a.b.c", "invalid token"},
		{"empty", "", "invalid token"},
		{"wrong issuer", mintFor(testSecret, "alice", time.Hour, "evil", "laneim"), "invalid token"},
		{"no audience", mintFor(testSecret, "alice", time.Hour, "auth", ""), "invalid token"},
		{"lives too long", mintFor(testSecret, "alice", 3*time.Hour, "auth", "laneim"), "invalid token"},
		{"subject no user can have", mintFor(testSecret, "acme:alice", time.Hour, "auth", "laneim"), "token subject is not a valid user id"},
	}
	f := newFixture(t, comet.Config{Token: policy})
	bad := int64(0)
	for i, tt := range tests {
		conn := f.dial(client.Options{})
		req := uint64(i + 1)
		if err := conn.Write(ctxT(t), &clientpb.ClientFrame{RequestId: req, Body: &clientpb.ClientFrame_Login{Login: &clientpb.Login{Token: tt.token}}}); err != nil {
			t.Fatal(err)
		}
		if tt.text == "" {
			got := next(f, topics.LoginRequests)
			if got.GetUser() != "alice" || got.GetRequestId() != req || got.GetTokenExpiresUnixMs() < time.Now().Add(59*time.Minute).UnixMilli() {
				t.Fatalf("%s: forwarded %v", tt.name, got)
			}
			continue
		}
		bad++
		fr := nextFrame(t, conn)
		if e := fr.GetError(); fr.GetRequestId() != req || e.GetCode() != clientpb.Error_BAD_TOKEN || e.GetText() != tt.text {
			t.Fatalf("%s: answered %v, want BAD_TOKEN %q", tt.name, fr, tt.text)
		}
		if tt.token != "" && strings.Contains(fr.GetError().GetText(), tt.token) {
			t.Fatalf("%s: the answer repeats the token", tt.name)
		}
	}
	// Nothing was forwarded for the refused tokens.
	f.backlog = append(f.backlog, f.rec.Take()...)
	for _, p := range f.backlog {
		if p.Topic == topics.LoginRequests.Name {
			t.Fatalf("a refused token was forwarded: %v", p)
		}
	}
	if st := f.comet.Stats(); st.BadTokens != bad {
		t.Errorf("Stats.BadTokens = %d, want %d", st.BadTokens, bad)
	}
}

// TestConnectionsPerAddress: over real connections from one address, one
// past MaxConnsPerAddress is refused before the upgrade with HTTP 429 and
// Retry-After, and counted; closing one frees its place. Loopback is
// exempt by default.
func TestConnectionsPerAddress(t *testing.T) {
	dial := func(f *fixture) (*websocket.Conn, *http.Response, error) {
		ws, resp, err := websocket.Dial(ctxT(t), f.url, nil)
		if ws != nil {
			t.Cleanup(func() { ws.CloseNow() })
		}
		return ws, resp, err
	}
	t.Run("limited", func(t *testing.T) {
		f := newFixture(t, comet.Config{MaxConnsPerAddress: 3, LimitLoopback: true})
		var open []*websocket.Conn
		for range 3 {
			ws, _, err := dial(f)
			if err != nil {
				t.Fatal(err)
			}
			open = append(open, ws)
		}
		for range 2 {
			_, resp, err := dial(f)
			if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "10" {
				t.Fatalf("fourth connection: %v, %v; want 429 with Retry-After 10", resp, err)
			}
		}
		// A connection is registered just after its upgrade's answer,
		// which the client may read first.
		testinfra.Eventually(t, wait, func() bool { return f.comet.Stats().Connections == 3 }, "three connections not registered")
		if st := f.comet.Stats(); st.AddressLimited != 2 || st.Connections != 3 {
			t.Fatalf("stats %+v, want 2 refused and 3 open", st)
		}
		// The connections still work, and closing one frees its place.
		open[0].Close(websocket.StatusNormalClosure, "")
		testinfra.Eventually(t, wait, func() bool { return f.comet.Stats().Connections == 2 }, "closed connection not forgotten")
		if _, _, err := dial(f); err != nil {
			t.Fatalf("after one closed: %v", err)
		}
	})
	t.Run("loopback exempt by default", func(t *testing.T) {
		f := newFixture(t, comet.Config{MaxConnsPerAddress: 2})
		for range 4 {
			if _, _, err := dial(f); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func TestAddressKey(t *testing.T) {
	c, err := comet.New(comet.Config{ID: "k", Secret: testSecret}, &testinfra.Recorder{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for remote, want := range map[string]string{
		"203.0.113.7:5000":                    "203.0.113.7",
		"[::ffff:203.0.113.7]:5000":           "203.0.113.7",
		"[2001:db8:1:2:3:4:5:6]:443":          "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff:ffff:ffff:1]:443": "2001:db8:1:2::/64",
		"127.0.0.1:80":                        "",
		"[::1]:80":                            "",
		"garbage":                             "",
	} {
		if got := comet.AddressKey(c, remote); got != want {
			t.Errorf("AddressKey(%q) = %q, want %q", remote, got, want)
		}
	}
}

// TestStrikes: an address whose connections keep being closed for
// oversized frames (the ping flood) has its next connections refused
// before the upgrade with HTTP 429, loopback included; a connection it
// opened before is not touched.
func TestStrikes(t *testing.T) {
	f := newFixture(t, comet.Config{MaxStrikes: 3})
	honest := f.dial(client.Options{})
	big := make([]byte, 9<<10) // over the 8 KiB allowed before login
	// Strikes are forgiven at one a second, so on a loaded machine more
	// than three flooding connections may be needed; twenty are plenty.
	var resp *http.Response
	var err error
	for i := 0; i < 20 && resp == nil; i++ {
		var ws *websocket.Conn
		var r *http.Response
		ws, r, err = websocket.Dial(ctxT(t), f.url, &websocket.DialOptions{Subprotocols: []string{comet.SubprotocolProto}})
		if err != nil {
			resp = r // refused
			break
		}
		_ = ws.Write(ctxT(t), websocket.MessageBinary, big)
		if _, _, rerr := ws.Read(ctxT(t)); websocket.CloseStatus(rerr) != websocket.StatusMessageTooBig {
			t.Fatalf("flood connection %d: %v, want 1009", i, rerr)
		}
	}
	if resp == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "10" {
		t.Fatalf("connection after strikes: %v, %v; want 429 with Retry-After 10", resp, err)
	}
	if st := f.comet.Stats(); st.StruckOut != 1 {
		t.Fatalf("Stats.StruckOut = %d, want 1", st.StruckOut)
	}
	if _, err := honest.Ping(ctxT(t)); err != nil {
		t.Fatalf("the connection opened before: %v", err)
	}
	// Strikes are forgiven at one a second.
	testinfra.Eventually(t, wait, func() bool {
		ws, _, err := websocket.Dial(ctxT(t), f.url, nil)
		if err == nil {
			ws.CloseNow()
		}
		return err == nil
	}, "the address is still refused")
}

// TestMergedDeliveriesApplyInOrder: the consumer merges a run of
// deliveries into one message (topics.Deliveries.BatchField); the comet
// applies each in order, so a join merged before a room's message lets
// the message through, and a login's answer comes first.
func TestMergedDeliveriesApplyInOrder(t *testing.T) {
	f := newFixture(t, comet.Config{})
	conn := f.dial(client.Options{})
	ctx := ctxT(t)
	if err := conn.Write(ctx, &clientpb.ClientFrame{RequestId: 7, Body: &clientpb.ClientFrame_Login{Login: &clientpb.Login{Token: token(t, "alice"), Device: "test"}}}); err != nil {
		t.Fatal(err)
	}
	id := next(f, topics.LoginRequests).GetSession().GetConn()
	merged := testinfra.Merged(t, topics.Deliveries,
		&topicpb.Delivery{Conns: []string{id}, Control: &topicpb.Control{Authenticate: "alice"}, Frame: &clientpb.ServerFrame{RequestId: 7, Body: &clientpb.ServerFrame_LoginResult{LoginResult: &clientpb.LoginResult{Ok: true, User: "alice"}}}},
		&topicpb.Delivery{Conns: []string{id}, Control: &topicpb.Control{Join: "lobby"}},
		roomMessage("lobby", 1),
		roomMessage("lobby", 2),
	)
	if err := f.h.Handle(merged); err != nil {
		t.Fatal(err)
	}
	if fr := nextFrame(t, conn); fr.GetLoginResult().GetUser() != "alice" {
		t.Fatalf("first frame %v, want the login's answer", fr)
	}
	var seqs []uint64
	for len(seqs) < 2 {
		for _, m := range nextFrame(t, conn).GetMessages().GetMessages() {
			seqs = append(seqs, m.GetSeq())
		}
	}
	if fmt.Sprint(seqs) != "[1 2]" {
		t.Errorf("room messages %v, want [1 2]", seqs)
	}
}

// TestLoginJoins: a Login's join list goes to the login worker without
// repeats, a list the protocol does not allow is refused INVALID and
// goes nowhere, and the rooms the answer's control joins are the
// connection's.
func TestLoginJoins(t *testing.T) {
	f := newFixture(t, comet.Config{RequestRate: -1})
	ctx := ctxT(t)
	many := make([]string, comet.MaxLoginJoins+1)
	for i := range many {
		many[i] = fmt.Sprint("r", i)
	}
	for _, tt := range []struct {
		name string
		join []string
	}{
		{"too many rooms", many},
		{"an empty room", []string{"lobby", ""}},
		{"a room too long", []string{strings.Repeat("r", 129)}},
	} {
		conn := f.dial(client.Options{})
		if _, err := conn.Login(ctx, token(t, "alice"), "", tt.join...); code(err) != clientpb.Error_INVALID {
			t.Errorf("login joining %s = %v, want INVALID", tt.name, err)
		}
	}
	if pubs := f.rec.Take(); len(pubs) != 0 {
		t.Fatalf("refused logins published %v", pubs)
	}
	// A room breaking the id rule does not refuse the whole login: it is
	// refused in the LoginResult's join_refused (by presence), so that a
	// client with one bad room in its list still logs in.
	bad := f.dial(client.Options{})
	if err := bad.Write(ctx, &clientpb.ClientFrame{RequestId: 5, Body: &clientpb.ClientFrame_Login{Login: &clientpb.Login{Token: token(t, "alice"), Join: []string{"lobby", "a:b"}}}}); err != nil {
		t.Fatal(err)
	}
	if req := next(f, topics.LoginRequests); !slices.Equal(req.GetJoin(), []string{"lobby", "a:b"}) {
		t.Fatalf("login request joins %v, want lobby and a:b", req.GetJoin())
	}

	conn := f.dial(client.Options{})
	type answer struct {
		res *clientpb.LoginResult
		err error
	}
	done := make(chan answer, 1)
	go func() { // ends when the comet answers or ctx expires
		res, err := conn.Login(ctx, token(t, "alice"), "", append(many[:comet.MaxLoginJoins-2:comet.MaxLoginJoins-2], "lobby", "r0")...)
		done <- answer{res, err}
	}()
	req := next(f, topics.LoginRequests)
	if got, want := req.GetJoin(), append(many[:comet.MaxLoginJoins-2:comet.MaxLoginJoins-2], "lobby"); !slices.Equal(got, want) {
		t.Fatalf("login request joins %v, want %v", got, want)
	}
	id := req.GetSession().GetConn()
	f.deliver(&topicpb.Delivery{
		Conns:   []string{id},
		Control: &topicpb.Control{Authenticate: "alice", Joins: []string{"r0", "lobby"}},
		Frame: &clientpb.ServerFrame{RequestId: req.GetRequestId(), Body: &clientpb.ServerFrame_LoginResult{LoginResult: &clientpb.LoginResult{
			Ok: true, User: "alice", Joined: []*clientpb.Joined{{Room: "r0"}, {Room: "lobby"}},
		}}},
	})
	if a := <-done; a.err != nil || len(a.res.GetJoined()) != 2 {
		t.Fatalf("login = %v, %v", a.res, a.err)
	}
	for i, room := range []string{"lobby", "r0"} {
		f.deliver(roomMessage(room, uint64(i+1)))
		if msgs, _ := readMessages(t, conn, 1); msgs[0].GetConversation() != topics.RoomConversation(room) {
			t.Fatalf("got %v, want the message of %s", msgs[0], room)
		}
	}
	f.deliver(roomMessage("r1", 1)) // not joined
	f.expectNothingMore(conn, id)
}

// syncLobby writes a Sync of room:lobby with request id req on conn.
func syncLobby(t *testing.T, ctx context.Context, conn *client.Conn, req uint64) {
	t.Helper()
	if err := conn.Write(ctx, &clientpb.ClientFrame{RequestId: req, Body: &clientpb.ClientFrame_Sync{Sync: &clientpb.Sync{Conversation: "room:lobby"}}}); err != nil {
		t.Fatal(err)
	}
}

// readForwarded checks that the next history request is read req.
func readForwarded(t *testing.T, f *fixture, req uint64) {
	t.Helper()
	if hr := next(f, topics.HistoryRequests); hr.GetRequestId() != req {
		t.Fatalf("forwarded %v, want request %d", hr, req)
	}
}

// readShed checks that conn's next frame answers read req UNAVAILABLE at
// once, with a retry_after_ms of about a second.
func readShed(t *testing.T, conn *client.Conn, req uint64) {
	t.Helper()
	fr := nextFrame(t, conn)
	if e := fr.GetError(); fr.GetRequestId() != req || e.GetCode() != clientpb.Error_UNAVAILABLE || e.GetRetryAfterMs() < 500 || e.GetRetryAfterMs() > 1500 {
		t.Fatalf("read %d answered %v, want UNAVAILABLE at once with a retry_after_ms of about a second", req, fr)
	}
}

// TestReadsBoundedPerComet: history reads (Sync, Conversations) of all
// the comet's connections together wait at most MaxReadsInFlight at a
// time, and a read starting a connection's catch-up only while half the
// slots are free; one more is answered UNAVAILABLE at once, with a
// retry_after_ms of about a second, and not forwarded. A slot comes back
// when its read is answered, when the comet answers it itself after
// RequestTimeout, and when its connection ends. Acks take no slot.
func TestReadsBoundedPerComet(t *testing.T) {
	t.Parallel()
	// RequestTimeout outlasts the steps up to the overdue reads below,
	// even on a loaded CI machine (400ms did not).
	f := newFixture(t, comet.Config{MaxReadsInFlight: 4, RequestTimeout: 3 * time.Second})
	ctx := ctxT(t)
	alice, aliceID := f.login("alice", client.Options{})
	bob, _ := f.login("bob", client.Options{})
	carol, _ := f.login("carol", client.Options{})
	write := func(conn *client.Conn, req uint64, fr *clientpb.ClientFrame) {
		t.Helper()
		fr = proto.Clone(fr).(*clientpb.ClientFrame)
		fr.RequestId = req
		if err := conn.Write(ctx, fr); err != nil {
			t.Fatal(err)
		}
	}
	sync := &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Sync{Sync: &clientpb.Sync{Conversation: "room:lobby"}}}
	list := &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Conversations{Conversations: &clientpb.Conversations{}}}
	ack := &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Ack{Ack: &clientpb.Ack{Conversation: "room:lobby", Seq: 1}}}
	reads := func(want int64) {
		t.Helper()
		if st := f.comet.Stats(); st.Reads != want {
			t.Fatalf("reads %d, want %d", st.Reads, want)
		}
	}

	// Two catch-ups start: half the slots.
	write(alice, 1, sync)
	readForwarded(t, f, 1)
	write(bob, 1, list)
	readForwarded(t, f, 1)
	write(alice, 2, ack) // no slot
	readForwarded(t, f, 2)
	write(carol, 1, sync) // a third catch-up starting: shed
	readShed(t, carol, 1)
	// Those under way take the rest.
	write(alice, 3, sync)
	readForwarded(t, f, 3)
	write(bob, 2, sync)
	readForwarded(t, f, 2)
	write(alice, 4, sync) // every slot taken: shed
	readShed(t, alice, 4)
	if st := f.comet.Stats(); st.Reads != 4 || st.ReadsShed != 2 {
		t.Fatalf("reads %d, shed %d; want 4, 2", st.Reads, st.ReadsShed)
	}
	// Answered: its slot is free again, for a catch-up under way only.
	f.deliver(&topicpb.Delivery{Conns: []string{aliceID}, Frame: &clientpb.ServerFrame{RequestId: 1, Body: &clientpb.ServerFrame_SyncResult{SyncResult: &clientpb.SyncResult{Conversation: "room:lobby"}}}})
	if fr := nextFrame(t, alice); fr.GetRequestId() != 1 || fr.GetSyncResult() == nil {
		t.Fatalf("answer %v, want the SyncResult of 1", fr)
	}
	reads(3)
	write(carol, 2, sync)
	readShed(t, carol, 2)
	write(alice, 5, sync)
	readForwarded(t, f, 5)
	// Past RequestTimeout the comet answers the reads (and alice's Ack)
	// itself: their slots free.
	for conn, reqs := range map[*client.Conn][]uint64{alice: {2, 3, 5}, bob: {1, 2}} {
		for range reqs {
			if fr := nextFrame(t, conn); !slices.Contains(reqs, fr.GetRequestId()) || fr.GetError().GetCode() != clientpb.Error_UNAVAILABLE {
				t.Fatalf("overdue request answered %v, want UNAVAILABLE for one of %v", fr, reqs)
			}
		}
	}
	reads(0)
	// A connection that ends gives its slots back.
	write(bob, 3, sync)
	readForwarded(t, f, 3)
	write(bob, 4, sync)
	readForwarded(t, f, 4)
	write(alice, 6, sync)
	readForwarded(t, f, 6)
	write(carol, 3, sync)
	readShed(t, carol, 3)
	bob.Close()
	deadline := time.Now().Add(5 * time.Second)
	for f.comet.Stats().Reads != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	reads(1)
	write(carol, 4, sync)
	readForwarded(t, f, 4)
}

// TestReadsReserveForOneAtATime: a connection catching up one read at a
// time gets a read in even while others keep every slot (outside abuse
// check: 49 members keeping 8 reads each shut out an honest member's
// reads), but only with nothing else waiting, and a catch-up starting
// does not.
func TestReadsReserveForOneAtATime(t *testing.T) {
	t.Parallel()
	f := newFixture(t, comet.Config{MaxReadsInFlight: 4, RequestTimeout: 5 * time.Second})
	ctx := ctxT(t)
	alice, _ := f.login("alice", client.Options{})
	bob, bobID := f.login("bob", client.Options{})
	carol, _ := f.login("carol", client.Options{})
	// bob reads a page, answered: its catch-up is under way.
	syncLobby(t, ctx, bob, 1)
	readForwarded(t, f, 1)
	f.deliver(&topicpb.Delivery{Conns: []string{bobID}, Frame: &clientpb.ServerFrame{RequestId: 1, Body: &clientpb.ServerFrame_SyncResult{SyncResult: &clientpb.SyncResult{Conversation: "room:lobby"}}}})
	if fr := nextFrame(t, bob); fr.GetRequestId() != 1 || fr.GetSyncResult() == nil {
		t.Fatalf("answer %v, want the SyncResult of 1", fr)
	}
	// alice takes every slot.
	for req := uint64(1); req <= 4; req++ {
		syncLobby(t, ctx, alice, req)
		readForwarded(t, f, req)
	}
	syncLobby(t, ctx, alice, 5)
	readShed(t, alice, 5)
	// bob, nothing waiting, takes the reserve; not a second one.
	syncLobby(t, ctx, bob, 2)
	readForwarded(t, f, 2)
	syncLobby(t, ctx, bob, 3)
	readShed(t, bob, 3)
	// carol starts a catch-up: no reserve.
	syncLobby(t, ctx, carol, 1)
	readShed(t, carol, 1)
	if st := f.comet.Stats(); st.Reads != 5 || st.ReadsShed != 3 {
		t.Fatalf("reads %d, shed %d; want 5 (4 and the reserve), 3", st.Reads, st.ReadsShed)
	}
}

// TestReadsBoundedByAnswerBytes: once reads are answered with large
// pages, fewer of them may wait (16 MiB of answers at the average seen):
// what the answers waiting hold in the broker and the comet stays
// bounded (outside abuse check: when they queued ahead of live messages
// on the comet's delivery topic, a catch-up flood delayed every live
// message by seconds).
func TestReadsBoundedByAnswerBytes(t *testing.T) {
	t.Parallel()
	f := newFixture(t, comet.Config{}) // MaxReadsInFlight: 256
	ctx := ctxT(t)
	alice, aliceID := f.login("alice", client.Options{})
	syncLobby(t, ctx, alice, 1)
	readForwarded(t, f, 1)
	// A page of 2 MiB: 16 MiB is 8 such answers.
	page := &clientpb.SyncResult{Conversation: "room:lobby", HasMore: true}
	for i := range 4 {
		page.Messages = append(page.Messages, &clientpb.Message{Conversation: "room:lobby", Seq: uint64(i + 1), Body: make([]byte, 512<<10)})
	}
	f.deliver(&topicpb.Delivery{Conns: []string{aliceID}, Frame: &clientpb.ServerFrame{RequestId: 1, Body: &clientpb.ServerFrame_SyncResult{SyncResult: page}}})
	if fr := nextFrame(t, alice); fr.GetRequestId() != 1 || len(fr.GetSyncResult().GetMessages()) != 4 {
		t.Fatalf("answer %v, want the page of 1", fr.GetRequestId())
	}
	for req := uint64(2); req < 10; req++ {
		syncLobby(t, ctx, alice, req)
		readForwarded(t, f, req)
	}
	syncLobby(t, ctx, alice, 10) // the ninth waiting
	readShed(t, alice, 10)
	if st := f.comet.Stats(); st.Reads != 8 || st.ReadsShed != 1 {
		t.Fatalf("reads %d, shed %d; want 8, 1", st.Reads, st.ReadsShed)
	}
}

// TestSyncFromRecentMessages: a Sync of a room by a connection joined to
// it there is answered by the comet itself, from the messages the room
// keeps, when the whole page is kept and more follow it: the same page
// the history worker would answer, and no HistoryRequest. The last page
// of a catch-up, a Sync with current_state, one by a connection not in
// the room, one reaching before the kept messages (a gap starts them
// again) are forwarded to the history worker.
func TestSyncFromRecentMessages(t *testing.T) {
	t.Parallel()
	f := newFixture(t, comet.Config{})
	ctx := ctxT(t)
	alice, aliceID := f.login("alice", client.Options{})
	bob, _ := f.login("bob", client.Options{}) // not in the room
	// The same pages in every encoding.
	var others []*client.Conn
	for _, o := range []struct {
		opts    client.Options
		compact bool
	}{{client.Options{}, true}, {client.Options{JSON: true}, false}, {client.Options{JSON: true}, true}} {
		conn, id := f.loginWith(fmt.Sprintf("member-%d", len(others)), o.opts, &clientpb.Login{CompactBatches: o.compact})
		f.join(id, "lobby")
		others = append(others, conn)
	}
	f.join(aliceID, "lobby")
	d := messagesDelivery(&topicpb.Delivery{Room: "lobby"}, "room:lobby", seqRange(1, 250)...)
	for _, m := range d.GetFrame().GetMessages().GetMessages() {
		m.Sender, m.ContentType, m.Mentions = "carol", "text/plain", []string{"alice"}
	}
	f.deliver(d)
	live, _ := readMessages(t, alice, 250)
	for _, conn := range others {
		readMessages(t, conn, 250)
	}

	ask := func(conn *client.Conn, req uint64, s *clientpb.Sync) {
		t.Helper()
		s.Conversation = "room:lobby"
		if err := conn.Write(ctx, &clientpb.ClientFrame{RequestId: req, Body: &clientpb.ClientFrame_Sync{Sync: s}}); err != nil {
			t.Fatal(err)
		}
	}
	fromMemory := func(conn *client.Conn, req uint64, s *clientpb.Sync, first, last uint64) {
		t.Helper()
		ask(conn, req, s)
		fr := nextFrame(t, conn)
		res := fr.GetSyncResult()
		if fr.GetRequestId() != req || res.GetConversation() != "room:lobby" || !res.GetHasMore() {
			t.Fatalf("sync %d answered %v, want a SyncResult with has_more", req, fr)
		}
		if got := res.GetMessages(); len(got) != int(last-first+1) {
			t.Fatalf("sync %d: %d messages, want %d..%d", req, len(got), first, last)
		}
		for i, m := range res.GetMessages() {
			if want := live[first-1+uint64(i)]; !proto.Equal(m, want) {
				t.Fatalf("sync %d: message %d is %v, want %v as delivered", req, i, m, want)
			}
		}
	}
	forwarded := func(conn *client.Conn, req uint64, s *clientpb.Sync) {
		t.Helper()
		ask(conn, req, s)
		if hr := next(f, topics.HistoryRequests); hr.GetRequestId() != req || hr.GetConversation() != "room:lobby" {
			t.Fatalf("forwarded %v, want request %d", hr, req)
		}
	}

	for _, conn := range others {
		fromMemory(conn, 1, &clientpb.Sync{}, 1, 100)
	}
	fromMemory(alice, 1, &clientpb.Sync{}, 1, 100)                 // the default limit
	forwarded(alice, 2, &clientpb.Sync{AfterSeq: 100, Limit: 500}) // the last page
	fromMemory(alice, 3, &clientpb.Sync{AfterSeq: 100, Limit: 149}, 101, 249)
	forwarded(alice, 4, &clientpb.Sync{AfterSeq: 100, Limit: 150}) // 250 is the last kept
	forwarded(alice, 5, &clientpb.Sync{CurrentState: true})
	forwarded(bob, 6, &clientpb.Sync{})

	// Pages one after another, their buffers reused once written: each
	// holds its own messages (a buffer given back too early would carry
	// another page's).
	var pagers sync.WaitGroup
	for i, conn := range append([]*client.Conn{alice}, others[0]) {
		pagers.Go(func() {
			for round := range 4 { // ten Syncs at once, then their answers
				afters := map[uint64]uint64{}
				for k := range 10 {
					req, after := uint64(100+i*100+round*10+k), uint64((i*7+round*13+k*11)%120)
					afters[req] = after
					ask(conn, req, &clientpb.Sync{AfterSeq: after, Limit: 100})
				}
				for range 10 {
					fr := nextFrame(t, conn)
					after, ok := afters[fr.GetRequestId()]
					msgs := fr.GetSyncResult().GetMessages()
					if !ok || len(msgs) != 100 || msgs[0].GetSeq() != after+1 || msgs[99].GetSeq() != after+100 {
						t.Errorf("page of request %d (after %d, asked: %v): %d messages", fr.GetRequestId(), after, ok, len(msgs))
						return
					}
					delete(afters, fr.GetRequestId())
				}
			}
		})
	}
	pagers.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// 251 never comes: the room keeps 252 and after.
	f.deliver(messagesDelivery(&topicpb.Delivery{Room: "lobby"}, "room:lobby", seqRange(252, 260)...))
	live = append(append(live, nil), func() []*clientpb.Message { m, _ := readMessages(t, alice, 9); return m }()...)
	forwarded(alice, 7, &clientpb.Sync{AfterSeq: 240, Limit: 5})
	fromMemory(alice, 8, &clientpb.Sync{AfterSeq: 251, Limit: 5}, 252, 256)

	if st := f.comet.Stats(); st.RecentSyncs != 86 || st.RecentBytes <= 0 {
		t.Fatalf("stats: %d syncs from memory, %d bytes kept; want 86 and some", st.RecentSyncs, st.RecentBytes)
	}
	// When its last member leaves, the room forgets them.
	for _, conn := range others {
		conn.Close()
	}
	f.deliver(&topicpb.Delivery{Conns: []string{aliceID}, Control: &topicpb.Control{Leave: "lobby"}})
	testinfra.Eventually(t, wait, func() bool { return f.comet.Stats().RecentBytes == 0 }, "bytes still kept after the room emptied")
}

func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}
