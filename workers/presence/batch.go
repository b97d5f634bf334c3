package presence

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
// round trip, and their answers go to each comet in one publish. So are
// the closes of a batch, which a comet cutting a big room's slow
// consumers sends by the thousand.
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
		var closed []directory.SessionRef
		for _, ev := range wave {
			switch ev.GetKind() {
			case topicpb.SessionEvent_OPENED:
				opened = append(opened, ev)
			case topicpb.SessionEvent_JOINED:
				joined = append(joined, ev)
			case topicpb.SessionEvent_CLOSED:
				closed = append(closed, ref(ev.GetSession()))
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
		if err := h.close(ctx, closed...); err != nil {
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
// login never ends open for a banned user. The rooms a login asks to
// join (Login.join) are joined as joined joins them, once the session is
// recorded, and answered in its LoginResult.
func (h *Handler) opened(ctx context.Context, evs []*topicpb.SessionEvent) error {
	now := time.Now()
	stale := func(ev *topicpb.SessionEvent) bool {
		return pipeline.LateLogin(ev.GetTimeUnixMs(), ev.GetDeadlineUnixMs(), now)
	}
	if slices.ContainsFunc(evs, stale) {
		n := len(evs)
		evs = slices.DeleteFunc(slices.Clone(evs), stale)
		h.logger.Info("late logins skipped: past their comets' deadlines (they answer them UNAVAILABLE)", "count", n-len(evs))
	}
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
	var reqs []joinReq // the rooms the accepted logins join
	var owner []int    // the index in answers of each of reqs' logins
	first := 0         // where the current login's rooms start in reqs
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
			for _, room := range ev.GetJoin() {
				if !slices.ContainsFunc(reqs[first:], func(r joinReq) bool { return r.room == room }) {
					reqs = append(reqs, joinReq{session: s, user: ev.GetUser(), room: room})
					owner = append(owner, len(answers)-1)
				}
			}
			first = len(reqs)
		}
	}
	// The rooms the logins join (Login.join) are answered in their
	// LoginResults, and the comet indexes them with the authentication.
	done := func(context.Context) error { return nil }
	if len(reqs) > 0 {
		res, d, err := h.join(ctx, reqs, known)
		if err != nil {
			return err
		}
		done = d
		for k, r := range res {
			a := answers[owner[k]]
			lr := a.Frame.GetLoginResult()
			switch {
			case r.joined != nil:
				lr.Joined = append(lr.Joined, r.joined)
				a.Control.Joins = append(a.Control.Joins, r.joined.GetRoom())
			case r.refusal != nil:
				lr.JoinRefused = append(lr.JoinRefused, &clientpb.JoinRefused{Room: reqs[k].room, Error: r.refusal})
			}
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
	}
	if err := h.close(ctx, banned...); err != nil {
		return err
	}
	return done(ctx)
}

// joined puts sessions, each of a distinct user, in rooms, if their
// users are active and members of the rooms, and answers the joins,
// together.
func (h *Handler) joined(ctx context.Context, evs []*topicpb.SessionEvent) error {
	if len(evs) == 0 {
		return nil
	}
	reqs := make([]joinReq, len(evs))
	for i, ev := range evs {
		reqs[i] = joinReq{session: ev.GetSession(), user: ev.GetUser(), room: ev.GetRoom()}
	}
	res, done, err := h.join(ctx, reqs, nil)
	if err != nil {
		return err
	}
	var answers []pipeline.Answer
	for i, ev := range evs {
		s, req := ev.GetSession(), ev.GetRequestId()
		switch r := res[i]; {
		case r.refusal != nil:
			answers = append(answers, pipeline.Answer{Session: s, Frame: &clientpb.ServerFrame{RequestId: req, Body: &clientpb.ServerFrame_Error{Error: r.refusal}}})
		case r.joined != nil:
			answers = append(answers, pipeline.Answer{
				Session: s,
				Frame:   &clientpb.ServerFrame{RequestId: req, Body: &clientpb.ServerFrame_Joined{Joined: r.joined}},
				Control: &topicpb.Control{Join: r.joined.GetRoom()},
			})
		}
	}
	if err := pipeline.ReplyAll(h.pub, answers); err != nil {
		return fmt.Errorf("presence: %w", err)
	}
	return done(ctx)
}

// joinReq is a room a session asks to join: a JoinRoom, or a room of
// Login.join.
type joinReq struct {
	session *topicpb.Session
	user    string
	room    string
}

// joinResult is what became of a joinReq: joined, or refused with the
// error its client gets; neither when the session closed meanwhile
// (nothing to answer).
type joinResult struct {
	joined  *clientpb.Joined
	refusal *clientpb.Error
}

// join puts the sessions of reqs in their rooms, if their users are
// active and members of the rooms, asking the directory each question
// once for all of them. It returns each request's result, in order, and
// done, to be called once the answers are sent: it takes sessions that
// closed meanwhile back out of their rooms and tells the rooms who came
// online. A session may ask for several rooms, but for each room once.
// known, if not nil, holds the users as the caller has just read them
// (a login's); otherwise they are looked up with the rooms.
func (h *Handler) join(ctx context.Context, reqs []joinReq, known map[string]directory.User) ([]joinResult, func(context.Context) error, error) {
	var users, rooms []string
	seenUser, seenRoom := map[string]bool{}, map[string]bool{}
	ms := make([]directory.Membership, len(reqs))
	for i, r := range reqs {
		ms[i] = directory.Membership{Room: r.room, User: r.user}
		if !seenUser[r.user] {
			seenUser[r.user] = true
			users = append(users, r.user)
		}
		if !seenRoom[r.room] {
			seenRoom[r.room] = true
			rooms = append(rooms, r.room)
		}
	}
	look := h.store.Batch(ctx)
	if known == nil {
		known = look.Users(users...)
	}
	exists, member := look.Rooms(rooms...), look.AreMembers(ms)
	if err := look.Do(); err != nil {
		return nil, nil, fmt.Errorf("presence: %d joins: %w", len(reqs), err)
	}
	res := make([]joinResult, len(reqs))
	var joins []directory.Join
	var joining []int // the index in reqs of each of joins
	for i, r := range reqs {
		u, ok := known[r.user]
		_, roomOK := exists[r.room]
		switch {
		case !ok || u.Disabled:
			res[i].refusal = &clientpb.Error{Code: clientpb.Error_UNKNOWN_USER, Text: "unknown or disabled user"}
		case !topics.ValidID(r.room):
			// No room can have such an id: the client's mistake, not a
			// room that went away.
			res[i].refusal = &clientpb.Error{Code: clientpb.Error_INVALID, Text: topics.CheckID("room", r.room).Error()}
		case !roomOK:
			res[i].refusal = &clientpb.Error{Code: clientpb.Error_UNKNOWN_ROOM, Text: "no room " + r.room}
		case !member[i]:
			res[i].refusal = &clientpb.Error{Code: clientpb.Error_NOT_MEMBER, Text: "not a member of " + r.room}
		default:
			joins = append(joins, directory.Join{Ref: ref(r.session), User: r.user, Room: r.room})
			joining = append(joining, i)
		}
	}
	if len(joins) == 0 {
		return res, func(context.Context) error { return nil }, nil
	}
	rcs, err := h.store.JoinRooms(ctx, joins)
	if err != nil {
		return nil, nil, err
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
		return nil, nil, fmt.Errorf("presence: %d joins: %w", len(reqs), err)
	}
	for i, j := range joins {
		if !open[i] {
			continue
		}
		conv := topics.RoomConversation(j.Room)
		joined := &clientpb.Joined{Room: j.Room, OnlineCount: uint32(rcs[i].OnlineUsers), LatestSeq: latest[conv], Conversation: conv}
		if h.presenceFrames(rcs[i].OnlineUsers) {
			// Read after the batch's joins, the list may hold users
			// that joined after this one: the count says the same.
			joined.OnlineUsers = online[j.Room]
			joined.OnlineCount = uint32(len(online[j.Room]))
		}
		res[joining[i]].joined = joined
	}
	done := func(ctx context.Context) error {
		for i, j := range joins {
			if !open[i] {
				if _, err := h.store.LeaveRoom(ctx, j.Ref, j.User, j.Room); err != nil {
					return err
				}
			}
		}
		var cs []change
		for i, j := range joins {
			if !open[i] {
				continue
			}
			if c, ok := h.due(j.User, true, rcs[i]); ok {
				cs = append(cs, c)
			}
		}
		return h.tell(ctx, cs...)
	}
	return res, done, nil
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
