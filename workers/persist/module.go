package persist

import (
	"go.uber.org/fx"

	"github.com/laneim/laneim/wiring"
	"github.com/laneim/laneim/wiring/history"
)

// Module runs the persistence worker; it needs a history.Store in the graph.
var Module = fx.Module(Name,
	wiring.ProvideHandler(func(s history.Store) wiring.Handler { return New(s).Handler() }),
)
