package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/gateways/comet/client"
	"github.com/laneim/laneim/proto/clientpb"
)

// fakeServer answers Ping with Pong, Join with an Error, and after each
// answer pushes one unsolicited message; in either encoding.
func fakeServer(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{client.SubprotocolProto, client.SubprotocolJSON}})
		if err != nil {
			return
		}
		defer ws.CloseNow()
		useJSON := ws.Subprotocol() == client.SubprotocolJSON
		write := func(f *clientpb.ServerFrame) error {
			if useJSON {
				b, _ := protojson.Marshal(f)
				return ws.Write(r.Context(), websocket.MessageText, b)
			}
			b, _ := proto.Marshal(f)
			return ws.Write(r.Context(), websocket.MessageBinary, b)
		}
		for {
			typ, data, err := ws.Read(r.Context())
			if err != nil {
				return
			}
			var f clientpb.ClientFrame
			if typ == websocket.MessageText {
				err = protojson.Unmarshal(data, &f)
			} else {
				err = proto.Unmarshal(data, &f)
			}
			if err != nil {
				ws.Close(websocket.StatusUnsupportedData, "bad frame")
				return
			}
			var answer *clientpb.ServerFrame
			switch b := f.GetBody().(type) {
			case *clientpb.ClientFrame_Ping:
				answer = &clientpb.ServerFrame{RequestId: f.GetRequestId(), Body: &clientpb.ServerFrame_Pong{Pong: &clientpb.Pong{ClientTimeUnixMs: b.Ping.GetClientTimeUnixMs()}}}
			case *clientpb.ClientFrame_Join:
				answer = &clientpb.ServerFrame{RequestId: f.GetRequestId(), Body: &clientpb.ServerFrame_Error{Error: &clientpb.Error{Code: clientpb.Error_NOT_MEMBER, Text: "no"}}}
			case *clientpb.ClientFrame_Leave:
				ws.Close(websocket.StatusPolicyViolation, "kicked")
				return
			}
			if write(answer) != nil {
				return
			}
			push := &clientpb.ServerFrame{Body: &clientpb.ServerFrame_Messages{Messages: &clientpb.MessageBatch{Messages: []*clientpb.Message{{Conversation: "room:r", Seq: 1}}}}}
			if write(push) != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

func TestRequestsAndPushes(t *testing.T) {
	t.Parallel()
	url := fakeServer(t)
	for _, useJSON := range []bool{false, true} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := client.Dial(ctx, url, client.Options{JSON: useJSON})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Ping(ctx); err != nil {
			t.Fatalf("json=%v ping: %v", useJSON, err)
		}
		_, err = c.Join(ctx, "r")
		var e *client.Error
		if !errors.As(err, &e) || e.Code != clientpb.Error_NOT_MEMBER {
			t.Fatalf("json=%v join = %v, want NOT_MEMBER", useJSON, err)
		}
		for range 2 {
			select {
			case f := <-c.Frames():
				if f.GetMessages().GetMessages()[0].GetSeq() != 1 {
					t.Fatalf("push %v", f)
				}
			case <-ctx.Done():
				t.Fatal("no unsolicited frame")
			}
		}
		// The server closes: pending requests fail and Err tells why.
		if err := c.Leave(ctx, "r"); err == nil {
			t.Fatal("leave answered by a closed connection")
		}
		<-c.Done()
		if websocket.CloseStatus(c.Err()) != websocket.StatusPolicyViolation {
			t.Fatalf("close status of %v", c.Err())
		}
		c.Close()
		cancel()
	}
}

// TestCancelledRequestKeepsConnection: a request whose context has ended
// fails with the context's error and leaves the connection usable. The
// WebSocket library closes a connection whose write is cut short by its
// context, and before Write guarded against it about every other
// cancelled request took the connection down.
func TestCancelledRequestKeepsConnection(t *testing.T) {
	t.Parallel()
	url := fakeServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, url, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	gone, stop := context.WithCancel(ctx)
	stop()
	for i := range 32 {
		if _, err := c.Ping(gone); !errors.Is(err, context.Canceled) {
			t.Fatalf("ping %d with an ended context = %v, want context.Canceled", i, err)
		}
	}
	if _, err := c.Ping(ctx); err != nil {
		t.Fatalf("ping after the cancelled ones: %v (connection: %v)", err, c.Err())
	}
}
