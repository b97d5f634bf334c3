// Package persist is the persistence worker: under its own consumer group
// it stores every routed message in the history store. The store keeps
// one copy per (conversation, seq), so Kafka delivering a message twice
// stores it once; concurrent partitions share the store's commits.
package persist

import (
	"context"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring"
)

// Name is the handler's name; its consumer group is laneim.persist.
const Name = "persist"

// Store is where messages go.
type Store interface {
	Append(ctx context.Context, msgs []*clientpb.Message) error
}

// Handler persists routed messages. It is safe for concurrent use.
type Handler struct{ store Store }

// New returns a Handler writing to store.
func New(store Store) *Handler { return &Handler{store: store} }

// Handler returns the pipeline handler consuming topics.Routed.
func (h *Handler) Handler() wiring.Handler {
	return wiring.Handler{Name: Name, Topic: topics.Routed.Name, Handle: h.Handle}
}

// Handle stores one routed message; the message is acked only once it is
// durable.
func (h *Handler) Handle(msg *message.Message) error {
	r, err := topics.Routed.Decode(msg)
	if err != nil {
		return wiring.Permanent(err)
	}
	if r.GetMessage().GetConversation() == "" || r.GetMessage().GetSeq() == 0 {
		return wiring.Permanent(fmt.Errorf("persist: routed message %s without conversation or seq", msg.UUID))
	}
	if err := h.store.Append(msg.Context(), []*clientpb.Message{r.GetMessage()}); err != nil {
		return fmt.Errorf("persist: %w", err)
	}
	return nil
}
