package routing

import (
	"log/slog"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/fx"

	"github.com/laneim/laneim/wiring"
	"github.com/laneim/laneim/wiring/directory"
)

var _ Store = (*directory.Store)(nil)

// Module runs the routing worker. It needs a Config, a *directory.Store, a
// message.Publisher and a *slog.Logger in the graph.
var Module = fx.Module(Name,
	wiring.ProvideHandler(func(cfg Config, store *directory.Store, pub message.Publisher, logger *slog.Logger) (wiring.Handler, error) {
		if err := cfg.Validate(); err != nil {
			return wiring.Handler{}, err
		}
		return New(cfg, store, pub, logger.With("worker", Name)).Handler(), nil
	}),
)
