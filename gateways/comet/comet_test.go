package comet_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/laneim/laneim/gateways/comet"
	"github.com/laneim/laneim/internal/client"
	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fixture struct {
	t     *testing.T
	comet *comet.Comet
	rec   *testinfra.Recorder
	url   string
	srv   *httptest.Server
}

func newFixture(t *testing.T, cfg comet.Config) *fixture {
	t.Helper()
	cfg.ID = "c1"
	rec := &testinfra.Recorder{}
	c, err := comet.New(cfg, rec, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c)
	f := &fixture{t: t, comet: c, rec: rec, srv: srv, url: "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"}
	t.Cleanup(func() {
		c.Close()
		srv.Close()
	})
	return f
}

func (f *fixture) dial(opts client.Options) *client.Conn {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := client.Dial(ctx, f.url, opts)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { conn.Close() })
	return conn
}

// published waits for a message on topic and returns it decoded.
func published[T any](f *fixture, topic string, decode func(*testinfra.Published) (T, error)) T {
	f.t.Helper()
	var out T
	var found bool
	testinfra.Eventually(f.t, 5*time.Second, func() bool {
		for _, p := range f.rec.Take() {
			if p.Topic == topic && !found {
				v, err := decode(&p)
				if err != nil {
					f.t.Fatal(err)
				}
				out, found = v, true
			}
		}
		return found
	}, "nothing published to %s", topic)
	return out
}

func loginRequest(p *testinfra.Published) (*topicpb.LoginRequest, error) {
	return topics.LoginRequests.Decode(p.Msg)
}

func sessionEvent(p *testinfra.Published) (*topicpb.SessionEvent, error) {
	return topics.SessionEvents.Decode(p.Msg)
}

// login logs a connection in as user, playing the pipeline's part, and
// returns the connection and its id.
func (f *fixture) login(user string, opts client.Options) (*client.Conn, string) {
	f.t.Helper()
	conn := f.dial(opts)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := conn.Login(ctx, "token-of-"+user, "test")
		done <- err
	}()
	req := published(f, topics.LoginRequests.Name, loginRequest)
	if req.GetToken() != "token-of-"+user || req.GetSession().GetComet() != "c1" {
		f.t.Fatalf("login request %v", req)
	}
	id := req.GetSession().GetConn()
	f.comet.Deliver(&topicpb.Delivery{
		Conns:   []string{id},
		Control: &topicpb.Control{Authenticate: user},
		Frame:   &clientpb.ServerFrame{RequestId: req.GetRequestId(), Body: &clientpb.ServerFrame_LoginResult{LoginResult: &clientpb.LoginResult{Ok: true, User: user}}},
	})
	if err := <-done; err != nil {
		f.t.Fatalf("login: %v", err)
	}
	return conn, id
}

func (f *fixture) join(id, room string) {
	f.comet.Deliver(&topicpb.Delivery{Conns: []string{id}, Control: &topicpb.Control{Join: room}})
}

func roomMessage(room string, seq uint64) *topicpb.Delivery {
	return &topicpb.Delivery{Room: room, Frame: &clientpb.ServerFrame{Body: &clientpb.ServerFrame_Messages{Messages: &clientpb.MessageBatch{
		Messages: []*clientpb.Message{{Conversation: topics.RoomConversation(room), Seq: seq, Body: []byte("x")}},
	}}}}
}

// read collects n messages and the number of frames they came in.
func read(t *testing.T, conn *client.Conn, n int) (msgs []*clientpb.Message, frames int) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for len(msgs) < n {
		select {
		case fr, ok := <-conn.Frames():
			if !ok {
				t.Fatalf("closed after %d of %d messages: %v", len(msgs), n, conn.Err())
			}
			if b := fr.GetMessages(); b != nil {
				frames++
				msgs = append(msgs, b.GetMessages()...)
			}
		case <-timeout:
			t.Fatalf("got %d of %d messages", len(msgs), n)
		}
	}
	return msgs, frames
}

func code(err error) clientpb.Error_Code {
	var e *client.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return -1
}

func TestUnauthenticatedFramesRefused(t *testing.T) {
	f := newFixture(t, comet.Config{})
	conn := f.dial(client.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := conn.Join(ctx, "lobby"); code(err) != clientpb.Error_UNAUTHENTICATED {
		t.Errorf("join = %v", err)
	}
	if _, err := conn.SendRoom(ctx, "lobby", []byte("x")); code(err) != clientpb.Error_UNAUTHENTICATED {
		t.Errorf("send = %v", err)
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
		f := newFixture(t, comet.Config{})
		conn := f.dial(client.Options{JSON: useJSON})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		typ := websocket.MessageBinary
		if useJSON {
			typ = websocket.MessageText
		}
		for _, bad := range [][]byte{{0xff, 0xff, 0xff}, []byte(`{"nope":`)} {
			if err := conn.WriteRaw(ctx, typ, bad); err != nil {
				t.Fatal(err)
			}
			select {
			case fr := <-conn.Frames():
				if fr.GetError().GetCode() != clientpb.Error_BAD_FRAME {
					t.Fatalf("json=%v: got %v, want BAD_FRAME", useJSON, fr)
				}
			case <-ctx.Done():
				t.Fatal("no answer to a bad frame")
			}
		}
		// An empty frame has no body.
		if _, err := conn.Do(ctx, &clientpb.ClientFrame{}); code(err) != clientpb.Error_BAD_FRAME {
			t.Errorf("empty frame = %v", err)
		}
		if _, err := conn.Ping(ctx); err != nil {
			t.Fatalf("json=%v: connection unusable after bad frames: %v", useJSON, err)
		}
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
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, resp, err := websocket.Dial(ctx, f.url, &websocket.DialOptions{Subprotocols: []string{"mqtt"}}); err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("unknown subprotocol: %v", err)
	}
	// No subprotocol: JSON.
	ws, _, err := websocket.Dial(ctx, f.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	if err := ws.Write(ctx, websocket.MessageText, []byte(`{"requestId":"5","ping":{"clientTimeUnixMs":"1"}}`)); err != nil {
		t.Fatal(err)
	}
	typ, b, err := ws.Read(ctx)
	if err != nil || typ != websocket.MessageText || !strings.Contains(string(b), `"pong"`) || !strings.Contains(string(b), `"requestId":"5"`) {
		t.Fatalf("pong = %v %s %v", typ, b, err)
	}
}

func TestOversizedFrameCloses1009(t *testing.T) {
	f := newFixture(t, comet.Config{MaxFrameBytes: 1024})
	conn := f.dial(client.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = conn.WriteRaw(ctx, websocket.MessageBinary, make([]byte, 4096))
	<-conn.Done()
	if got := websocket.CloseStatus(conn.Err()); got != websocket.StatusMessageTooBig {
		t.Fatalf("close status %v (%v), want 1009", got, conn.Err())
	}
}

func TestLoginTimeout(t *testing.T) {
	f := newFixture(t, comet.Config{LoginTimeout: 100 * time.Millisecond})
	conn := f.dial(client.Options{})
	select {
	case <-conn.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("not closed")
	}
	if got := websocket.CloseStatus(conn.Err()); got != websocket.StatusPolicyViolation {
		t.Fatalf("close status %v, want 1008", got)
	}
}

func TestLoginJoinSendAndClose(t *testing.T) {
	f := newFixture(t, comet.Config{})
	conn, id := f.login("alice", client.Options{JSON: true})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := conn.Login(ctx, "again", ""); code(err) != clientpb.Error_ALREADY_LOGGED_IN {
		t.Errorf("second login = %v", err)
	}

	go conn.Join(ctx, "lobby") //nolint:errcheck // answered below by hand
	ev := published(f, topics.SessionEvents.Name, sessionEvent)
	if ev.GetKind() != topicpb.SessionEvent_JOINED || ev.GetRoom() != "lobby" || ev.GetUser() != "alice" || ev.GetSession().GetConn() != id {
		t.Fatalf("join event %v", ev)
	}

	if _, err := conn.Send(ctx, &clientpb.Send{To: &clientpb.Send_Room{Room: "lobby"}}); code(err) != clientpb.Error_INVALID {
		t.Errorf("send without client_msg_id = %v", err)
	}
	go conn.SendUser(ctx, "bob", []byte("hi")) //nolint:errcheck // no pipeline answers here
	sub := published(f, topics.Submitted.Name, func(p *testinfra.Published) (*topicpb.Submitted, error) { return topics.Submitted.Decode(p.Msg) })
	if sub.GetSender() != "alice" || sub.GetUser() != "bob" || string(sub.GetBody()) != "hi" || sub.GetOrigin().GetConn() != id || sub.GetClientMsgId() == "" {
		t.Fatalf("submitted %v", sub)
	}

	f.comet.Heartbeat()
	hb := published(f, topics.SessionEvents.Name, sessionEvent)
	if hb.GetKind() != topicpb.SessionEvent_HEARTBEAT || len(hb.GetLive()) != 1 || hb.GetLive()[0].GetUser() != "alice" {
		t.Fatalf("heartbeat %v", hb)
	}

	conn.Close()
	closed := published(f, topics.SessionEvents.Name, sessionEvent)
	if closed.GetKind() != topicpb.SessionEvent_CLOSED || closed.GetUser() != "alice" || closed.GetSession().GetConn() != id {
		t.Fatalf("close event %v", closed)
	}
}

func TestRoomFanOutMergesBatchesInOrder(t *testing.T) {
	f := newFixture(t, comet.Config{BatchWindow: 200 * time.Millisecond})
	var conns []*client.Conn
	for i, u := range []string{"alice", "bob", "carol"} {
		conn, id := f.login(u, client.Options{JSON: i == 2})
		f.join(id, "lobby")
		f.join(id, "other")
		conns = append(conns, conn)
	}
	const n = 6
	for seq := uint64(1); seq <= n; seq++ {
		f.comet.Deliver(roomMessage("lobby", seq))
	}
	f.comet.Deliver(roomMessage("nobody-here", 1))
	for _, conn := range conns {
		msgs, frames := read(t, conn, n)
		for i, m := range msgs {
			if m.GetSeq() != uint64(i+1) {
				t.Fatalf("message %d has seq %d", i, m.GetSeq())
			}
		}
		// The first message goes at once, the other five in one batch.
		if frames != 2 {
			t.Errorf("%d messages came in %d frames, want 2", n, frames)
		}
	}
	st := f.comet.Stats()
	if st.Connections != 3 || st.Rooms != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestDirectMessageReachesEveryDevice(t *testing.T) {
	f := newFixture(t, comet.Config{})
	phone, _ := f.login("bob", client.Options{})
	laptop, _ := f.login("bob", client.Options{JSON: true})
	other, _ := f.login("carol", client.Options{})
	f.comet.Deliver(&topicpb.Delivery{Users: []string{"alice", "bob"}, Frame: &clientpb.ServerFrame{Body: &clientpb.ServerFrame_Messages{Messages: &clientpb.MessageBatch{
		Messages: []*clientpb.Message{{Conversation: "dm:alice:bob", Seq: 1, Body: []byte("hi")}},
	}}}})
	for _, conn := range []*client.Conn{phone, laptop} {
		if msgs, _ := read(t, conn, 1); msgs[0].GetConversation() != "dm:alice:bob" {
			t.Fatalf("got %v", msgs[0])
		}
	}
	select {
	case fr := <-other.Frames():
		t.Fatalf("carol got %v", fr)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestCloseControlKicks(t *testing.T) {
	f := newFixture(t, comet.Config{})
	conn, _ := f.login("mallory", client.Options{})
	f.comet.Deliver(&topicpb.Delivery{Users: []string{"mallory"}, Control: &topicpb.Control{Close: "account disabled"}})
	select {
	case <-conn.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("not closed")
	}
	if got := websocket.CloseStatus(conn.Err()); got != websocket.StatusPolicyViolation {
		t.Fatalf("close status %v", got)
	}
}

func TestSlowConsumerDroppedRoomGoesOn(t *testing.T) {
	f := newFixture(t, comet.Config{SendQueue: 2, BatchWindow: -1, WriteTimeout: 500 * time.Millisecond})
	fast, fastID := f.login("alice", client.Options{})
	slow, slowID := f.login("bob", client.Options{FrameBuffer: 1})
	f.join(fastID, "lobby")
	f.join(slowID, "lobby")
	big := make([]byte, 60<<10)
	const n = 200
	for seq := uint64(1); seq <= n; seq++ {
		d := roomMessage("lobby", seq)
		d.GetFrame().GetMessages().GetMessages()[0].Body = big
		f.comet.Deliver(d)
		// alice keeps up; bob stopped reading after one frame.
		if msgs, _ := read(t, fast, 1); msgs[0].GetSeq() != seq {
			t.Fatalf("alice got seq %d, want %d", msgs[0].GetSeq(), seq)
		}
	}
	testinfra.Eventually(t, 15*time.Second, func() bool {
		st := f.comet.Stats()
		return st.SlowConsumers == 1 && st.Connections == 1
	}, "bob not dropped: %+v", f.comet.Stats())
	for range slow.Frames() {
	}
}

func BenchmarkRoomBroadcast(b *testing.B) {
	for _, members := range []int{1, 100, 1000} {
		b.Run(strconv.Itoa(members)+"Members", func(b *testing.B) {
			c, err := comet.New(comet.Config{ID: "bench", BatchWindow: -1}, &testinfra.Recorder{}, slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			for i := range members {
				c.AddTestMember("lobby", "u"+strconv.Itoa(i))
			}
			d := roomMessage("lobby", 1)
			b.ReportAllocs()
			for b.Loop() {
				c.Deliver(d)
			}
		})
	}
}

