package comet

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
)

// conn is one client connection. user and rooms are guarded by the
// comet's mu; the connection's frames go through send to its writer.
type conn struct {
	id   string
	ws   *websocket.Conn
	json bool
	send chan *frame

	user  string
	rooms map[string]struct{}

	loginTimer *time.Timer

	kickOnce    sync.Once
	closing     chan struct{} // closed by kick
	closeStatus websocket.StatusCode
	closeReason string
}

var unmarshalJSON = protojson.UnmarshalOptions{DiscardUnknown: true}

// enqueue queues a frame without blocking; a full queue closes the
// connection as a slow consumer.
func (cn *conn) enqueue(c *Comet, f *frame) {
	select {
	case cn.send <- f:
	default:
		if cn.kick(websocket.StatusPolicyViolation, "slow consumer") {
			c.slow.Add(1)
			c.logger.Info("slow consumer disconnected", "conn", cn.id)
		}
	}
}

// kick asks the writer to close the connection with status and reason.
// Safe to call many times from any goroutine; the first call wins and
// reports true.
func (cn *conn) kick(status websocket.StatusCode, reason string) (first bool) {
	cn.kickOnce.Do(func() {
		cn.closeStatus, cn.closeReason = status, reason
		close(cn.closing)
		first = true
	})
	return first
}

// write drains the queue until the connection is kicked or breaks.
func (cn *conn) write(c *Comet) {
	defer cn.ws.CloseNow()
	typ := websocket.MessageBinary
	if cn.json {
		typ = websocket.MessageText
	}
	for {
		select {
		case <-cn.closing:
			// Flush what is queued only for a normal close.
			cn.ws.Close(cn.closeStatus, cn.closeReason)
			return
		case f := <-cn.send:
			b := f.bytes(cn.json)
			ctx, cancel := context.WithTimeout(c.ctx, c.cfg.WriteTimeout)
			err := cn.ws.Write(ctx, typ, b)
			cancel()
			if err != nil {
				cn.kick(websocket.StatusGoingAway, "write failed")
				return
			}
			c.framesSent.Add(1)
			c.bytesSent.Add(int64(len(b)))
		}
	}
}

// read serves the client's frames until the connection ends, then
// unregisters it.
func (cn *conn) read(c *Comet) {
	defer c.unregister(cn)
	defer cn.kick(websocket.StatusNormalClosure, "")
	for {
		ctx, cancel := context.WithTimeout(c.ctx, c.cfg.IdleTimeout)
		typ, data, err := cn.ws.Read(ctx)
		cancel()
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				cn.kick(websocket.StatusPolicyViolation, "idle timeout")
			}
			return
		}
		var f clientpb.ClientFrame
		if typ == websocket.MessageText {
			err = unmarshalJSON.Unmarshal(data, &f)
		} else {
			err = proto.Unmarshal(data, &f)
		}
		if err != nil {
			cn.reply(c, topics.ErrorFrame(0, clientpb.Error_BAD_FRAME, strings.ToValidUTF8("undecodable frame: "+err.Error(), "?")))
			continue
		}
		cn.serve(c, &f)
	}
}

func (cn *conn) reply(c *Comet, f *clientpb.ServerFrame) { cn.enqueue(c, newFrame(f)) }

func (cn *conn) fail(c *Comet, req uint64, code clientpb.Error_Code, text string) {
	cn.reply(c, topics.ErrorFrame(req, code, text))
}

// serve handles one client frame.
func (cn *conn) serve(c *Comet, f *clientpb.ClientFrame) {
	req := f.GetRequestId()
	c.mu.RLock()
	user := cn.user
	c.mu.RUnlock()
	switch b := f.GetBody().(type) {
	case nil:
		cn.fail(c, req, clientpb.Error_BAD_FRAME, "frame has no body")
		return
	case *clientpb.ClientFrame_Ping:
		now := time.Now().UnixMilli()
		cn.reply(c, &clientpb.ServerFrame{RequestId: req, Body: &clientpb.ServerFrame_Pong{Pong: &clientpb.Pong{ClientTimeUnixMs: b.Ping.GetClientTimeUnixMs(), ServerTimeUnixMs: now}}})
		return
	case *clientpb.ClientFrame_Login:
		if user != "" {
			cn.fail(c, req, clientpb.Error_ALREADY_LOGGED_IN, "already logged in as "+user)
			return
		}
		msg, err := topics.LoginRequests.Encode(&topicpb.LoginRequest{
			Session: c.session(cn), RequestId: req, Token: b.Login.GetToken(), Device: b.Login.GetDevice(), ReceivedUnixMs: time.Now().UnixMilli(),
		})
		if err == nil {
			err = c.pub.Publish(topics.LoginRequests.Name, msg)
		}
		if err != nil {
			c.logger.Warn("publish login request", "err", err)
			cn.fail(c, req, clientpb.Error_UNAVAILABLE, "login unavailable, retry")
		}
		return
	}
	if user == "" {
		cn.fail(c, req, clientpb.Error_UNAUTHENTICATED, "log in first")
		return
	}
	switch b := f.GetBody().(type) {
	case *clientpb.ClientFrame_Join:
		if b.Join.GetRoom() == "" {
			cn.fail(c, req, clientpb.Error_INVALID, "no room")
			return
		}
		ev := &topicpb.SessionEvent{Kind: topicpb.SessionEvent_JOINED, Session: c.session(cn), User: user, Room: b.Join.GetRoom(), RequestId: req, TimeUnixMs: time.Now().UnixMilli()}
		if c.publishEvent(ev) != nil {
			cn.fail(c, req, clientpb.Error_UNAVAILABLE, "join unavailable, retry")
		}
	case *clientpb.ClientFrame_Leave:
		room := b.Leave.GetRoom()
		c.mu.Lock()
		c.leaveLocked(cn, room)
		c.mu.Unlock()
		cn.reply(c, &clientpb.ServerFrame{RequestId: req, Body: &clientpb.ServerFrame_Left{Left: &clientpb.Left{Room: room}}})
		_ = c.publishEvent(&topicpb.SessionEvent{Kind: topicpb.SessionEvent_LEFT, Session: c.session(cn), User: user, Room: room, RequestId: req, TimeUnixMs: time.Now().UnixMilli()})
	case *clientpb.ClientFrame_Send:
		cn.submit(c, req, user, b.Send)
	case *clientpb.ClientFrame_Ack:
		// Accepted; read positions are kept by the history feature.
	case *clientpb.ClientFrame_Sync:
		cn.fail(c, req, clientpb.Error_UNAVAILABLE, "history is not available on this server yet")
	default:
		cn.fail(c, req, clientpb.Error_BAD_FRAME, "unknown frame type")
	}
}

func (cn *conn) submit(c *Comet, req uint64, user string, s *clientpb.Send) {
	sub := &topicpb.Submitted{
		Origin: c.session(cn), RequestId: req, Sender: user, ClientMsgId: s.GetClientMsgId(),
		Body: s.GetBody(), ContentType: s.GetContentType(), SubmittedUnixMs: time.Now().UnixMilli(),
	}
	switch to := s.GetTo().(type) {
	case *clientpb.Send_Room:
		sub.To = &topicpb.Submitted_Room{Room: to.Room}
	case *clientpb.Send_User:
		sub.To = &topicpb.Submitted_User{User: to.User}
	}
	if sub.To == nil || s.GetClientMsgId() == "" {
		cn.fail(c, req, clientpb.Error_INVALID, "send needs a client_msg_id and a user or room")
		return
	}
	msg, err := topics.Submitted.Encode(sub)
	if err == nil {
		err = c.pub.Publish(topics.Submitted.Name, msg)
	}
	if err != nil {
		c.logger.Warn("publish submitted message", "err", err)
		cn.fail(c, req, clientpb.Error_UNAVAILABLE, "send unavailable, retry with the same client_msg_id")
	}
}
