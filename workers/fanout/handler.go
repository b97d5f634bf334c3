// Package fanout is the pipeline's fan-out worker: it turns one routed
// message into one delivery per target comet (never one per member), and
// publishes them to the comets' delivery topics concurrently.
package fanout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/pipeline"
)

// Name is the handler's name; its consumer group is laneim.fanout.
const Name = "fanout"

// DeliveredMetadata is the metadata field of a routed message in which
// Handle notes, when some comets failed, the comets that already have it
// (comma-separated), so that a retry of the same message publishes only to
// the others. It stays on the message if it goes to dead letters.
const DeliveredMetadata = "laneim_fanout_delivered"

// Handler fans routed messages out to comets. It is safe for concurrent
// use, provided its Publisher is.
type Handler struct {
	pub    message.Publisher
	logger *slog.Logger
}

// New returns a fan-out Handler publishing with pub, which must be safe for
// concurrent use: Handle publishes to all target comets at once. A nil
// logger discards.
func New(pub message.Publisher, logger *slog.Logger) (*Handler, error) {
	if pub == nil {
		return nil, errors.New("fanout: no publisher")
	}
	logger = pipeline.Logger(logger)
	return &Handler{pub: pub, logger: logger}, nil
}

// Pipeline returns the pipeline handler consuming topics.Routed with Handle.
func (h *Handler) Pipeline() pipeline.Handler { return pipeline.On(Name, topics.Routed, h.Handle) }

// Handle publishes one delivery per target comet, all at once, and
// returns nil (the routed message is acked) once every comet's topic has
// it. A comet's delivery carries, in seq order, every message of the
// batch r (r's message and its more: topics.SplitRouted) that targets it
// (Routed.comets, which routing makes distinct). Comets that all get the
// whole batch share one encoding; each gets its own Watermill message
// with those bytes.
//
// A comet is published to once per message where fan-out can tell: if
// some comets fail, Handle returns their errors joined (transient: the
// router retries) and records the comets that succeeded in the message's
// DeliveredMetadata, and the retry skips them. A redelivery after a
// crash, or a dead letter sent back, can reach a comet twice; the comet
// drops what it already queued, by conversation and seq.
func (h *Handler) Handle(_ context.Context, r *topicpb.Routed, msg *message.Message) error {
	rs := topics.SplitRouted(r)
	var comets []string
	perComet := map[string][]*clientpb.Message{}
	for _, m := range rs {
		for _, c := range m.GetComets() {
			if _, ok := perComet[c]; !ok {
				comets = append(comets, c)
			}
			perComet[c] = append(perComet[c], m.GetMessage())
		}
	}
	comets = pending(comets, msg.Metadata.Get(DeliveredMetadata))
	if len(comets) == 0 {
		return nil
	}
	d := &topicpb.Delivery{Room: r.GetRoom(), Users: r.GetUsers(), Broadcast: r.GetBroadcast()}
	payloads := make([][]byte, len(comets))
	var whole []byte // the delivery of the whole batch, encoded once
	for i, comet := range comets {
		msgs := perComet[comet]
		if len(msgs) == len(rs) && whole != nil {
			payloads[i] = whole
			continue
		}
		d.Frame = &clientpb.ServerFrame{Body: &clientpb.ServerFrame_Messages{Messages: &clientpb.MessageBatch{Messages: msgs}}}
		b, err := proto.Marshal(d)
		if err != nil {
			return fmt.Errorf("fanout: encode delivery: %w", err)
		}
		if len(msgs) == len(rs) {
			whole = b
		}
		payloads[i] = b
	}
	key := topics.Deliveries.Key(d)
	first := r.GetMessage()
	errs := make([]error, len(comets))
	var wg sync.WaitGroup
	for i, comet := range comets {
		wg.Go(func() {
			// A Watermill message must not be shared between Publish calls.
			out := message.NewMessage(watermill.NewUUID(), payloads[i])
			out.Metadata.Set(topics.KeyMetadata, key)
			if err := h.pub.Publish(topics.Delivery(comet), out); err != nil {
				errs[i] = fmt.Errorf("fanout: deliver %s#%d (%d messages) to %s: %w", first.GetConversation(), first.GetSeq(), len(perComet[comet]), comet, err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		delivered := strings.Split(msg.Metadata.Get(DeliveredMetadata), ",")
		for i, comet := range comets {
			if errs[i] == nil {
				delivered = append(delivered, comet)
			}
		}
		msg.Metadata.Set(DeliveredMetadata, strings.Trim(strings.Join(delivered, ","), ","))
		return err
	}
	return nil
}

// pending returns the comets not in delivered, a comma-separated list
// (comet ids are topic-name safe and hold no comma).
func pending(comets []string, delivered string) []string {
	if delivered == "" {
		return comets
	}
	done := strings.Split(delivered, ",")
	out := make([]string, 0, len(comets))
	for _, c := range comets {
		if !slices.Contains(done, c) {
			out = append(out, c)
		}
	}
	return out
}
