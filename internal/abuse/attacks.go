package abuse

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
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

// The catch-up flood's room: catchupReaders members read pages of
// catchupPage messages of about catchupBody bytes each (about 500 KB a
// page, near the history worker's page bound) from a history of
// catchupMessages, each at its connection's budget.
const (
	catchupRoom     = "abuse-catchup"
	catchupReaders  = 49
	catchupMessages = 3000
	catchupBody     = 1000
	catchupPage     = 500
	// catchupInFlight is how many reads a reader keeps waiting.
	catchupInFlight = 8
	// catchupEvery is how often a reader asks: 20 a second, the default
	// request budget.
	catchupEvery = 50 * time.Millisecond
)

// catchupReader is the name of the catch-up room's member i.
func catchupReader(i int) string { return fmt.Sprintf("catchup-%02d", i) }

// fillCatchup sends the catch-up room's history, catchupMessages
// messages spread over its members, unless it holds them already (a
// second run against the same cluster).
func fillCatchup(ctx context.Context, e *env) error {
	conns := make([]*client.Conn, catchupReaders)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	for i := range conns {
		c, err := e.dial(ctx, catchupReader(i), false)
		if err != nil {
			return err
		}
		conns[i] = c
		go drain(ctx, c, new(atomic.Int64))
	}
	conv := topics.RoomConversation(catchupRoom)
	res, err := conns[0].Sync(ctx, conv, catchupMessages-1, 1)
	if err != nil {
		return fmt.Errorf("abuse: catch-up room's history: %w", err)
	}
	if len(res.GetMessages()) > 0 {
		return nil
	}
	body := []byte(strings.Repeat("c", catchupBody))
	var sent atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, len(conns))
	for i, c := range conns {
		wg.Go(func() {
			for sent.Add(1) <= catchupMessages {
				errs[i] = sendRetrying(ctx, c, body)
				if errs[i] != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// sendRetrying sends body to the catch-up room, waiting as told when
// the comet asks it to (at most 20 tries).
func sendRetrying(ctx context.Context, c *client.Conn, body []byte) error {
	id := client.NewClientMsgID()
	for try := 0; ; try++ {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := c.Send(sctx, &clientpb.Send{ClientMsgId: id, To: &clientpb.Send_Room{Room: catchupRoom}, Body: body, ContentType: "text/plain"})
		cancel()
		var ce *client.Error
		if err == nil || try == 20 || !errors.As(err, &ce) || ce.RetryAfter <= 0 {
			if err != nil {
				return fmt.Errorf("abuse: fill the catch-up room: %w", err)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(ce.RetryAfter):
		}
	}
}

// catchupFlood: catchupReaders members of a room with a long history
// read its older pages (where the comet keeps none) as fast as their
// budgets allow, catchupInFlight reads waiting each: up to 980 pages,
// about 490 MB, asked for every second, far more than two cores serve. Like the documented client, a reader
// told to wait (UNAVAILABLE with retry_after_ms) waits, so the attack
// stays within the budgets and is never closed for them; a connection
// the comet closes is opened again. Refused reads and closes count as
// refusals.
func catchupFlood(ctx context.Context, e *env) (int64, error) {
	var refused atomic.Int64
	var wg sync.WaitGroup
	for i := range catchupReaders {
		wg.Go(func() {
			for round := 0; round < maxRounds && ctx.Err() == nil; round++ {
				c, err := e.dial(ctx, catchupReader(i), false)
				if err == nil {
					readPages(ctx, c, &refused, &e.served)
					c.Close()
				}
				if ctx.Err() == nil {
					refused.Add(1)
					select {
					case <-ctx.Done():
					case <-time.After(100 * time.Millisecond):
					}
				}
			}
		})
	}
	wg.Wait()
	return refused.Load(), nil
}

// readPages has c read random pages of the catch-up room every
// catchupEvery, catchupInFlight at most waiting, until ctx ends or c is
// closed, counting the pages read in served.
func readPages(ctx context.Context, c *client.Conn, refused, served *atomic.Int64) {
	conv := topics.RoomConversation(catchupRoom)
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go drain(dctx, c, refused)
	var pause atomic.Int64 // Unix nanoseconds until which to wait
	slots := make(chan struct{}, catchupInFlight)
	var reads sync.WaitGroup
	defer reads.Wait()
	tick := time.NewTicker(catchupEvery)
	defer tick.Stop()
	for round := 0; round < maxRounds; round++ {
		select {
		case <-ctx.Done():
			return
		case <-c.Done():
			return
		case <-tick.C:
		}
		if time.Now().UnixNano() < pause.Load() {
			continue
		}
		select {
		case slots <- struct{}{}:
		default:
			continue // catchupInFlight reads wait already
		}
		after := uint64(rand.IntN(catchupMessages - 2*catchupPage))
		reads.Go(func() {
			defer func() { <-slots }()
			res, err := c.Sync(ctx, conv, after, catchupPage)
			if err == nil && len(res.GetMessages()) > 0 {
				served.Add(1)
			}
			if err == nil || ctx.Err() != nil {
				return
			}
			refused.Add(1)
			var ce *client.Error
			if errors.As(err, &ce) && ce.RetryAfter > 0 {
				pause.Store(time.Now().Add(min(ce.RetryAfter, 1500*time.Millisecond)).UnixNano())
			}
		})
	}
}
