package login

import (
	"log/slog"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/fx"

	"github.com/laneim/laneim/wiring"
	"github.com/laneim/laneim/wiring/directory"
)

var _ Users = (*directory.Store)(nil)

// Module runs the login worker. It needs a Config, a *directory.Store, a
// message.Publisher and a *slog.Logger in the graph.
var Module = fx.Module(Name,
	wiring.ProvideHandler(func(cfg Config, store *directory.Store, pub message.Publisher, logger *slog.Logger) (wiring.Handler, error) {
		h, err := New(cfg, store, pub, logger.With("worker", Name))
		if err != nil {
			return wiring.Handler{}, err
		}
		return h.Handler(), nil
	}),
)
