package login

import (
	"log/slog"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/fx"

	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/wiring/pipeline"
)

var _ Users = (*directory.Store)(nil)

// Module runs the login worker. It needs a *directory.Store, a
// message.Publisher and a *slog.Logger in the graph.
var Module = fx.Module(Name,
	pipeline.Provide(func(store *directory.Store, pub message.Publisher, logger *slog.Logger) (pipeline.Handler, error) {
		h, err := New(store, pub, logger.With("worker", Name))
		if err != nil {
			return pipeline.Handler{}, err
		}
		return h.Pipeline(), nil
	}),
)
