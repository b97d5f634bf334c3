package presence

import (
	"log/slog"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/fx"

	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/wiring/pipeline"
)

var _ Store = (*directory.Store)(nil)

// Module runs the presence worker and its sweeper. It needs a Config, a
// *directory.Store, a message.Publisher and a *slog.Logger in the graph.
var Module = fx.Module(Name,
	fx.Provide(func(lc fx.Lifecycle, cfg Config, store *directory.Store, pub message.Publisher, logger *slog.Logger) (*Handler, error) {
		h, err := New(cfg, store, pub, logger.With("worker", Name))
		if err != nil {
			return nil, err
		}
		lc.Append(fx.StartStopHook(h.Start, h.Stop))
		return h, nil
	}),
	pipeline.Provide((*Handler).Pipeline),
)
