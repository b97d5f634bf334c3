// Package persist is the persistence worker: under its own consumer group
// it stores every routed message in the history store. The store keeps
// one copy per (conversation, seq), so Kafka delivering a message twice
// stores it once; concurrent partitions share the store's commits.
package persist

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/pipeline"
)

// Name is the handler's name; its consumer group is laneim.persist.
const Name = "persist"

// Store is where messages go.
type Store interface {
	Append(ctx context.Context, msgs []*clientpb.Message) error
}

// Handler persists routed messages. It is safe for concurrent use.
type Handler struct {
	store  Store
	logger *slog.Logger
}

// New returns a Handler writing to store. A nil logger discards.
func New(store Store, logger *slog.Logger) (*Handler, error) {
	if store == nil {
		return nil, errors.New("persist: no store")
	}
	logger = pipeline.Logger(logger)
	return &Handler{store: store, logger: logger}, nil
}

// Pipeline returns the pipeline handler consuming topics.Routed with Handle.
func (h *Handler) Pipeline() pipeline.Handler { return pipeline.On(Name, topics.Routed, h.Handle) }

// Handle stores one routed message; the message is acked only once it is
// durable.
func (h *Handler) Handle(ctx context.Context, r *topicpb.Routed, msg *message.Message) error {
	if r.GetMessage().GetConversation() == "" || r.GetMessage().GetSeq() == 0 {
		return pipeline.Permanent(fmt.Errorf("persist: routed message %s without conversation or seq", msg.UUID))
	}
	if err := h.store.Append(ctx, []*clientpb.Message{r.GetMessage()}); err != nil {
		return fmt.Errorf("persist: %w", err)
	}
	return nil
}
