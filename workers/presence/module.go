package presence

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

// Module runs the presence worker and its sweeper. It needs a Config, a
// *directory.Store, a message.Publisher, a *slog.Logger and the
// process's *wiring.Metrics in the graph.
var Module = fx.Module(Name,
	fx.Provide(func(lc fx.Lifecycle, cfg Config, store *directory.Store, pub message.Publisher, logger *slog.Logger, m *wiring.Metrics) (*Handler, error) {
		h, err := New(cfg, store, pub, logger.With("worker", Name))
		if err != nil {
			return nil, err
		}
		err = m.Registry.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "laneim_presence_rate_limited_total",
			Help: "Logins refused with RATE_LIMITED: their user had --max-sessions-per-user sessions across the cluster.",
		}, func() float64 { return float64(h.SessionsRefused()) }))
		if err != nil {
			return nil, err
		}
		lc.Append(fx.StartStopHook(h.Start, h.Stop))
		return h, nil
	}),
	pipeline.Provide((*Handler).Pipeline),
)
