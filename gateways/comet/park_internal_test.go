//go:build linux

package comet

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
)

// TestParkerFailureResumesParked: when epoll itself fails, the parked
// connections are read in goroutines again and no connection parks
// after that; they are served all the same.
func TestParkerFailureResumesParked(t *testing.T) {
	c, err := New(Config{ID: "c1", Secret: "test-secret-of-the-comet-tests-0123456789"}, &testinfra.Recorder{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c)
	defer srv.Close()
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", &websocket.DialOptions{Subprotocols: []string{SubprotocolProto}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	parkedAre := func(n int64) {
		t.Helper()
		for c.Stats().Parked != n {
			if ctx.Err() != nil {
				t.Fatalf("parked %d, want %d", c.Stats().Parked, n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	ping := func() {
		t.Helper()
		b, _ := proto.Marshal(&clientpb.ClientFrame{RequestId: 1, Body: &clientpb.ClientFrame_Ping{Ping: &clientpb.Ping{}}})
		if err := ws.Write(ctx, websocket.MessageBinary, b); err != nil {
			t.Fatal(err)
		}
		_, data, err := ws.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var f clientpb.ServerFrame
		if err := proto.Unmarshal(data, &f); err != nil || f.GetPong() == nil {
			t.Fatalf("answer %v, %v; want a Pong", &f, err)
		}
	}
	parkedAre(1)
	c.parker.fail(func(cn *conn) { cn.unpark() })
	parkedAre(0)
	ping()
	ping()
	if n := c.Stats().Parked; n != 0 {
		t.Fatalf("%d parked after epoll failed, want 0", n)
	}
}
