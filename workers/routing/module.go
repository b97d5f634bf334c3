package routing

import (
	"log/slog"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/fx"

	"github.com/laneim/laneim/wiring"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/wiring/pipeline"
)

var _ Store = (*directory.Store)(nil)

// Module runs the routing worker. It needs a Config, a *directory.Store, a
// message.Publisher, a *slog.Logger and the process's *wiring.Metrics in
// the graph.
var Module = fx.Module(Name,
	pipeline.Provide(func(cfg Config, store *directory.Store, pub message.Publisher, logger *slog.Logger, m *wiring.Metrics) (pipeline.Handler, error) {
		h, err := New(cfg, store, pub, logger.With("worker", Name))
		if err != nil {
			return pipeline.Handler{}, err
		}
		for _, c := range []prometheus.Collector{
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "laneim_routing_rate_limited_total",
				Help: "Client messages refused with RATE_LIMITED: their sender passed --user-send-rate across the cluster.",
			}, func() float64 { return float64(h.RateLimited()) }),
			h.Ages(),
		} {
			if err := m.Registry.Register(c); err != nil {
				return pipeline.Handler{}, err
			}
		}
		return h.Pipeline(), nil
	}),
)
