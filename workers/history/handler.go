// Package history is the history worker: it answers clients' Sync
// requests from the history store, checking that the user belongs to the
// conversation, and replies on the asking comet's delivery topic (comets
// consume nothing else).
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
	"github.com/laneim/laneim/wiring/msgstore"
	"github.com/laneim/laneim/wiring/pipeline"
)

// Name is the handler's name; its consumer group is laneim.history.
const Name = "history"

// Store reads stored messages.
type Store interface {
	After(ctx context.Context, conversation string, after uint64, limit int) ([]*clientpb.Message, bool, error)
}

// Members tells room membership.
type Members interface {
	IsMember(ctx context.Context, room, user string) (bool, error)
}

// Handler answers Sync requests. It is safe for concurrent use.
type Handler struct {
	store   Store
	members Members
	pub     message.Publisher
	logger  *slog.Logger
}

// New returns a Handler reading store, checking room membership with
// members and answering through pub. A nil logger discards.
func New(store Store, members Members, pub message.Publisher, logger *slog.Logger) (*Handler, error) {
	if store == nil || members == nil || pub == nil {
		return nil, errors.New("history: a store, a membership source and a publisher are required")
	}
	logger = pipeline.Logger(logger)
	return &Handler{store: store, members: members, pub: pub, logger: logger}, nil
}

// Pipeline returns the pipeline handler consuming topics.HistoryRequests with Handle.
func (h *Handler) Pipeline() pipeline.Handler {
	return pipeline.On(Name, topics.HistoryRequests, h.Handle)
}

// Handle answers one request.
func (h *Handler) Handle(ctx context.Context, req *topicpb.HistoryRequest, _ *message.Message) error {
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

func (h *Handler) allowed(ctx context.Context, user, conv string) (bool, error) {
	if a, b, ok := topics.Participants(conv); ok {
		return user == a || user == b, nil
	}
	if conv == topics.BroadcastConversation {
		return true, nil
	}
	if room, ok := strings.CutPrefix(conv, "room:"); ok && room != "" {
		return h.members.IsMember(ctx, room, user)
	}
	return false, nil
}
