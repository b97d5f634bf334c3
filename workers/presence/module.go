package presence

import (
	"log/slog"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/fx"

	"github.com/laneim/laneim/wiring"
	"github.com/laneim/laneim/wiring/directory"
)

var _ Store = (*directory.Store)(nil)

// Module runs the presence worker and its sweeper. It needs a Config, a
// *directory.Store, a message.Publisher and a *slog.Logger in the graph.
var Module = fx.Module(Name,
	fx.Provide(func(lc fx.Lifecycle, cfg Config, store *directory.Store, pub message.Publisher, logger *slog.Logger) *Handler {
		h := New(cfg, store, pub, logger.With("worker", Name))
		lc.Append(fx.StartStopHook(h.Start, h.Stop))
		return h
	}),
	wiring.ProvideHandler(func(h *Handler) wiring.Handler { return h.Handler() }),
)
