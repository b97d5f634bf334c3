package history

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/fx"

	"github.com/laneim/laneim/wiring"

	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/wiring/msgstore"
	"github.com/laneim/laneim/wiring/pipeline"
)

var _ Directory = (*directory.Store)(nil)

// Module runs the history worker; it needs a Config, a msgstore.Store, a
// *directory.Store, a wiring.BulkPublisher (its answers, large and many
// in a catch-up, do not share a producer with the process's live
// traffic), a *slog.Logger and the process's *wiring.Metrics in the
// graph.
var Module = fx.Module(Name,
	pipeline.Provide(func(cfg Config, s msgstore.Store, d *directory.Store, pub wiring.BulkPublisher, logger *slog.Logger, m *wiring.Metrics) (pipeline.Handler, error) {
		h, err := New(cfg, s, d, pub, logger.With("worker", Name))
		if err != nil {
			return pipeline.Handler{}, err
		}
		err = m.Registry.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "laneim_history_expired_total",
			Help: "Requests skipped, unanswered, because the history worker took them up past their comets' deadlines (the comets answered them UNAVAILABLE).",
		}, func() float64 { return float64(h.Expired()) }))
		if err != nil {
			return pipeline.Handler{}, err
		}
		return h.Pipeline(), nil
	}),
)
