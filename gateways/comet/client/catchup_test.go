package client_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/gateways/comet/client"
	"github.com/laneim/laneim/proto/clientpb"
)

// scripted serves a comet that answers as serve says: serve is called
// with each client frame of the n-th connection (from 1) but Pings, which
// are answered, and a function writing a frame to that connection; it
// returns false to end the connection (going away, as a comet restarting).
func scripted(t *testing.T, serve func(n int32, f *clientpb.ClientFrame, write func(*clientpb.ServerFrame)) bool) string {
	var conns atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{client.SubprotocolProto}})
		if err != nil {
			return
		}
		defer ws.CloseNow()
		n := conns.Add(1)
		write := func(f *clientpb.ServerFrame) {
			b, _ := proto.Marshal(f)
			_ = ws.Write(r.Context(), websocket.MessageBinary, b)
		}
		for {
			_, data, err := ws.Read(r.Context())
			if err != nil {
				return
			}
			var f clientpb.ClientFrame
			if proto.Unmarshal(data, &f) != nil {
				return
			}
			if f.GetPing() != nil {
				write(&clientpb.ServerFrame{RequestId: f.GetRequestId(), Body: &clientpb.ServerFrame_Pong{Pong: &clientpb.Pong{}}})
				continue
			}
			if !serve(n, &f, write) {
				ws.Close(websocket.StatusGoingAway, "restart")
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

// loggedIn is the LoginResult of user u answering request id, with conv
// at seq latest.
func loggedIn(id uint64, conv string, latest uint64) *clientpb.ServerFrame {
	return &clientpb.ServerFrame{RequestId: id, Body: &clientpb.ServerFrame_LoginResult{LoginResult: &clientpb.LoginResult{
		Ok: true, User: "u", Conversations: []*clientpb.ConversationState{{Conversation: conv, LatestSeq: latest}},
	}}}
}

// gapServer is a comet that stores seqs 1 to 7 of one conversation and
// serves Sync one message a page. Its first connection logs in at seq 1,
// pushes 2, then 4 and 5 (3 is missing), and goes away after the Sync
// that fills the gap; its second logs in at seq 6 and pushes 6 before
// answering each catch-up Sync and 7 after it: the catch-up pages through
// 6 and 7, and every live copy is a repeat.
func gapServer(t *testing.T) string {
	const conv = "dm:a:u"
	msg := func(seq uint64) *clientpb.Message {
		return &clientpb.Message{Conversation: conv, Seq: seq, Sender: "a"}
	}
	batch := func(seqs ...uint64) *clientpb.ServerFrame {
		b := &clientpb.MessageBatch{}
		for _, s := range seqs {
			b.Messages = append(b.Messages, msg(s))
		}
		return &clientpb.ServerFrame{Body: &clientpb.ServerFrame_Messages{Messages: b}}
	}
	return scripted(t, func(n int32, f *clientpb.ClientFrame, write func(*clientpb.ServerFrame)) bool {
		id := f.GetRequestId()
		switch b := f.GetBody().(type) {
		case *clientpb.ClientFrame_Login:
			latest := uint64(1)
			if n > 1 {
				latest = 6
			}
			write(loggedIn(id, conv, latest))
			if n == 1 {
				write(batch(2))
				write(batch(4, 5))
			}
		case *clientpb.ClientFrame_Sync:
			if n > 1 {
				write(batch(6))
			}
			after := b.Sync.GetAfterSeq()
			res := &clientpb.SyncResult{Conversation: conv}
			if after < 7 {
				res.Messages = []*clientpb.Message{msg(after + 1)}
				res.HasMore = after+1 < 7
			}
			write(&clientpb.ServerFrame{RequestId: id, Body: &clientpb.ServerFrame_SyncResult{SyncResult: res}})
			if n == 1 {
				return false
			}
			write(batch(7))
		}
		return true
	})
}

func TestClientFillsGapsAndDropsRepeats(t *testing.T) {
	c, err := client.New(client.Config{
		URL:        gapServer(t),
		Token:      func(context.Context) (string, error) { return "t", nil },
		MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var got, caughtUp []uint64
	connected := 0
	timeout := time.After(20 * time.Second)
	for len(got) < 6 {
		select {
		case ev := <-c.Events():
			if ev.Kind == client.Connected {
				connected++
			}
			for _, m := range ev.Messages {
				got = append(got, m.GetSeq())
				if ev.CatchUp {
					caughtUp = append(caughtUp, m.GetSeq())
				}
			}
		case <-timeout:
			t.Fatalf("got %v", got)
		}
	}
	// A little longer: nothing more may come.
	select {
	case ev := <-c.Events():
		if len(ev.Messages) > 0 {
			t.Fatalf("more messages %v after %v", ev.Messages, got)
		}
	case <-time.After(100 * time.Millisecond):
	}
	if !slices.Equal(got, []uint64{2, 3, 4, 5, 6, 7}) || !slices.Equal(caughtUp, []uint64{3, 6, 7}) || connected != 2 {
		t.Fatalf("got %v (caught up %v) over %d connections, want 2..7 once, 3, 6 and 7 caught up, 2 connections", got, caughtUp, connected)
	}
	if p := c.Positions(); p["dm:a:u"] != 7 {
		t.Fatalf("positions %v", p)
	}
}

// TestClientWaitsWhenCatchUpIsShed: a catch-up page refused UNAVAILABLE
// with a retry_after_ms (a comet with too many catch-up reads waiting)
// is asked again after that wait, on the same connection, instead of
// failing the catch-up and reconnecting. This server's first connection
// logs in at seq 0 and goes away; its second logs in at seq 3, and it
// refuses every page's first ask.
func TestClientWaitsWhenCatchUpIsShed(t *testing.T) {
	const conv = "dm:a:u"
	var conns, shed atomic.Int32
	asked := map[uint64]bool{}
	url := scripted(t, func(n int32, f *clientpb.ClientFrame, write func(*clientpb.ServerFrame)) bool {
		conns.Store(n)
		id := f.GetRequestId()
		switch b := f.GetBody().(type) {
		case *clientpb.ClientFrame_Login:
			latest := uint64(0)
			if n > 1 {
				latest = 3
			}
			write(loggedIn(id, conv, latest))
			return n > 1
		case *clientpb.ClientFrame_Sync:
			after := b.Sync.GetAfterSeq()
			if !asked[after] {
				asked[after] = true
				shed.Add(1)
				write(&clientpb.ServerFrame{RequestId: id, Body: &clientpb.ServerFrame_Error{Error: &clientpb.Error{
					Code: clientpb.Error_UNAVAILABLE, Text: "too many catch-up reads", RetryAfterMs: 20,
				}}})
				return true
			}
			res := &clientpb.SyncResult{Conversation: conv}
			if after < 3 {
				res.Messages = []*clientpb.Message{{Conversation: conv, Seq: after + 1, Sender: "a"}}
				res.HasMore = after+1 < 3
			}
			write(&clientpb.ServerFrame{RequestId: id, Body: &clientpb.ServerFrame_SyncResult{SyncResult: res}})
		}
		return true
	})
	c, err := client.New(client.Config{
		URL:        url,
		Token:      func(context.Context) (string, error) { return "t", nil },
		MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var got []uint64
	timeout := time.After(20 * time.Second)
	for len(got) < 3 {
		select {
		case ev := <-c.Events():
			for _, m := range ev.Messages {
				got = append(got, m.GetSeq())
			}
		case <-timeout:
			t.Fatalf("got %v over %d connections", got, conns.Load())
		}
	}
	if !slices.Equal(got, []uint64{1, 2, 3}) || conns.Load() != 2 || shed.Load() != 3 {
		t.Fatalf("got %v over %d connections, %d pages refused; want 1..3 over two connections, 3 refused", got, conns.Load(), shed.Load())
	}
}
