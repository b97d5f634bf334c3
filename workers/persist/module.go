package persist

import (
	"log/slog"

	"go.uber.org/fx"

	"github.com/laneim/laneim/wiring/msgstore"
	"github.com/laneim/laneim/wiring/pipeline"
)

// Module runs the persistence worker; it needs a msgstore.Store and a
// *slog.Logger in the graph.
var Module = fx.Module(Name,
	pipeline.Provide(func(s msgstore.Store, logger *slog.Logger) (pipeline.Handler, error) {
		h, err := New(s, logger.With("worker", Name))
		if err != nil {
			return pipeline.Handler{}, err
		}
		return h.Pipeline(), nil
	}),
)
