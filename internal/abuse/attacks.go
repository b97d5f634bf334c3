package abuse

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/gateways/comet/client"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/topics"
)

// maxRounds bounds every attack loop, whatever its duration.
const maxRounds = 1_000_000

// junkLogins: 4 unauthenticated connections send Login frames with 60 KB
// junk tokens as fast as they can, reconnecting when closed.
func junkLogins(ctx context.Context, e *env) (int64, error) {
	frame, _ := proto.Marshal(&clientpb.ClientFrame{RequestId: 1, Body: &clientpb.ClientFrame_Login{Login: &clientpb.Login{Token: strings.Repeat("j", 60_000)}}})
	return rawFlood(ctx, e, 4, frame)
}

// pingFlood: 8 unauthenticated connections send 64 KiB Pings.
func pingFlood(ctx context.Context, e *env) (int64, error) {
	frame, _ := proto.Marshal(&clientpb.ClientFrame{RequestId: 1, Body: &clientpb.ClientFrame_Ping{Ping: &clientpb.Ping{}}})
	frame = append(frame, make([]byte, 64<<10)...) // unknown bytes: still a large frame to read
	return rawFlood(ctx, e, 8, frame)
}

// rawFlood has n connections write frame in a loop; each close by the
// server counts as a refusal, and the connection is opened again.
func rawFlood(ctx context.Context, e *env, n int, frame []byte) (int64, error) {
	var refused atomic.Int64
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for round := 0; round < maxRounds && ctx.Err() == nil; round++ {
				ws, _, err := websocket.Dial(ctx, e.cfg.Target, &websocket.DialOptions{Subprotocols: []string{client.SubprotocolProto}})
				if err != nil {
					return
				}
				go func() { // read, so that the server's close is seen
					for {
						if _, _, err := ws.Read(ctx); err != nil {
							return
						}
					}
				}()
				for i := 0; i < maxRounds && ctx.Err() == nil; i++ {
					if err := ws.Write(ctx, websocket.MessageBinary, frame); err != nil {
						break
					}
				}
				ws.CloseNow()
				if ctx.Err() == nil {
					refused.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return refused.Load(), nil
}

// drain reads an attacker's frames, counting the errors it is sent.
func drain(ctx context.Context, c *client.Conn, refused *atomic.Int64) {
	for {
		select {
		case <-ctx.Done():
			return
		case f, ok := <-c.Frames():
			if !ok {
				return
			}
			if f.GetError() != nil {
				refused.Add(1)
			}
		}
	}
}

// sendFlood: one user writes Sends without waiting for answers.
func sendFlood(ctx context.Context, e *env) (int64, error) {
	return flood(ctx, e, "flooder", true, func(i int) *clientpb.ClientFrame {
		return &clientpb.ClientFrame{RequestId: uint64(i + 1_000_000), Body: &clientpb.ClientFrame_Send{Send: &clientpb.Send{
			ClientMsgId: "flood-" + time.Now().Format("150405.000000000"), To: &clientpb.Send_Room{Room: room}, Body: []byte("spam"),
		}}}
	})
}

// syncFlood: one user keeps asking for the room's history.
func syncFlood(ctx context.Context, e *env) (int64, error) {
	conv := topics.RoomConversation(room)
	return flood(ctx, e, "syncer", false, func(i int) *clientpb.ClientFrame {
		return &clientpb.ClientFrame{RequestId: uint64(i + 1_000_000), Body: &clientpb.ClientFrame_Sync{Sync: &clientpb.Sync{Conversation: conv, Limit: 500}}}
	})
}

// joinFlap: one user joins and leaves the room as fast as it can.
func joinFlap(ctx context.Context, e *env) (int64, error) {
	return flood(ctx, e, "flapper", false, func(i int) *clientpb.ClientFrame {
		if i%2 == 0 {
			return &clientpb.ClientFrame{RequestId: uint64(i + 1_000_000), Body: &clientpb.ClientFrame_Join{Join: &clientpb.JoinRoom{Room: room}}}
		}
		return &clientpb.ClientFrame{RequestId: uint64(i + 1_000_000), Body: &clientpb.ClientFrame_Leave{Leave: &clientpb.LeaveRoom{Room: room}}}
	})
}

// flood logs user in and writes the frames next returns as fast as the
// connection takes them, counting the errors it gets back; a connection
// the server closes counts as a refusal and is opened again.
func flood(ctx context.Context, e *env, user string, join bool, next func(i int) *clientpb.ClientFrame) (int64, error) {
	var refused atomic.Int64
	for round, i := 0, 0; round < maxRounds && ctx.Err() == nil; round++ {
		c, err := e.dial(ctx, user, join)
		if err != nil {
			// Refused at login or join (its user's budget is spent, say):
			// try again a little later, as a persistent attacker would.
			refused.Add(1)
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		dctx, cancel := context.WithCancel(ctx)
		go drain(dctx, c, &refused)
		for ; i < maxRounds && ctx.Err() == nil; i++ {
			if err := c.Write(ctx, next(i)); err != nil {
				break
			}
		}
		cancel()
		c.Close()
		if ctx.Err() == nil {
			refused.Add(1) // closed by the server
		}
	}
	return refused.Load(), nil
}
