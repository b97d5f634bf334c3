// Package history is the history worker: it answers clients' Sync
// requests from the history store, records their read positions (Ack)
// and relays their typing indicators, checking that the user belongs to the
// conversation, and replies on the asking comet's delivery topic (comets
// consume nothing else).
package history

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"golang.org/x/sync/errgroup"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/wiring/msgstore"
	"github.com/laneim/laneim/wiring/pipeline"
)

// Name is the handler's name; its consumer group is laneim.history.
const Name = "history"

// Store reads stored messages, and the edits and recalls of a range of
// them (for a Sync with current_state); msgstore.Store implements it.
type Store interface {
	After(ctx context.Context, conversation string, after uint64, limit int) ([]*clientpb.Message, bool, error)
	// Before, of the newest message only: has the store caught up?
	Before(ctx context.Context, conversation string, before uint64, limit int) ([]*clientpb.Message, bool, error)
	Changes(ctx context.Context, conversation string, from, to uint64) (map[uint64]*clientpb.Message, error)
}

// Directory tells users, room membership and the conversations' latest
// seqs, and lists a user's conversations; *directory.Store implements it.
type Directory interface {
	User(ctx context.Context, id string) (directory.User, bool, error)
	IsMember(ctx context.Context, room, user string) (bool, error)
	LatestSeqs(ctx context.Context, conversations ...string) (map[string]uint64, error)
	ConversationPage(ctx context.Context, user, cursor string, limit, maxBytes int) (directory.ConversationPage, error)
	// For Ack and Typing (reads.go).
	MarkRead(ctx context.Context, user, conversation string, seq uint64) (uint64, bool, error)
	UserSessions(ctx context.Context, user string) ([]directory.SessionRef, error)
	RoomOnline(ctx context.Context, room string) (users, conns int, err error)
	RoomComets(ctx context.Context, room string) ([]string, error)
}

// Config configures the history worker. Zero fields take the defaults.
type Config struct {
	// MaxPageBytes bounds the messages of one SyncResult, encoded (default
	// 512 KiB, half the broker's default message limit); a page always
	// holds at least one message, and one cut short says has_more.
	MaxPageBytes int
	// CatchUpWait is how long a Sync waits for the store to hold the
	// conversation's latest seq, which routing may have issued moments
	// before persist stored it (default 1s).
	CatchUpWait time.Duration
	// AnswerWithin bounds the work on one request (default 2s): past it,
	// or on a failure of the store or the directory, the client is
	// answered UNAVAILABLE.
	AnswerWithin time.Duration
	// NotifyLimit: typing indicators (and read receipts, with
	// RoomReceipts) go to rooms with at most this many users online
	// (default 200, like presence frames; negative: never to rooms).
	NotifyLimit int
	// RoomReceipts sends a room's members a ReadUpdate when one of them
	// reads the room further (off by default: 1:1 conversations only).
	RoomReceipts bool
}

func (c *Config) setDefaults() {
	if c.MaxPageBytes == 0 {
		c.MaxPageBytes = msgstore.MaxPageBytes
	}
	if c.CatchUpWait == 0 {
		c.CatchUpWait = time.Second
	}
	if c.AnswerWithin == 0 {
		c.AnswerWithin = 2 * time.Second
	}
	if c.NotifyLimit == 0 {
		c.NotifyLimit = 200
	}
}

// Handler answers Sync and Conversations requests. It is safe for
// concurrent use.
type Handler struct {
	cfg     Config
	store   Store
	dir     Directory
	pub     message.Publisher
	logger  *slog.Logger
	breaker pipeline.Breaker
	expired atomic.Int64
}

// New returns a Handler reading messages from store, memberships, latest
// seqs and conversation lists from dir, and answering through pub. A nil
// logger discards.
func New(cfg Config, store Store, dir Directory, pub message.Publisher, logger *slog.Logger) (*Handler, error) {
	cfg.setDefaults()
	if cfg.MaxPageBytes < 0 || cfg.CatchUpWait < 0 || cfg.AnswerWithin < 0 {
		return nil, fmt.Errorf("history: negative setting in %+v", cfg)
	}
	if store == nil || dir == nil || pub == nil {
		return nil, errors.New("history: a store, a directory and a publisher are required")
	}
	logger = pipeline.Logger(logger)
	return &Handler{cfg: cfg, store: store, dir: dir, pub: pub, logger: logger,
		breaker: pipeline.Breaker{CoolDown: 500 * time.Millisecond}}, nil
}

// Pipeline returns the pipeline handler consuming topics.HistoryRequests with Handle.
func (h *Handler) Pipeline() pipeline.Handler {
	return pipeline.On(Name, topics.HistoryRequests, h.Handle)
}

// Expired returns how many requests were skipped because they came past
// their comets' deadlines (pipeline.Expired).
func (h *Handler) Expired() int64 { return h.expired.Load() }

// Handle answers one request: a SyncResult or a ConversationsResult, an
// Error (UNKNOWN_USER for a user unknown to the directory or disabled,
// NOT_MEMBER, INVALID), or UNAVAILABLE
// when the store or the directory fails or takes longer than
// AnswerWithin; right after such a failure, for half a second, requests
// are answered UNAVAILABLE without trying (pipeline.Breaker). A request
// taken up past its comet's deadline is skipped, unanswered: the comet
// answers it UNAVAILABLE itself. It returns an error (to be retried)
// only when the answer cannot be published.
func (h *Handler) Handle(ctx context.Context, req *topicpb.HistoryRequest, _ *message.Message) error {
	if pipeline.Expired(req.GetReceivedUnixMs(), req.GetDeadlineUnixMs(), time.Now()) {
		h.expired.Add(1)
		h.logger.Debug("history request skipped: past its comet's deadline", "user", req.GetUser(), "conversation", req.GetConversation())
		return nil
	}
	if req.GetTyping() != nil {
		// Ephemeral: relayed now or never, and never answered.
		wctx, cancel := context.WithTimeout(ctx, h.cfg.AnswerWithin)
		defer cancel()
		if err := h.typing(wctx, req); err != nil {
			h.logger.Debug("typing indicator dropped", "user", req.GetUser(), "err", err)
		}
		return nil
	}
	var frame *clientpb.ServerFrame
	err := errors.New("history: a dependency failed a moment ago")
	if !h.breaker.Open() {
		wctx, cancel := context.WithTimeout(ctx, h.cfg.AnswerWithin)
		frame, err = h.answer(wctx, req)
		cancel()
		if err != nil {
			h.breaker.Failed()
		} else {
			h.breaker.Succeeded()
		}
	}
	if err != nil {
		h.logger.Warn("history request answered UNAVAILABLE", "conversation", req.GetConversation(), "user", req.GetUser(), "err", err)
		frame = topics.ErrorFrame(req.GetRequestId(), clientpb.Error_UNAVAILABLE, "history is unavailable now; retry")
	}
	if err := pipeline.Reply(h.pub, req.GetSession(), frame, nil); err != nil {
		return fmt.Errorf("history: answer: %w", err)
	}
	return nil
}

// answer returns the frame answering req. The user is looked up at the
// same time as the request is checked (Sync) or served (Conversations):
// a user disabled or deleted in the directory is answered UNKNOWN_USER,
// whatever the rest found.
func (h *Handler) answer(ctx context.Context, req *topicpb.HistoryRequest) (*clientpb.ServerFrame, error) {
	if req.GetAck() != nil {
		return h.ack(ctx, req)
	}
	var active bool
	var frame *clientpb.ServerFrame
	var allowed bool
	conv := req.GetConversation()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) {
		active, err = h.active(gctx, req.GetUser())
		return err
	})
	if c := req.GetConversations(); c != nil {
		g.Go(func() (err error) {
			frame, err = h.conversations(gctx, req, c)
			return err
		})
	} else {
		g.Go(func() (err error) {
			allowed, err = h.allowed(gctx, req.GetUser(), conv)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if !active {
		return topics.ErrorFrame(req.GetRequestId(), clientpb.Error_UNKNOWN_USER, "unknown or disabled user"), nil
	}
	if frame != nil {
		return frame, nil
	}
	if !allowed {
		return topics.ErrorFrame(req.GetRequestId(), clientpb.Error_NOT_MEMBER, "not a member of "+conv), nil
	}
	msgs, more, err := h.page(ctx, conv, req.GetAfterSeq(), msgstore.PageSize(int(req.GetLimit())), req.GetCurrentState())
	if err != nil {
		return nil, err
	}
	return &clientpb.ServerFrame{RequestId: req.GetRequestId(), Body: &clientpb.ServerFrame_SyncResult{
		SyncResult: &clientpb.SyncResult{Conversation: conv, Messages: msgs, HasMore: more},
	}}, nil
}

// catchUpPoll is how often a Sync waiting for the store looks again.
const catchUpPoll = 10 * time.Millisecond

// page reads up to limit messages after seq after, bounded in bytes. A
// page that ends before the conversation's latest seq without being full
// means the store has yet to receive the newest messages: it reads again
// until they are there or CatchUpWait has passed (then it answers what
// the store has: a seq issued to a message that was never routed, the
// sender having given up, is never stored). With current, the messages
// are as they are now (msgstore.Current), before the page is bounded in
// bytes, and a full page also waits (as long) for the store to hold the
// latest seq, so that the edits and recalls issued before are applied.
func (h *Handler) page(ctx context.Context, conv string, after uint64, limit int, current bool) ([]*clientpb.Message, bool, error) {
	latestOf, err := h.dir.LatestSeqs(ctx, conv)
	if err != nil {
		return nil, false, fmt.Errorf("history: latest seq of %s: %w", conv, err)
	}
	latest := latestOf[conv]
	deadline := time.Now().Add(h.cfg.CatchUpWait)
	for {
		msgs, more, err := h.store.After(ctx, conv, after, limit)
		if err != nil {
			return nil, false, fmt.Errorf("history: read %s: %w", conv, err)
		}
		last := after
		if len(msgs) > 0 {
			last = msgs[len(msgs)-1].GetSeq()
		}
		full := more || len(msgs) == limit
		done := last >= latest || !time.Now().Before(deadline)
		if full && !done {
			// The page is complete. Its current state also needs the
			// edits and recalls issued up to latest to be stored.
			done = !current
			if current {
				newest, _, err := h.store.Before(ctx, conv, 0, 1)
				if err != nil {
					return nil, false, fmt.Errorf("history: read %s: %w", conv, err)
				}
				done = len(newest) > 0 && newest[0].GetSeq() >= latest
			}
		}
		if done {
			if last < latest && !full {
				h.logger.Warn("sync answered before the store caught up", "conversation", conv, "stored", last, "latest", latest)
			}
			if current {
				if msgs, err = msgstore.Current(ctx, h.store, conv, msgs); err != nil {
					return nil, false, err
				}
			}
			msgs, cut := msgstore.Bound(msgs, h.cfg.MaxPageBytes)
			return msgs, more || cut, nil
		}
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-time.After(catchUpPoll):
		}
	}
}

// conversations answers a Conversations request with the page of the
// user's conversation list after its cursor: at most its limit (0 means
// directory.MaxConversationPage, and no more than that) and at most
// directory.MaxConversationBytes of states. A cursor the directory did
// not make is refused with INVALID.
func (h *Handler) conversations(ctx context.Context, req *topicpb.HistoryRequest, c *clientpb.Conversations) (*clientpb.ServerFrame, error) {
	limit := int(c.GetLimit())
	if limit == 0 || limit > directory.MaxConversationPage {
		limit = directory.MaxConversationPage
	}
	page, err := h.dir.ConversationPage(ctx, req.GetUser(), c.GetCursor(), limit, directory.MaxConversationBytes)
	switch {
	case errors.Is(err, directory.ErrBadCursor):
		return topics.ErrorFrame(req.GetRequestId(), clientpb.Error_INVALID, "unknown conversations cursor"), nil
	case err != nil:
		return nil, fmt.Errorf("history: conversations of %s: %w", req.GetUser(), err)
	}
	res := &clientpb.ConversationsResult{
		Conversations: make([]*clientpb.ConversationState, len(page.States)),
		NextCursor:    page.Next,
		HasMore:       page.More,
	}
	for i, st := range page.States {
		res.Conversations[i] = &clientpb.ConversationState{Conversation: st.Conversation, LatestSeq: st.LatestSeq, ReadSeq: st.ReadSeq, Unread: st.Unread, UnreadMentions: st.UnreadMentions}
	}
	return &clientpb.ServerFrame{RequestId: req.GetRequestId(), Body: &clientpb.ServerFrame_ConversationsResult{ConversationsResult: res}}, nil
}

// active reports whether user exists in the directory and is not disabled.
func (h *Handler) active(ctx context.Context, user string) (bool, error) {
	u, ok, err := h.dir.User(ctx, user)
	if err != nil {
		return false, fmt.Errorf("history: %w", err)
	}
	return ok && !u.Disabled, nil
}

// allowed reports whether user may read conv: a party of a 1:1
// conversation (its two users, as topics.ParseConversation finds them), a
// member of a room, anyone for broadcasts. An id the parser refuses is
// nobody's.
func (h *Handler) allowed(ctx context.Context, user, conv string) (bool, error) {
	c, err := topics.ParseConversation(conv)
	if err != nil {
		return false, nil
	}
	switch c.Kind {
	case topics.Direct:
		return c.Has(user), nil
	case topics.Room:
		return h.dir.IsMember(ctx, c.Room, user)
	case topics.Broadcast:
		return true, nil
	}
	return false, nil
}
