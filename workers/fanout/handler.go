// Package fanout is the pipeline's fan-out worker: it turns one routed
// message into one delivery per target comet (never one per member), and
// publishes them to the comets' delivery topics concurrently.
package fanout

import (
	"fmt"
	"sync"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring"
)

// Name is the handler's name; its consumer group is laneim.fanout.
const Name = "fanout"

// Handler fans routed messages out to comets. It is safe for concurrent use.
type Handler struct {
	pub message.Publisher
}

// New returns a fan-out Handler publishing with pub.
func New(pub message.Publisher) *Handler { return &Handler{pub: pub} }

// Handler returns the pipeline handler consuming topics.Routed.
func (h *Handler) Handler() wiring.Handler {
	return wiring.Handler{Name: Name, Topic: topics.Routed.Name, Handle: h.Handle}
}

// Handle publishes one delivery per target comet and returns once every
// comet's topic has it. A failure for any comet fails the message, which
// is then retried whole: comets may see a room frame twice, and clients
// drop repeated (conversation, seq) pairs.
func (h *Handler) Handle(msg *message.Message) error {
	r, err := topics.Routed.Decode(msg)
	if err != nil {
		return wiring.Permanent(err)
	}
	if len(r.GetComets()) == 0 {
		return nil
	}
	// The delivery is the same for every comet: encode it once.
	payload, err := proto.Marshal(&topicpb.Delivery{
		Room:      r.GetRoom(),
		Users:     r.GetUsers(),
		Broadcast: r.GetBroadcast(),
		Frame: &clientpb.ServerFrame{Body: &clientpb.ServerFrame_Messages{
			Messages: &clientpb.MessageBatch{Messages: []*clientpb.Message{r.GetMessage()}},
		}},
	})
	if err != nil {
		return fmt.Errorf("fanout: encode delivery: %w", err)
	}
	comets := r.GetComets()
	errs := make([]error, len(comets))
	var wg sync.WaitGroup
	for i, comet := range comets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A Watermill message must not be shared between Publish calls.
			out := message.NewMessage(watermill.NewUUID(), payload)
			if err := h.pub.Publish(topics.Delivery(comet), out); err != nil {
				errs[i] = fmt.Errorf("fanout: deliver %s#%d to %s: %w", r.GetMessage().GetConversation(), r.GetMessage().GetSeq(), comet, err)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
