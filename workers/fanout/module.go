package fanout

import (
	"log/slog"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/fx"

	"github.com/laneim/laneim/wiring/pipeline"
)

// Module runs the fan-out worker. It needs a message.Publisher and a
// *slog.Logger in the graph.
var Module = fx.Module(Name,
	pipeline.Provide(func(pub message.Publisher, logger *slog.Logger) (pipeline.Handler, error) {
		h, err := New(pub, logger.With("worker", Name))
		if err != nil {
			return pipeline.Handler{}, err
		}
		return h.Pipeline(), nil
	}),
)
