// Package history is the history worker: it answers clients' catch-up
// requests and replies on the asking comet's delivery topic (comets
// consume nothing else). A Sync is answered from the history store,
// once the user is found to belong to the conversation; a Conversations
// request with a page of the user's conversation list from the
// directory, the pages after the one its LoginResult carried.
package history

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/wiring/msgstore"
	"github.com/laneim/laneim/wiring/pipeline"
)

// Name is the handler's name; its consumer group is laneim.history.
const Name = "history"

// Store reads stored messages.
type Store interface {
	After(ctx context.Context, conversation string, after uint64, limit int) ([]*clientpb.Message, bool, error)
}

// Directory tells room membership and lists a user's conversations;
// *directory.Store implements it.
type Directory interface {
	IsMember(ctx context.Context, room, user string) (bool, error)
	ConversationPage(ctx context.Context, user, cursor string, limit, maxBytes int) (directory.ConversationPage, error)
}

// Handler answers Sync and Conversations requests. It is safe for
// concurrent use.
type Handler struct {
	store  Store
	dir    Directory
	pub    message.Publisher
	logger *slog.Logger
}

// New returns a Handler reading messages from store, memberships and
// conversation lists from dir, and answering through pub. A nil logger
// discards.
func New(store Store, dir Directory, pub message.Publisher, logger *slog.Logger) (*Handler, error) {
	if store == nil || dir == nil || pub == nil {
		return nil, errors.New("history: a store, a directory and a publisher are required")
	}
	logger = pipeline.Logger(logger)
	return &Handler{store: store, dir: dir, pub: pub, logger: logger}, nil
}

// Pipeline returns the pipeline handler consuming topics.HistoryRequests with Handle.
func (h *Handler) Pipeline() pipeline.Handler {
	return pipeline.On(Name, topics.HistoryRequests, h.Handle)
}

// Handle answers one request.
func (h *Handler) Handle(ctx context.Context, req *topicpb.HistoryRequest, _ *message.Message) error {
	if c := req.GetConversations(); c != nil {
		return h.conversations(ctx, req, c)
	}
	conv := req.GetConversation()
	allowed, err := h.allowed(ctx, req.GetUser(), conv)
	if err != nil {
		return err
	}
	var frame *clientpb.ServerFrame
	if !allowed {
		frame = topics.ErrorFrame(req.GetRequestId(), clientpb.Error_NOT_MEMBER, "not a member of "+conv)
	} else {
		msgs, more, err := h.store.After(ctx, conv, req.GetAfterSeq(), msgstore.PageSize(int(req.GetLimit())))
		if err != nil {
			return fmt.Errorf("history: read %s: %w", conv, err)
		}
		frame = &clientpb.ServerFrame{RequestId: req.GetRequestId(), Body: &clientpb.ServerFrame_SyncResult{
			SyncResult: &clientpb.SyncResult{Conversation: conv, Messages: msgs, HasMore: more},
		}}
	}
	if err := pipeline.Reply(h.pub, req.GetSession(), frame, nil); err != nil {
		return fmt.Errorf("history: answer: %w", err)
	}
	return nil
}

// conversations answers a Conversations request with the page of the
// user's conversation list after its cursor: at most its limit (0 means
// directory.MaxConversationPage, and no more than that) and at most
// directory.MaxConversationBytes of states. A cursor the directory did
// not make is refused with INVALID.
func (h *Handler) conversations(ctx context.Context, req *topicpb.HistoryRequest, c *clientpb.Conversations) error {
	limit := int(c.GetLimit())
	if limit == 0 || limit > directory.MaxConversationPage {
		limit = directory.MaxConversationPage
	}
	var frame *clientpb.ServerFrame
	page, err := h.dir.ConversationPage(ctx, req.GetUser(), c.GetCursor(), limit, directory.MaxConversationBytes)
	switch {
	case errors.Is(err, directory.ErrBadCursor):
		frame = topics.ErrorFrame(req.GetRequestId(), clientpb.Error_INVALID, "unknown conversations cursor")
	case err != nil:
		return fmt.Errorf("history: conversations of %s: %w", req.GetUser(), err)
	default:
		res := &clientpb.ConversationsResult{
			Conversations: make([]*clientpb.ConversationState, len(page.States)),
			NextCursor:    page.Next,
			HasMore:       page.More,
		}
		for i, st := range page.States {
			res.Conversations[i] = &clientpb.ConversationState{Conversation: st.Conversation, LatestSeq: st.LatestSeq}
		}
		frame = &clientpb.ServerFrame{RequestId: req.GetRequestId(), Body: &clientpb.ServerFrame_ConversationsResult{ConversationsResult: res}}
	}
	if err := pipeline.Reply(h.pub, req.GetSession(), frame, nil); err != nil {
		return fmt.Errorf("history: answer: %w", err)
	}
	return nil
}

func (h *Handler) allowed(ctx context.Context, user, conv string) (bool, error) {
	if a, b, ok := topics.Participants(conv); ok {
		return user == a || user == b, nil
	}
	if conv == topics.BroadcastConversation {
		return true, nil
	}
	if room, ok := strings.CutPrefix(conv, "room:"); ok && room != "" {
		return h.dir.IsMember(ctx, room, user)
	}
	return false, nil
}
