package history

import (
	"log/slog"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/fx"

	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/wiring/msgstore"
	"github.com/laneim/laneim/wiring/pipeline"
)

var _ Directory = (*directory.Store)(nil)

// Module runs the history worker; it needs a Config, a msgstore.Store, a
// *directory.Store, a message.Publisher and a *slog.Logger in the graph.
var Module = fx.Module(Name,
	pipeline.Provide(func(cfg Config, s msgstore.Store, d *directory.Store, pub message.Publisher, logger *slog.Logger) (pipeline.Handler, error) {
		h, err := New(cfg, s, d, pub, logger.With("worker", Name))
		if err != nil {
			return pipeline.Handler{}, err
		}
		return h.Pipeline(), nil
	}),
)
