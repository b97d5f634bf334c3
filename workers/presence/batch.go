package presence

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"golang.org/x/sync/errgroup"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/wiring/pipeline"
)

// handle takes apart the batch a consumer may have merged
// (topics.SessionEvents batches across keys) and applies it.
func (h *Handler) handle(ctx context.Context, ev *topicpb.SessionEvent, _ *message.Message) error {
	return h.HandleBatch(ctx, topics.Split(topics.SessionEvents, ev))
}

// HandleBatch applies events as Handle applies each, a key's events
// (topics.SessionEvents.Key: the user's, or a comet's heartbeats) in
// their order; events of different keys are independent and may be
// applied in any order. It is what makes a login storm cheap: the logins
// and joins of a batch ask the directory each of their questions in one
// round trip, and their answers go to each comet in one publish.
//
// A transient failure is returned at once, for the whole batch to be
// retried: applying an event again is harmless (its answer may be sent
// twice). An event that can never be applied does not stop the others;
// the batch's permanent failures are returned together, after them.
func (h *Handler) HandleBatch(ctx context.Context, evs []*topicpb.SessionEvent) error {
	if len(evs) == 1 {
		return h.Handle(ctx, evs[0], nil)
	}
	var permanent []error
	for _, wave := range waves(evs) {
		var opened, joined []*topicpb.SessionEvent
		for _, ev := range wave {
			switch ev.GetKind() {
			case topicpb.SessionEvent_OPENED:
				opened = append(opened, ev)
			case topicpb.SessionEvent_JOINED:
				joined = append(joined, ev)
			default:
				if err := h.Handle(ctx, ev, nil); pipeline.IsPermanent(err) {
					permanent = append(permanent, err)
				} else if err != nil {
					return err
				}
			}
		}
		if err := h.opened(ctx, opened); err != nil {
			return err
		}
		if err := h.joined(ctx, joined); err != nil {
			return err
		}
	}
	if len(permanent) > 0 {
		return pipeline.Permanent(errors.Join(permanent...))
	}
	return nil
}

// waves splits evs into waves that hold at most one event of each key:
// a key's first event in the first wave, its second in the second, and
// so on. Applying the waves in turn keeps each key's order, and the
// events of one wave may be applied together.
func waves(evs []*topicpb.SessionEvent) [][]*topicpb.SessionEvent {
	seen := make(map[string]int, len(evs))
	var out [][]*topicpb.SessionEvent
	for _, ev := range evs {
		k := topics.SessionEvents.Key(ev)
		n := seen[k]
		seen[k] = n + 1
		if n == len(out) {
			out = append(out, nil)
		}
		out[n] = append(out[n], ev)
	}
	return out
}

// opened records the sessions the login worker accepted, each of a
// distinct user, and answers their logins, together. A user that
// already has MaxSessionsPerUser sessions across the cluster is refused
// RATE_LIMITED and the connection closed: counting and recording are one
// step in the directory (OpenSessionsWithin), so logins racing on
// several comets never take the user past the bound. The user is looked
// up again: a disable or delete that reached the directory after the
// login worker's check, and whose USER_REVOKED presence applied before
// this event (the two are ordered on the user's partition), found no
// session to close. Such a login is refused (UNKNOWN_USER) and its
// connection closed, and the session it recorded is closed again; a
// login never ends open for a banned user.
func (h *Handler) opened(ctx context.Context, evs []*topicpb.SessionEvent) error {
	if len(evs) == 0 {
		return nil
	}
	users := make([]string, len(evs))
	sessions := make([]directory.Session, len(evs))
	for i, ev := range evs {
		s := ev.GetSession()
		users[i] = ev.GetUser()
		sessions[i] = directory.Session{Comet: s.GetComet(), Conn: s.GetConn(), User: ev.GetUser(), Device: ev.GetDevice()}
	}
	// Recording the sessions, looking the users up and reading the first
	// page of their conversations are independent, made at once; the
	// answers go only after all three, so a client that has its
	// LoginResult is routable. A page is bounded in count and bytes: a
	// user with thousands of conversations still gets a LoginResult well
	// under the broker's message size limit, and pages through the rest
	// (history worker).
	var known map[string]directory.User
	var opened []bool
	var pages []directory.ConversationPage
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) {
		known, err = h.store.Users(gctx, users...)
		return err
	})
	g.Go(func() (err error) {
		opened, err = h.store.OpenSessionsWithin(gctx, sessions, h.cfg.SessionTTL, h.cfg.MaxSessionsPerUser)
		return err
	})
	g.Go(func() (err error) {
		pages, err = h.store.ConversationPages(gctx, users, h.cfg.LoginConversations, directory.MaxConversationBytes)
		return err
	})
	if err := g.Wait(); err != nil {
		return fmt.Errorf("presence: %d logins: %w", len(evs), err)
	}
	answers := make([]pipeline.Answer, 0, len(evs))
	var banned []directory.SessionRef
	refused := 0
	for i, ev := range evs {
		s := ev.GetSession()
		switch u, ok := known[ev.GetUser()]; {
		case !ok || u.Disabled:
			answers = append(answers, pipeline.Answer{Session: s, Frame: topics.ErrorFrame(ev.GetRequestId(), clientpb.Error_UNKNOWN_USER, "unknown or disabled user"), Control: &topicpb.Control{Close: reasonBanned}})
			banned = append(banned, ref(s))
		case !opened[i]:
			answers = append(answers, pipeline.Answer{Session: s, Frame: h.tooMany(ev), Control: &topicpb.Control{Close: reasonTooMany}})
			refused++
		default:
			answers = append(answers, pipeline.Answer{Session: s, Frame: loginResult(ev, pages[i]), Control: &topicpb.Control{Authenticate: ev.GetUser()}})
		}
	}
	if err := pipeline.ReplyAll(h.pub, answers); err != nil {
		return fmt.Errorf("presence: %w", err)
	}
	h.sessionsRefused.Add(int64(refused))
	// A banned user's connection is answered and closed before its
	// session goes, so a retry after a failure in between answers again
	// (a comet ignores a close for a connection it no longer has).
	for _, r := range banned {
		h.logger.Info("login refused: user disabled or deleted meanwhile", "session", topics.SessionKey(session(r)))
		if err := h.close(ctx, r); err != nil {
			return err
		}
	}
	return nil
}

// joined puts sessions, each of a distinct user, in rooms, if their
// users are active and members of the rooms, and answers the joins,
// together.
func (h *Handler) joined(ctx context.Context, evs []*topicpb.SessionEvent) error {
	if len(evs) == 0 {
		return nil
	}
	users := make([]string, len(evs))
	var rooms []string
	seenRoom := map[string]bool{}
	ms := make([]directory.Membership, len(evs))
	for i, ev := range evs {
		users[i] = ev.GetUser()
		ms[i] = directory.Membership{Room: ev.GetRoom(), User: ev.GetUser()}
		if !seenRoom[ev.GetRoom()] {
			seenRoom[ev.GetRoom()] = true
			rooms = append(rooms, ev.GetRoom())
		}
	}
	look := h.store.Batch(ctx)
	known, exists, member := look.Users(users...), look.Rooms(rooms...), look.AreMembers(ms)
	if err := look.Do(); err != nil {
		return fmt.Errorf("presence: %d joins: %w", len(evs), err)
	}
	var answers []pipeline.Answer
	var joins []directory.Join
	var joining []*topicpb.SessionEvent
	for i, ev := range evs {
		s, room := ev.GetSession(), ev.GetRoom()
		u, ok := known[ev.GetUser()]
		_, roomOK := exists[room]
		switch {
		case !ok || u.Disabled:
			answers = append(answers, pipeline.Answer{Session: s, Frame: topics.ErrorFrame(ev.GetRequestId(), clientpb.Error_UNKNOWN_USER, "unknown or disabled user")})
		case !roomOK:
			answers = append(answers, pipeline.Answer{Session: s, Frame: topics.ErrorFrame(ev.GetRequestId(), clientpb.Error_UNKNOWN_ROOM, "no room "+room)})
		case !member[i]:
			answers = append(answers, pipeline.Answer{Session: s, Frame: topics.ErrorFrame(ev.GetRequestId(), clientpb.Error_NOT_MEMBER, "not a member of "+room)})
		default:
			joins = append(joins, directory.Join{Ref: ref(s), User: ev.GetUser(), Room: room})
			joining = append(joining, ev)
		}
	}
	rcs, err := h.store.JoinRooms(ctx, joins)
	if err != nil {
		return err
	}
	// A session being closed (expired, say) while it joined must not
	// leave an entry in the room behind it. The rooms' latest seqs, and
	// who is online in the small ones, are read in the same round trip.
	refs := make([]directory.SessionRef, len(joins))
	var convs []string
	var listed []string // rooms small enough to list who is online
	listing := map[string]bool{}
	clear(seenRoom)
	for i, j := range joins {
		refs[i] = j.Ref
		if !seenRoom[j.Room] {
			seenRoom[j.Room] = true
			convs = append(convs, topics.RoomConversation(j.Room))
		}
		if h.presenceFrames(rcs[i].OnlineUsers) && !listing[j.Room] {
			listing[j.Room] = true
			listed = append(listed, j.Room)
		}
	}
	look = h.store.Batch(ctx)
	open, latest, online := look.SessionsOpen(refs), look.LatestSeqs(convs...), look.RoomUsers(listed...)
	if err := look.Do(); err != nil {
		return fmt.Errorf("presence: %d joins: %w", len(evs), err)
	}
	var left []int
	for i, j := range joins {
		if !open[i] {
			left = append(left, i)
			continue
		}
		conv := topics.RoomConversation(j.Room)
		joined := &clientpb.Joined{Room: j.Room, OnlineCount: uint32(rcs[i].OnlineUsers), LatestSeq: latest[conv], Conversation: conv}
		if h.presenceFrames(rcs[i].OnlineUsers) {
			joined.OnlineUsers = online[j.Room]
		}
		answers = append(answers, pipeline.Answer{
			Session: joining[i].GetSession(),
			Frame:   &clientpb.ServerFrame{RequestId: joining[i].GetRequestId(), Body: &clientpb.ServerFrame_Joined{Joined: joined}},
			Control: &topicpb.Control{Join: j.Room},
		})
	}
	if err := pipeline.ReplyAll(h.pub, answers); err != nil {
		return fmt.Errorf("presence: %w", err)
	}
	for _, i := range left {
		if _, err := h.store.LeaveRoom(ctx, joins[i].Ref, joins[i].User, joins[i].Room); err != nil {
			return err
		}
	}
	for i, j := range joins {
		if open[i] {
			if err := h.notify(ctx, j.User, true, rcs[i]); err != nil {
				return err
			}
		}
	}
	return nil
}

// loginResult is the answer to a login that opened its session.
func loginResult(ev *topicpb.SessionEvent, page directory.ConversationPage) *clientpb.ServerFrame {
	res := &clientpb.LoginResult{
		Ok:                  true,
		User:                ev.GetUser(),
		Session:             topics.SessionKey(ev.GetSession()),
		ProtocolVersion:     ProtocolVersion,
		ServerTimeUnixMs:    time.Now().UnixMilli(),
		Conversations:       states(page.States),
		MoreConversations:   page.More,
		ConversationsCursor: page.Next,
	}
	return &clientpb.ServerFrame{RequestId: ev.GetRequestId(), Body: &clientpb.ServerFrame_LoginResult{LoginResult: res}}
}

// tooMany is the answer to a login past MaxSessionsPerUser.
func (h *Handler) tooMany(ev *topicpb.SessionEvent) *clientpb.ServerFrame {
	f := topics.ErrorFrame(ev.GetRequestId(), clientpb.Error_RATE_LIMITED,
		fmt.Sprintf("too many connections for this user across the servers (%d)", h.cfg.MaxSessionsPerUser))
	f.GetError().RetryAfterMs = uint32(SessionsRetryAfter.Milliseconds())
	return f
}
