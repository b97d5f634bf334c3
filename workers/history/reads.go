package history

import (
	"context"
	"errors"
	"fmt"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/directory"
)

// Read positions and typing indicators travel the same topic as Sync:
// they are a user's requests about a conversation the user belongs to,
// keyed by user (so a user's Acks are applied in order), and checked
// like a Sync (the user active, a party or member).

// ack records the read position of an Ack and tells who should know.
// The position is clamped to the conversation's latest seq. The answer
// (a ReadUpdate with the position recorded) goes to the asking
// connection; when the position moved, the user's other connections get
// it too, and so does the other party of a 1:1 conversation (a read
// receipt) and, with Config.RoomReceipts, a room's members when at most
// Config.NotifyLimit users are online in it.
func (h *Handler) ack(ctx context.Context, req *topicpb.HistoryRequest) (*clientpb.ServerFrame, error) {
	user, a := req.GetUser(), req.GetAck()
	conv := a.GetConversation()
	c, refused, err := h.check(ctx, req.GetRequestId(), user, conv)
	if err != nil || refused != nil {
		return refused, err
	}
	latestOf, err := h.dir.LatestSeqs(ctx, conv)
	if err != nil {
		return nil, fmt.Errorf("history: latest seq of %s: %w", conv, err)
	}
	seq := min(a.GetSeq(), latestOf[conv])
	pos, moved, err := h.dir.MarkRead(ctx, user, conv, seq)
	if err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	update := func(req uint64) *clientpb.ServerFrame {
		return &clientpb.ServerFrame{RequestId: req, Body: &clientpb.ServerFrame_ReadUpdate{
			ReadUpdate: &clientpb.ReadUpdate{Conversation: conv, User: user, Seq: pos},
		}}
	}
	if moved {
		if err := h.tell(ctx, c, user, req.GetSession(), update(0), true, h.cfg.RoomReceipts); err != nil {
			return nil, err
		}
	}
	return update(req.GetRequestId()), nil
}

// typing relays a Typing to the other party of a 1:1 conversation, or to
// a room's members when at most Config.NotifyLimit users are online in
// it. It answers nothing: a Typing the user may not send is dropped.
func (h *Handler) typing(ctx context.Context, req *topicpb.HistoryRequest) error {
	user, conv := req.GetUser(), req.GetTyping().GetConversation()
	c, refused, err := h.check(ctx, 0, user, conv)
	if err != nil || refused != nil || c.Kind == topics.Broadcast {
		return err
	}
	frame := &clientpb.ServerFrame{Body: &clientpb.ServerFrame_Typing{
		Typing: &clientpb.TypingUpdate{Conversation: conv, User: user},
	}}
	return h.tell(ctx, c, user, nil, frame, false, true)
}

// check looks up, at once, whether user is active and may read conv. It
// returns the parsed conversation, or the Error frame refusing request
// req.
func (h *Handler) check(ctx context.Context, req uint64, user, conv string) (topics.Conversation, *clientpb.ServerFrame, error) {
	var active, allowed bool
	errs := make(chan error, 2)
	go func() {
		var err error
		active, err = h.active(ctx, user)
		errs <- err
	}()
	go func() {
		var err error
		allowed, err = h.allowed(ctx, user, conv)
		errs <- err
	}()
	err := errors.Join(<-errs, <-errs)
	if err != nil {
		return topics.Conversation{}, nil, err
	}
	if !active {
		return topics.Conversation{}, topics.ErrorFrame(req, clientpb.Error_UNKNOWN_USER, "unknown or disabled user"), nil
	}
	if !allowed {
		return topics.Conversation{}, topics.ErrorFrame(req, clientpb.Error_NOT_MEMBER, "not a member of "+conv), nil
	}
	c, err := topics.ParseConversation(conv)
	if err != nil { // allowed said yes: cannot happen
		return topics.Conversation{}, nil, fmt.Errorf("history: %w", err)
	}
	return c, nil, nil
}

// tell sends frame, about user in conversation c, to: user's connections
// but origin (when self), the other party of a 1:1 conversation, and,
// when room, the members of a room with at most Config.NotifyLimit users
// online (through the comets hosting it; user's own connections in the
// room get it too).
func (h *Handler) tell(ctx context.Context, c topics.Conversation, user string, origin *topicpb.Session, frame *clientpb.ServerFrame, self, room bool) error {
	var refs []directory.SessionRef
	if self {
		own, err := h.dir.UserSessions(ctx, user)
		if err != nil {
			return fmt.Errorf("history: %w", err)
		}
		for _, r := range own {
			if r.Comet != origin.GetComet() || r.Conn != origin.GetConn() {
				refs = append(refs, r)
			}
		}
	}
	switch c.Kind {
	case topics.Direct:
		peer := c.A
		if peer == user {
			peer = c.B
		}
		if peer != user && peer != topics.SystemSender {
			theirs, err := h.dir.UserSessions(ctx, peer)
			if err != nil {
				return fmt.Errorf("history: %w", err)
			}
			refs = append(refs, theirs...)
		}
	case topics.Room:
		if room && h.cfg.NotifyLimit > 0 {
			if err := h.tellRoom(ctx, c.Room, frame); err != nil {
				return err
			}
		}
	}
	conns := map[string][]string{}
	for _, r := range refs {
		conns[r.Comet] = append(conns[r.Comet], r.Conn)
	}
	var errs []error
	for comet, ids := range conns {
		errs = append(errs, h.deliver(comet, &topicpb.Delivery{Conns: ids, Frame: frame}))
	}
	return errors.Join(errs...)
}

// tellRoom sends frame to the members of room connected now, if at most
// Config.NotifyLimit users are online in it.
func (h *Handler) tellRoom(ctx context.Context, room string, frame *clientpb.ServerFrame) error {
	users, _, err := h.dir.RoomOnline(ctx, room)
	if err != nil {
		return fmt.Errorf("history: %w", err)
	}
	if users > h.cfg.NotifyLimit {
		return nil
	}
	comets, err := h.dir.RoomComets(ctx, room)
	if err != nil {
		return fmt.Errorf("history: %w", err)
	}
	var errs []error
	for _, comet := range comets {
		errs = append(errs, h.deliver(comet, &topicpb.Delivery{Room: room, Frame: frame}))
	}
	return errors.Join(errs...)
}

// deliver publishes d to comet's delivery topic.
func (h *Handler) deliver(comet string, d *topicpb.Delivery) error {
	t := topics.DeliveriesOf(comet)
	msg, err := t.Encode(d)
	if err != nil {
		return err
	}
	if err := h.pub.Publish(t.Name, msg); err != nil {
		return fmt.Errorf("history: deliver to %s: %w", comet, err)
	}
	return nil
}
