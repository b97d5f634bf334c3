// Package presence is the pipeline's presence worker: it keeps the routes
// of live sessions in Redis (user -> sessions, room -> comets with counts,
// online flags refreshed by heartbeats), answers logins and joins once
// the route is in place, tells rooms who came and went, and expires
// sessions whose comet stopped reporting them. It is the only writer of
// those keys: when the system of record takes a membership or a user
// away, binlogsync publishes a revocation and presence applies it like a
// client's own leave or close.
package presence

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/wiring/pipeline"
)

// Name is the handler's name; its consumer group is laneim.presence.
const Name = "presence"

// ProtocolVersion is the client protocol version announced at login.
const ProtocolVersion = 1

// Config configures the presence worker.
type Config struct {
	// SessionTTL is how long a session lives without a heartbeat (30s).
	SessionTTL time.Duration
	// NotifyLimit: rooms with more users online get no per-user presence
	// frames (200). Negative disables presence frames.
	NotifyLimit int
	// SweepInterval is how often expired sessions are closed (1s).
	SweepInterval time.Duration
	// SweepBatch bounds the sessions closed per sweep (1000).
	SweepBatch int
	// LoginConversations is the most conversations a LoginResult lists
	// (1000): the user's rooms, then its most recent 1:1 conversations;
	// the client pages through the rest. However many, a LoginResult
	// never carries more than directory.MaxConversationBytes of them.
	LoginConversations int
	// PresenceWindow coalesces presence changes (1s): a room's members get
	// at most one PresenceChange per (room, user) per window, the last
	// state winning (coalesce.go). Negative: every change is sent.
	PresenceWindow time.Duration
	// MaxSessionsPerUser bounds the sessions one user has across the
	// cluster (100): a login past it is answered RATE_LIMITED and its
	// connection closed. Negative: no bound.
	MaxSessionsPerUser int
}

func (c *Config) setDefaults() {
	if c.SessionTTL <= 0 {
		c.SessionTTL = 30 * time.Second
	}
	if c.NotifyLimit == 0 {
		c.NotifyLimit = 200
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = time.Second
	}
	if c.SweepBatch <= 0 {
		c.SweepBatch = 1000
	}
	if c.LoginConversations <= 0 {
		c.LoginConversations = 1000
	}
	if c.PresenceWindow == 0 {
		c.PresenceWindow = time.Second
	}
	if c.MaxSessionsPerUser == 0 {
		c.MaxSessionsPerUser = 100
	}
}

// Store is what presence reads and writes in the directory.
type Store interface {
	CloseSessions(ctx context.Context, refs []directory.SessionRef) ([]directory.Closed, error)
	LeaveRoom(ctx context.Context, ref directory.SessionRef, user, room string) (directory.RoomCount, error)
	Heartbeat(ctx context.Context, comet string, live []directory.LiveSession, ttl time.Duration) error
	ExpiredSessions(ctx context.Context, now time.Time, limit int) ([]directory.SessionRef, error)
	RoomComets(ctx context.Context, room string) ([]string, error)
	RoomUsers(ctx context.Context, room string) ([]string, error)
	RoomOnline(ctx context.Context, room string) (users, conns int, err error)
	LatestSeqs(ctx context.Context, conversations ...string) (map[string]uint64, error)
	UserSessions(ctx context.Context, user string) ([]directory.SessionRef, error)
	InRoom(ctx context.Context, ref directory.SessionRef, room string) (bool, error)

	// Each asks many questions in one round trip (HandleBatch).
	Users(ctx context.Context, ids ...string) (map[string]directory.User, error)
	OpenSessionsWithin(ctx context.Context, sessions []directory.Session, ttl time.Duration, limit int) ([]bool, error)
	JoinRooms(ctx context.Context, joins []directory.Join) ([]directory.RoomCount, error)
	ConversationPages(ctx context.Context, users []string, limit, maxBytes int) ([]directory.ConversationPage, error)
	// Batch asks several kinds of question in one round trip.
	Batch(ctx context.Context) *directory.Batch
}

// Handler handles session events. Handle is safe for concurrent use; the
// sweeper runs between Start and Stop.
type Handler struct {
	cfg    Config
	store  Store
	pub    message.Publisher
	logger *slog.Logger
	co     *coalescer

	// sessionsRefused counts logins refused for MaxSessionsPerUser.
	sessionsRefused atomic.Int64

	stop chan struct{}
	done sync.WaitGroup
}

// Validate reports a configuration that cannot work. Zero fields are
// valid: they mean their defaults.
func (c Config) Validate() error {
	switch {
	case c.SessionTTL < 0:
		return fmt.Errorf("presence: negative session TTL %v", c.SessionTTL)
	case c.SweepInterval < 0:
		return fmt.Errorf("presence: negative sweep interval %v", c.SweepInterval)
	case c.SweepBatch < 0:
		return fmt.Errorf("presence: negative sweep batch %d", c.SweepBatch)
	case c.LoginConversations < 0:
		return fmt.Errorf("presence: negative login conversations %d", c.LoginConversations)
	}
	return nil
}

// New returns a presence Handler. cfg's zero fields take their defaults;
// a nil logger discards. Start runs its sweeper, Stop ends it.
func New(cfg Config, store Store, pub message.Publisher, logger *slog.Logger) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	if store == nil || pub == nil {
		return nil, errors.New("presence: a store and a publisher are required")
	}
	logger = pipeline.Logger(logger)
	h := &Handler{cfg: cfg, store: store, pub: pub, logger: logger}
	h.co = newCoalescer(cfg.PresenceWindow, h.roomOnline, h.notifyLate)
	return h, nil
}

// Pipeline returns the pipeline handler consuming topics.SessionEvents with Handle.
func (h *Handler) Pipeline() pipeline.Handler {
	return pipeline.On(Name, topics.SessionEvents, h.handle)
}

// Handle processes one SessionEvent (HandleBatch a batch of them).
func (h *Handler) Handle(ctx context.Context, ev *topicpb.SessionEvent, _ *message.Message) error {
	switch ev.GetKind() {
	case topicpb.SessionEvent_OPENED:
		return h.opened(ctx, []*topicpb.SessionEvent{ev})
	case topicpb.SessionEvent_JOINED:
		return h.joined(ctx, []*topicpb.SessionEvent{ev})
	case topicpb.SessionEvent_LEFT:
		rc, err := h.store.LeaveRoom(ctx, ref(ev.GetSession()), ev.GetUser(), ev.GetRoom())
		if err != nil {
			return err
		}
		return h.notify(ctx, ev.GetUser(), false, rc)
	case topicpb.SessionEvent_CLOSED:
		return h.close(ctx, ref(ev.GetSession()))
	case topicpb.SessionEvent_MEMBERSHIP_REVOKED:
		return h.membershipRevoked(ctx, ev)
	case topicpb.SessionEvent_USER_REVOKED:
		return h.userRevoked(ctx, ev)
	case topicpb.SessionEvent_HEARTBEAT:
		live := make([]directory.LiveSession, len(ev.GetLive()))
		for i, l := range ev.GetLive() {
			live[i] = directory.LiveSession{Conn: l.GetConn(), User: l.GetUser()}
		}
		return h.store.Heartbeat(ctx, ev.GetSession().GetComet(), live, h.cfg.SessionTTL)
	}
	return pipeline.Permanent(fmt.Errorf("presence: unknown session event kind %v", ev.GetKind()))
}

func ref(s *topicpb.Session) directory.SessionRef {
	return directory.SessionRef{Comet: s.GetComet(), Conn: s.GetConn()}
}

// reasonBanned closes the connection of a login that raced its user's
// disable or delete.
const reasonBanned = "account disabled or deleted"

// reasonExpired closes the connection of a session presence expired: its
// comet stopped reporting it for a session TTL.
const reasonExpired = "session expired: log in again"

// reasonTooMany closes the connection of a login past
// MaxSessionsPerUser; a comet closes one past its own bound so too.
const reasonTooMany = "too many connections"

// SessionsRetryAfter is the retry_after_ms of a login refused for
// MaxSessionsPerUser: no place frees itself at a known time, so it is
// the pause a client should make before trying again (as the comet's
// HTTP 429 says Retry-After: 10).
const SessionsRetryAfter = 10 * time.Second

// SessionsRefused returns how many logins were refused because their
// user had MaxSessionsPerUser sessions.
func (h *Handler) SessionsRefused() int64 { return h.sessionsRefused.Load() }

// states converts a directory page's states to the client protocol's.
func states(in []directory.ConversationState) []*clientpb.ConversationState {
	out := make([]*clientpb.ConversationState, len(in))
	for i, st := range in {
		out[i] = &clientpb.ConversationState{Conversation: st.Conversation, LatestSeq: st.LatestSeq, ReadSeq: st.ReadSeq, Unread: st.Unread, UnreadMentions: st.UnreadMentions}
	}
	return out
}

func (h *Handler) close(ctx context.Context, refs ...directory.SessionRef) error {
	closed, err := h.store.CloseSessions(ctx, refs)
	if err != nil {
		return err
	}
	var cs []change
	for _, c := range closed {
		for _, rc := range c.Rooms {
			if ch, ok := h.due(c.Session.User, false, rc); ok {
				cs = append(cs, ch)
			}
		}
	}
	return h.tell(ctx, cs...)
}

// membershipRevoked takes every connection of the user that is in the
// room out of it, as a client's own Leave would, and tells the room. Each
// connection is answered before its entry is removed: a retry after a
// failure in between finds the entry again and answers again (the comet
// ignores a second leave), and once the entry is gone a redelivered
// event finds nothing to do.
func (h *Handler) membershipRevoked(ctx context.Context, ev *topicpb.SessionEvent) error {
	user, room := ev.GetUser(), ev.GetRoom()
	if user == "" || room == "" {
		return pipeline.Permanent(fmt.Errorf("presence: membership revoked without user (%q) or room (%q)", user, room))
	}
	refs, err := h.store.UserSessions(ctx, user)
	if err != nil {
		return err
	}
	left := &clientpb.ServerFrame{Body: &clientpb.ServerFrame_Left{Left: &clientpb.Left{Room: room}}}
	n := 0
	for _, r := range refs {
		if in, err := h.store.InRoom(ctx, r, room); err != nil {
			return err
		} else if !in {
			continue
		}
		if err := h.reply(session(r), left, &topicpb.Control{Leave: room}); err != nil {
			return err
		}
		rc, err := h.store.LeaveRoom(ctx, r, user, room)
		if err != nil {
			return err
		}
		if err := h.notify(ctx, user, false, rc); err != nil {
			return err
		}
		n++
	}
	if n > 0 {
		h.logger.Info("membership revoked", "user", user, "room", room, "reason", ev.GetReason(), "sessions", n)
	}
	return nil
}

// userRevoked closes every connection of the user with the event's
// reason, as if each had closed itself. Each connection is told to close
// before its session is removed, so a retry after a failure in between
// tells it again (a comet skips connections it no longer has); once the
// sessions are gone a redelivered event finds nothing to do.
func (h *Handler) userRevoked(ctx context.Context, ev *topicpb.SessionEvent) error {
	user, reason := ev.GetUser(), ev.GetReason()
	if user == "" {
		return pipeline.Permanent(errors.New("presence: user revoked without a user"))
	}
	if reason == "" {
		reason = "access revoked" // an empty close reason would close nothing
	}
	refs, err := h.store.UserSessions(ctx, user)
	if err != nil {
		return err
	}
	if err := h.tellClose(refs, reason); err != nil {
		return err
	}
	if err := h.close(ctx, refs...); err != nil {
		return err
	}
	if len(refs) > 0 {
		h.logger.Info("user revoked", "user", user, "reason", reason, "sessions", len(refs))
	}
	return nil
}

// tellClose tells the comets of refs to close those connections with
// reason, in one publish per comet.
func (h *Handler) tellClose(refs []directory.SessionRef, reason string) error {
	closes := make([]pipeline.Answer, len(refs))
	for i, r := range refs {
		closes[i] = pipeline.Answer{Session: session(r), Control: &topicpb.Control{Close: reason}}
	}
	if err := pipeline.ReplyAll(h.pub, closes); err != nil {
		return fmt.Errorf("presence: close %d connections: %w", len(refs), err)
	}
	return nil
}

func session(r directory.SessionRef) *topicpb.Session {
	return &topicpb.Session{Comet: r.Comet, Conn: r.Conn}
}

// presenceFrames reports whether a room with online users online gets
// presence frames and, on Joined, the list of who is online.
func (h *Handler) presenceFrames(online int) bool {
	return h.cfg.NotifyLimit >= 0 && online <= h.cfg.NotifyLimit
}

// change is a presence change of user in room, with the number of users
// online in the room after it.
type change struct {
	room, user string
	online     bool
	count      int
}

// due returns the presence change rc makes for user, and whether it goes
// out now: not if the user's state in the room did not change, if the
// room is too big for presence frames, or if the change is kept to the
// end of its window (coalescer).
func (h *Handler) due(user string, online bool, rc directory.RoomCount) (change, bool) {
	if !rc.UserChanged || !h.presenceFrames(rc.OnlineUsers) {
		return change{}, false
	}
	if !h.co.now(rc.Room, user, online, rc.OnlineUsers, time.Now()) {
		return change{}, false
	}
	return change{room: rc.Room, user: user, online: online, count: rc.OnlineUsers}, true
}

// notify tells a room's comets that user appeared or disappeared, if the
// room is small enough for per-user presence: at once, or at the end of
// the (room, user)'s presence window (coalesce.go).
func (h *Handler) notify(ctx context.Context, user string, online bool, rc directory.RoomCount) error {
	if c, ok := h.due(user, online, rc); ok {
		return h.tell(ctx, c)
	}
	return nil
}

// roomOnline is the number of users online in room, for a change sent at
// the end of its window.
func (h *Handler) roomOnline(ctx context.Context, room string) (int, error) {
	users, _, err := h.store.RoomOnline(ctx, room)
	if err != nil {
		h.logger.Warn("presence change at the end of its window: room count", "room", room, "err", err)
	}
	return users, err
}

// notifyLate sends a change kept to the end of its window, with the
// room's online count as it is then. It runs on the coalescer's timer: a
// failure is logged, and the members see the next change.
func (h *Handler) notifyLate(ctx context.Context, room, user string, online bool, users int) {
	if users > h.cfg.NotifyLimit {
		return
	}
	if err := h.tell(ctx, change{room: room, user: user, online: online, count: users}); err != nil {
		h.logger.Warn("presence change at the end of its window", "room", room, "user", user, "err", err)
	}
}

// tell publishes each change as a PresenceChange to the comets of its
// room: the rooms' comets are looked up in one round trip, and each
// comet gets its changes, in order, in one publish.
func (h *Handler) tell(ctx context.Context, cs ...change) error {
	if len(cs) == 0 {
		return nil
	}
	var rooms []string
	for _, c := range cs {
		if !slices.Contains(rooms, c.room) {
			rooms = append(rooms, c.room)
		}
	}
	look := h.store.Batch(ctx)
	comets := look.RoomComets(rooms...)
	if err := look.Do(); err != nil {
		return fmt.Errorf("presence: notify: %w", err)
	}
	var out pipeline.Outbox
	for _, c := range cs {
		d := &topicpb.Delivery{Room: c.room, Frame: &clientpb.ServerFrame{Body: &clientpb.ServerFrame_Presence{Presence: &clientpb.PresenceChange{
			Room: c.room, User: c.user, Online: c.online, OnlineCount: uint32(c.count),
		}}}}
		for _, cm := range comets[c.room] {
			msg, err := topics.Deliveries.Encode(d)
			if err != nil {
				return err
			}
			out.Add(topics.Delivery(cm), msg)
		}
	}
	if err := out.Send(h.pub); err != nil {
		return fmt.Errorf("presence: notify: %w", err)
	}
	return nil
}

func (h *Handler) reply(s *topicpb.Session, frame *clientpb.ServerFrame, ctl *topicpb.Control) error {
	if err := pipeline.Reply(h.pub, s, frame, ctl); err != nil {
		return fmt.Errorf("presence: %w", err)
	}
	return nil
}

// Sweep closes the sessions whose deadline passed before now and tells
// their rooms; it returns how many it closed. Each connection is told to
// close first (reasonExpired): a comet that was frozen, or whose
// heartbeats the broker held, may still hold it, open and answering
// pings, while it no longer receives anything; closed, its client logs
// in again and Syncs (outside fault check). A dead comet's delivery
// topic just keeps the closes.
func (h *Handler) Sweep(ctx context.Context, now time.Time) (int, error) {
	refs, err := h.store.ExpiredSessions(ctx, now, h.cfg.SweepBatch)
	if err != nil {
		return 0, err
	}
	if err := h.tellClose(refs, reasonExpired); err != nil {
		return 0, err
	}
	if err := h.close(ctx, refs...); err != nil {
		return 0, err
	}
	return len(refs), nil
}

// Start runs the sweeper in a goroutine until Stop. Several presence
// workers may sweep at once: closing a session is idempotent.
func (h *Handler) Start() {
	h.stop = make(chan struct{})
	h.done.Add(1)
	go func() {
		defer h.done.Done()
		t := time.NewTicker(h.cfg.SweepInterval)
		defer t.Stop()
		for {
			select {
			case <-h.stop:
				return
			case now := <-t.C:
				ctx, cancel := context.WithTimeout(context.Background(), h.cfg.SweepInterval*10)
				n, err := h.Sweep(ctx, now)
				cancel()
				h.co.prune(now)
				if err != nil {
					h.logger.Warn("sweep expired sessions", "err", err)
				} else if n > 0 {
					h.logger.Info("expired sessions closed", "count", n)
				}
			}
		}
	}()
}

// Stop ends the sweeper and waits for it, and drops the presence changes
// waiting for the end of their window.
func (h *Handler) Stop() {
	if h.stop != nil {
		close(h.stop)
		h.done.Wait()
	}
	h.co.stop()
}
