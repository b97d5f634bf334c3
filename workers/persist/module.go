package persist

import (
	"context"
	"log/slog"
	"time"

	"go.uber.org/fx"

	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/wiring/msgstore"
	"github.com/laneim/laneim/wiring/pipeline"
)

var _ Sequences = (*directory.Store)(nil)

// GuardInterval is how often the sequence guard checks the directory.
const GuardInterval = time.Second

// Module runs the persistence worker and its sequence guard; it needs a
// wiring.Config, a msgstore.Store, a *directory.Store and a *slog.Logger
// in the graph.
var Module = fx.Module(Name,
	fx.Provide(func(lc fx.Lifecycle, cfg wiring.Config, s msgstore.Store, d *directory.Store, logger *slog.Logger) (*Handler, error) {
		backlog := wiring.NewGroupProgress(cfg.Kafka, pipeline.ConsumerGroup(Name), topics.Routed.Name)
		lc.Append(fx.StopHook(backlog.Close))
		return New(s, d, backlog, logger.With("worker", Name))
	}),
	pipeline.Provide(func(h *Handler) pipeline.Handler { return h.Pipeline() }),
	fx.Invoke(func(lc fx.Lifecycle, h *Handler) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		lc.Append(fx.Hook{
			OnStart: func(start context.Context) error {
				// A first pass before the process reports started, so a
				// client logging in right after a start (dev mode's Redis
				// is new each time) sees restored seqs; should it fail,
				// the loop below tries again.
				if _, err := h.Restore(start); err != nil {
					h.logger.Warn("sequence guard at start", "err", err)
				}
				go func() {
					defer close(done)
					h.Guard(ctx, GuardInterval)
				}()
				return nil
			},
			OnStop: func(stop context.Context) error {
				cancel()
				select {
				case <-done:
					return nil
				case <-stop.Done():
					return stop.Err()
				}
			},
		})
	}),
)
