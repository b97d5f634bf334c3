package fanout

import (
	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/fx"

	"github.com/laneim/laneim/wiring"
)

// Module runs the fan-out worker. It needs a message.Publisher in the graph.
var Module = fx.Module(Name,
	wiring.ProvideHandler(func(pub message.Publisher) wiring.Handler { return New(pub).Handler() }),
)
