package comet

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/coder/websocket"
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/pipeline"
)

// Pipeline returns the pipeline handler named comet.<id> that consumes the
// comet's own delivery topic (consumer group laneim.comet.<id>) and
// applies each Delivery with Deliver, in order within its lane: the
// topic's live and bulk lanes (topics.Deliveries) are consumed side by
// side, so Deliver runs for both at once. A payload that does not decode is a
// pipeline.Permanent error; every other message is acked, since a
// connection that is gone needs no retry.
func (c *Comet) Pipeline() pipeline.Handler {
	t := topics.DeliveriesOf(c.cfg.ID)
	return pipeline.On("comet."+c.cfg.ID, t, func(_ context.Context, d *topicpb.Delivery, _ *message.Message) error {
		// The consumer merges a run of deliveries into one (topics.Split).
		for _, d := range topics.Split(t, d) {
			c.Deliver(d)
		}
		return nil
	})
}

// Deliver applies a Delivery: its control first (authenticate, join, leave),
// then its frame is queued to the targets; with control.close the frame
// is queued first and the targets are closed after writing it.
// Connections it names that are not here are skipped (stale routes).
// Messages a target already has are dropped: by the room for a room's
// messages (see room), by the connection for the others (see
// conn.fresh); a frame left with no message is not sent. Deliver never
// blocks on a connection; after Close it does nothing.
func (c *Comet) Deliver(d *topicpb.Delivery) {
	c.mu.RLock()
	closed := c.closed
	c.mu.RUnlock()
	if closed {
		return
	}
	ctl := d.GetControl()
	var targets []*conn
	if ctl != nil {
		targets = c.targets(d)
		if u := ctl.GetAuthenticate(); u != "" && len(targets) < len(d.GetConns()) {
			c.closeGone(d.GetConns(), targets, u)
		}
		if over := c.control(targets, ctl); len(over) > 0 {
			targets = c.refuseOver(targets, over, d.GetFrame().GetRequestId())
		}
	}
	f := d.GetFrame()
	if req := f.GetRequestId(); req != 0 {
		if f.GetSyncResult() != nil || f.GetConversationsResult() != nil {
			c.observeRead(proto.Size(f))
		}
		if ctl == nil {
			targets = c.targets(d)
		}
		for _, cn := range targets {
			cn.answered(req)
			if f.GetError() != nil {
				cn.loginDone(req) // refused: the client may log in again
			}
		}
	}
	if f != nil {
		if f.GetRequestId() == 0 { // live messages, not an answer's
			c.lat.observeAge(f.GetMessages().GetMessages(), time.Now())
		}
		if batch := f.GetMessages(); batch != nil && d.GetRoom() != "" && ctl.GetClose() == "" {
			c.mu.RLock()
			rm := c.rooms[d.GetRoom()]
			c.mu.RUnlock()
			if rm != nil {
				rm.add(batch.GetMessages())
				c.trimRecent()
			}
			return
		}
		if ctl == nil && f.GetRequestId() == 0 {
			targets = c.targets(d)
		}
		if batch := f.GetMessages(); batch != nil && len(batch.GetMessages()) > 0 {
			c.deliverMessages(targets, f)
		} else {
			fr := newFrame(f)
			for _, cn := range targets {
				cn.enqueue(fr)
			}
		}
	}
	if reason := ctl.GetClose(); reason != "" {
		for _, cn := range targets {
			cn.kick(websocket.StatusPolicyViolation, reason, true)
		}
	}
}

// closeGone tells presence that the sessions a LoginResult opened for
// connections no longer here are closed (CLOSED), in a goroutine owned by
// the comet. A Login answered UNAVAILABLE by the comet, whose client then
// hung up, may still be served once the pipeline recovers (a login worker
// restarted): the connection, never logged in, published no CLOSED, so
// the session counted its user online, in its rooms and against its
// sessions' bound until it expired, 30 s later (fault injection, round 4).
func (c *Comet) closeGone(ids []string, here []*conn, user string) {
	var gone []string
	for _, id := range ids {
		if !slices.ContainsFunc(here, func(cn *conn) bool { return cn.id == id }) {
			gone = append(gone, id)
		}
	}
	c.mu.RLock()
	if c.closed { // Close waits for wg: add to it only before that
		c.mu.RUnlock()
		return
	}
	c.wg.Add(1)
	c.mu.RUnlock()
	go func() {
		defer c.wg.Done()
		for _, id := range gone {
			c.logger.Debug("login answered for a connection gone: closing its session", "conn", id, "user", user)
			// Best effort, as for any close: else the session expires.
			_ = c.publishEvent(&topicpb.SessionEvent{
				Kind: topicpb.SessionEvent_CLOSED, Session: &topicpb.Session{Comet: c.cfg.ID, Conn: id}, User: user, TimeUnixMs: time.Now().UnixMilli(),
			})
		}
	}()
}

// deliverMessages queues f, a MessageBatch, to each target without the
// messages it already has: the targets that miss none share one frame,
// encoded once per encoding; a target missing some gets a frame of its
// own; a target that has them all gets nothing.
func (c *Comet) deliverMessages(targets []*conn, f *clientpb.ServerFrame) {
	msgs := f.GetMessages().GetMessages()
	var shared *frame
	for _, cn := range targets {
		kept, dropped := cn.fresh(msgs)
		if dropped > 0 {
			c.repeats.Add(int64(dropped))
		}
		switch {
		case len(kept) == 0:
		case dropped == 0:
			if shared == nil {
				shared = newFrame(f)
			}
			cn.enqueue(shared)
		default:
			cn.enqueue(newFrame(&clientpb.ServerFrame{RequestId: f.GetRequestId(), Body: &clientpb.ServerFrame_Messages{
				Messages: &clientpb.MessageBatch{Messages: kept},
			}}))
		}
	}
}

// targets resolves a Delivery's targets to local connections.
func (c *Comet) targets(d *topicpb.Delivery) []*conn {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []*conn
	switch {
	case len(d.GetConns()) > 0:
		for _, id := range d.GetConns() {
			if cn := c.conns[id]; cn != nil {
				out = append(out, cn)
			}
		}
	case d.GetRoom() != "":
		if rm := c.rooms[d.GetRoom()]; rm != nil {
			out = rm.appendMembers(out)
		}
	case len(d.GetUsers()) > 0:
		for _, u := range d.GetUsers() {
			out = c.users[u].appendTo(out)
		}
	case d.GetBroadcast():
		for _, cn := range c.conns {
			if cn.user != "" {
				out = append(out, cn)
			}
		}
	}
	return out
}

// control applies authenticate, join (and joins) and leave to targets,
// in that order. A connection is authenticated once; join needs a logged-in
// connection; leave (presence revoking a membership) only updates the
// local index, publishing nothing.
//
// A connection that would take its user past MaxConnsPerUser is still
// authenticated, so that closing it tells presence the session ended, but
// it is returned in over: the caller answers it RATE_LIMITED instead of
// the login's frame and closes it.
func (c *Comet) control(targets []*conn, ctl *topicpb.Control) (over []*conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	for _, cn := range targets {
		if u := ctl.GetAuthenticate(); u != "" && cn.user == "" {
			if c.cfg.MaxConnsPerUser > 0 && c.users[u].len() >= c.cfg.MaxConnsPerUser {
				over = append(over, cn)
			}
			cn.user = u
			cn.authed.Store(true)
			if cn.ws != nil {
				cn.ws.SetReadLimit(int64(c.cfg.MaxFrameBytes)) // from the pre-login limit
			}
			if c.users[u] == nil {
				c.users[u] = new(smallSet[*conn])
			}
			c.users[u].add(cn)
			if len(over) > 0 && over[len(over)-1] == cn {
				continue // joins nothing: it is about to be closed
			}
		}
		if cn.user != "" {
			if r := ctl.GetJoin(); r != "" {
				c.joinLocked(cn, r)
			}
			for _, r := range ctl.GetJoins() {
				c.joinLocked(cn, r)
			}
		}
		if r := ctl.GetLeave(); r != "" {
			c.leaveLocked(cn, r)
		}
	}
	return over
}

// joinLocked adds cn to room r; c.mu must be held for writing.
func (c *Comet) joinLocked(cn *conn, r string) {
	rm := c.rooms[r]
	if rm == nil {
		rm = newRoom(c, r)
		c.rooms[r] = rm
	}
	rm.join(cn)
	cn.rooms.add(r)
}

// leaveLocked removes cn from room r; c.mu must be held for writing.
func (c *Comet) leaveLocked(cn *conn, r string) {
	cn.rooms.remove(r)
	if rm := c.rooms[r]; rm != nil {
		if rm.leave(cn) == 0 {
			rm.stop()
			delete(c.rooms, r)
		}
	}
}

// refuseOver answers the connections in over, which a login would take
// past MaxConnsPerUser, RATE_LIMITED, closes them (1008) after that frame,
// and returns targets without them.
func (c *Comet) refuseOver(targets, over []*conn, req uint64) []*conn {
	text := fmt.Sprintf("too many connections for this user on this server (%d)", c.cfg.MaxConnsPerUser)
	for _, cn := range over {
		c.refused.Add(1)
		cn.answered(req)
		cn.enqueue(newFrame(topics.ErrorFrame(req, clientpb.Error_RATE_LIMITED, text)))
		cn.kick(websocket.StatusPolicyViolation, "too many connections", true)
	}
	return slices.DeleteFunc(targets, func(cn *conn) bool { return slices.Contains(over, cn) })
}
