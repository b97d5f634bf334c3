package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/gateways/comet/client"
	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/internal/wsframe"
	"github.com/laneim/laneim/proto/clientpb"
)

// serverFrame returns p as one unmasked server frame of opcode op.
func serverFrame(fin bool, op byte, p []byte) []byte {
	b := wsframe.AppendHeader(nil, op, len(p), false)
	if !fin {
		b[0] &^= 0x80
	}
	return append(b, p...)
}

// feedLog is what a wsConn's feed handed on.
type feedLog struct {
	mu      sync.Mutex
	peeked  []int // sizes of binary messages peek took
	records int
}

func testConn(l *feedLog) *wsConn {
	return &wsConn{
		peek: func(p []byte) (*clientpb.ServerFrame, bool) {
			if len(p) == 0 || p[0] != 0x62 { // ServerFrame.messages, field 12, bytes
				return nil, false
			}
			l.mu.Lock()
			l.peeked = append(l.peeked, len(p))
			l.mu.Unlock()
			return nil, true
		},
		record:  func(*clientpb.MessageBatch) { l.mu.Lock(); l.records++; l.mu.Unlock() },
		replies: make(chan *clientpb.ServerFrame, 64),
		done:    make(chan struct{}),
	}
}

func batchBytes(t *testing.T, bodySize int) []byte {
	t.Helper()
	b, err := proto.Marshal(&clientpb.ServerFrame{Body: &clientpb.ServerFrame_Messages{Messages: &clientpb.MessageBatch{Messages: []*clientpb.Message{
		{Conversation: "room:r", Seq: 1, Body: bytes.Repeat([]byte("b"), bodySize)},
	}}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFeedReadsWholeFramesHoweverTheyArrive feeds one stream of server
// frames cut into pieces of every size from 1 byte to all of it.
func TestFeedReadsWholeFramesHoweverTheyArrive(t *testing.T) {
	small, mid, big := batchBytes(t, 10), batchBytes(t, 300), batchBytes(t, 70000)
	pong, _ := proto.Marshal(&clientpb.ServerFrame{RequestId: 9, Body: &clientpb.ServerFrame_Pong{Pong: &clientpb.Pong{}}})
	jsonBatch, _ := protojson.Marshal(&clientpb.ServerFrame{Body: &clientpb.ServerFrame_Messages{Messages: &clientpb.MessageBatch{Messages: []*clientpb.Message{{Conversation: "room:r", Seq: 2}}}}})
	var stream []byte
	stream = append(stream, serverFrame(true, wsframe.Binary, small)...)
	stream = append(stream, serverFrame(true, wsframe.Binary, pong)...)
	stream = append(stream, serverFrame(true, wsframe.Binary, mid)...) // 16-bit length
	stream = append(stream, serverFrame(true, wsframe.Pong, nil)...)   // ignored
	stream = append(stream, serverFrame(true, wsframe.Text, jsonBatch)...)
	stream = append(stream, serverFrame(false, wsframe.Binary, big[:40000])...) // fragmented, 64-bit length
	stream = append(stream, serverFrame(true, wsframe.Cont, big[40000:])...)

	for _, piece := range []int{1, 2, 3, 7, 125, 1000, 65536, len(stream)} {
		t.Run(fmt.Sprint(piece), func(t *testing.T) {
			var l feedLog
			c := testConn(&l)
			for rest := stream; len(rest) > 0; {
				n := min(piece, len(rest))
				if err := c.feed(rest[:n]); err != nil {
					t.Fatal(err)
				}
				rest = rest[n:]
			}
			if want := []int{len(small), len(mid), len(big)}; !slices.Equal(l.peeked, want) {
				t.Fatalf("peeked messages of %v bytes, want %v", l.peeked, want)
			}
			if l.records != 1 {
				t.Fatalf("%d JSON batches recorded, want 1", l.records)
			}
			if len(c.replies) != 1 || (<-c.replies).GetRequestId() != 9 {
				t.Fatal("the pong is not among the replies, alone")
			}
			if len(c.in) != 0 {
				t.Fatalf("%d bytes left over", len(c.in))
			}
		})
	}
}

// TestFeedNeverWaitsForReplies: events that answer no request (a
// presence change, say) are dropped, and answers nobody takes keep only
// the newest; feed returns either way. A member once got more than 64
// presence frames during a login storm, which filled replies and
// stalled its poller, and every member it served, for good.
func TestFeedNeverWaitsForReplies(t *testing.T) {
	c := testConn(&feedLog{})
	presence, _ := proto.Marshal(&clientpb.ServerFrame{Body: &clientpb.ServerFrame_Presence{Presence: &clientpb.PresenceChange{Room: "r", User: "u1", Online: true, OnlineCount: 7}}})
	var stream []byte
	for range 200 {
		stream = append(stream, serverFrame(true, wsframe.Binary, presence)...)
	}
	for id := range uint64(100) {
		answer, _ := proto.Marshal(&clientpb.ServerFrame{RequestId: id + 1, Body: &clientpb.ServerFrame_Pong{Pong: &clientpb.Pong{}}})
		stream = append(stream, serverFrame(true, wsframe.Binary, answer)...)
	}
	done := make(chan error, 1)
	go func() { done <- c.feed(stream) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("feed waits for its replies to be taken")
	}
	if n := len(c.replies); n != cap(c.replies) {
		t.Fatalf("%d replies kept, want %d", n, cap(c.replies))
	}
	if first := (<-c.replies).GetRequestId(); first != uint64(100-cap(c.replies)+1) {
		t.Fatalf("oldest reply kept is #%d, want #%d (the newest %d)", first, 100-cap(c.replies)+1, cap(c.replies))
	}
}

func TestFeedEnds(t *testing.T) {
	for _, tc := range []struct {
		name  string
		bytes []byte
		want  error
	}{
		{"close", serverFrame(true, wsframe.Close, []byte{0x03, 0xe8}), errClosedByServer},
		{"masked", []byte{0x82, 0x81, 1, 2, 3, 4, 5}, nil},
		{"too big", binary.BigEndian.AppendUint64([]byte{0x82, 127}, maxFrame+1), nil},
		{"unknown opcode", serverFrame(true, 0x3, nil), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := testConn(&feedLog{}).feed(tc.bytes)
			if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("feed = %v, want %v or another error", err, tc.want)
			}
		})
	}
}

// TestDoTakesTheAnswerThatCameWithTheClose: a server that answers and
// closes at once may have both read in one go, the answer queued and the
// connection ended before do looks; do must return the answer, whichever
// of the two it sees first. Without the check, select's random choice
// fails about half the rounds.
func TestDoTakesTheAnswerThatCameWithTheClose(t *testing.T) {
	nc, _ := testinfra.TCPPair(t)
	c := testConn(&feedLog{})
	c.nc = nc
	for round := range 64 {
		c.done = make(chan struct{})
		c.replies <- &clientpb.ServerFrame{RequestId: 99} // an answer given up on
		c.replies <- &clientpb.ServerFrame{RequestId: c.nextID.Load() + 1, Body: &clientpb.ServerFrame_SyncResult{SyncResult: &clientpb.SyncResult{}}}
		c.err = errClosedByServer
		close(c.done)
		r, err := c.do(context.Background(), &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Ping{Ping: &clientpb.Ping{}}})
		if err != nil || r.GetSyncResult() == nil {
			t.Fatalf("round %d: %v, %v; want the answer", round, r, err)
		}
		if len(c.replies) != 0 {
			t.Fatalf("round %d: %d replies left", round, len(c.replies))
		}
	}
	c.done = make(chan struct{})
	close(c.done)
	if _, err := c.do(context.Background(), &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Ping{Ping: &clientpb.Ping{}}}); !errors.Is(err, errClosedByServer) {
		t.Fatalf("no answer: %v, want the close", err)
	}
}

// TestWSConnTalksToAWebSocketServer runs a member's connection against a
// server built on the WebSocket library the comet uses: the upgrade, a
// login answered with an error and one answered, the room's frames read
// by a reader, a Sync, and the server's close. Read by a poller (a TCP
// socket, on Linux) and by a goroutine (any other connection: TLS, say).
func TestWSConnTalksToAWebSocketServer(t *testing.T) {
	for _, wrapped := range []bool{false, true} {
		t.Run(map[bool]string{false: "socket", true: "other connection"}[wrapped], func(t *testing.T) {
			testWSConn(t, wrapped)
		})
	}
}

func testWSConn(t *testing.T, wrapped bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var logins sync.Mutex
	loginCount := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{client.SubprotocolProto}})
		if err != nil {
			return
		}
		defer ws.CloseNow()
		read := func() *clientpb.ClientFrame {
			_, b, err := ws.Read(ctx)
			if err != nil {
				return nil
			}
			f := new(clientpb.ClientFrame)
			if proto.Unmarshal(b, f) != nil {
				return nil
			}
			return f
		}
		write := func(f *clientpb.ServerFrame) {
			b, _ := proto.Marshal(f)
			_ = ws.Write(ctx, websocket.MessageBinary, b)
		}
		f := read()
		if f.GetLogin() == nil {
			return
		}
		logins.Lock()
		loginCount++
		first := loginCount == 1
		logins.Unlock()
		if first {
			write(&clientpb.ServerFrame{RequestId: f.GetRequestId(), Body: &clientpb.ServerFrame_Error{Error: &clientpb.Error{Code: clientpb.Error_BAD_TOKEN, Text: "no"}}})
			return
		}
		write(&clientpb.ServerFrame{RequestId: f.GetRequestId(), Body: &clientpb.ServerFrame_LoginResult{LoginResult: &clientpb.LoginResult{
			Joined: []*clientpb.Joined{{Room: f.GetLogin().GetJoin()[0]}}}}})
		for seq := range uint64(100) {
			write(&clientpb.ServerFrame{Body: &clientpb.ServerFrame_Messages{Messages: &clientpb.MessageBatch{Messages: []*clientpb.Message{
				{Conversation: "room:r", Seq: seq + 1, Body: binary.BigEndian.AppendUint64(nil, uint64(time.Now().UnixNano()))}}}}})
		}
		if f = read(); f.GetSync() == nil {
			return
		}
		write(&clientpb.ServerFrame{RequestId: f.GetRequestId(), Body: &clientpb.ServerFrame_SyncResult{SyncResult: &clientpb.SyncResult{Conversation: f.GetSync().GetConversation()}}})
		ws.Close(websocket.StatusGoingAway, "bye")
	}))
	defer srv.Close()
	target := "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"

	rd, err := newReaders()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { rd.close(); rd.wait() }()
	m := &member{conversation: "room:r", lat: &latencies{}}
	m.lat.cur.Store(new(histogram))

	c, err := dialWS(ctx, target, false, m.peek, m.record)
	if err != nil {
		t.Fatal(err)
	}
	var ce *client.Error
	if err := c.login(ctx, "token", "r", false); !errors.As(err, &ce) || ce.Code != clientpb.Error_BAD_TOKEN {
		t.Fatalf("first login: %v, want BAD_TOKEN", err)
	}
	c.Close()

	if c, err = dialWS(ctx, target, false, m.peek, m.record); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.login(ctx, "token", "r", false); err != nil {
		t.Fatal(err)
	}
	if wrapped {
		c.nc = struct{ net.Conn }{c.nc} // not a *net.TCPConn
	}
	rd.add(c)
	for i := 0; m.delivered.Load() < 100 && i < 1000; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if got := m.delivered.Load(); got != 100 || m.seqs.contiguous() != 100 {
		t.Fatalf("member got %d messages, %d in a row; want 100", got, m.seqs.contiguous())
	}
	r, err := c.do(ctx, &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Sync{Sync: &clientpb.Sync{Conversation: "room:r", AfterSeq: 100}}})
	if err != nil || r.GetSyncResult().GetConversation() != "room:r" {
		t.Fatalf("sync: %v, %v", r, err)
	}
	select {
	case <-c.done:
		if !errors.Is(c.err, errClosedByServer) {
			t.Fatalf("ended with %v, want the server's close", c.err)
		}
	case <-ctx.Done():
		t.Fatal("the server's close did not end the connection")
	}
}

// TestFailedWriteEndsTheConnection: a write that fails (the server closed
// the connection, as it closes a slow consumer) ends it, so that a member
// waiting on it reconnects instead of giving up with the write's error.
func TestFailedWriteEndsTheConnection(t *testing.T) {
	c := testConn(&feedLog{})
	client, server := net.Pipe()
	c.nc = client
	server.Close()
	err := c.write(context.Background(), wsframe.Binary, []byte("sync"))
	if err == nil {
		t.Fatal("write to a closed peer succeeded")
	}
	select {
	case <-c.done:
		if c.err != err {
			t.Fatalf("ended for %v, want the write's error %v", c.err, err)
		}
	case <-time.After(time.Second):
		t.Fatal("the connection did not end after a failed write")
	}
}
