// Package webhook is an example of adding a handler to laneIM without
// touching any existing worker: it subscribes to messages.routed under
// its own consumer group (laneim.webhook) and POSTs every message as JSON
// to a URL of the product's backend (for moderation, search indexing,
// notifications...).
//
// A POST that fails is retried with backoff by the shared router
// middleware; one that keeps failing goes to the dead-letter topic, from
// which `laneim replay --topic deadletters --republish @original` can
// take it back once the backend is fixed. Because the consumer group is
// new, the first start reads messages.routed from its oldest message.
package webhook

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/fx"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/pipeline"
)

// Name is the handler's name; its consumer group is laneim.webhook.
const Name = "webhook"

// Config says where to post.
type Config struct {
	URL     string
	Timeout time.Duration
}

// Handler posts routed messages. It is safe for concurrent use.
type Handler struct {
	cfg    Config
	client *http.Client
}

// New returns a Handler posting to cfg.URL.
func New(cfg Config) (*Handler, error) {
	if cfg.URL == "" {
		return nil, fmt.Errorf("webhook: no URL")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	return &Handler{cfg: cfg, client: &http.Client{Timeout: cfg.Timeout}}, nil
}

// Pipeline returns the pipeline handler consuming topics.Routed with Handle.
func (h *Handler) Pipeline() pipeline.Handler { return pipeline.On(Name, topics.Routed, h.Handle) }

// Handle posts each routed message of r (its message, then its more: see
// topics.SplitRouted) as protojson of its clientpb.Message, in seq order.
// A non-2xx answer is an error, so the router retries r; the
// Idempotency-Key lets the receiver drop the posts it already has.
func (h *Handler) Handle(ctx context.Context, r *topicpb.Routed, _ *message.Message) error {
	for _, m := range topics.SplitRouted(r) {
		if err := h.post(ctx, m.GetMessage()); err != nil {
			return err
		}
	}
	return nil
}

// post posts one message.
func (h *Handler) post(ctx context.Context, m *clientpb.Message) error {
	body, err := protojson.Marshal(m)
	if err != nil {
		return pipeline.Permanent(err)
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return pipeline.Permanent(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", m.GetConversation()+"#"+fmt.Sprint(m.GetSeq()))
	resp, err := h.client.Do(req)
	if err != nil {
		return fmt.Errorf("webhook: post: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook: %s answered %s", h.cfg.URL, resp.Status)
	}
	return nil
}

// Module contributes the handler to a laneIM process built with
// wiring.Module; it needs a Config in the graph.
var Module = fx.Module(Name,
	pipeline.Provide(func(cfg Config) (pipeline.Handler, error) {
		h, err := New(cfg)
		if err != nil {
			return pipeline.Handler{}, err
		}
		return h.Pipeline(), nil
	}),
)
