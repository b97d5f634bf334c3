package history

import (
	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/fx"

	"github.com/laneim/laneim/wiring"
	"github.com/laneim/laneim/wiring/directory"
	hstore "github.com/laneim/laneim/wiring/history"
)

// Module runs the history worker; it needs a history.Store, a
// *directory.Store and a message.Publisher in the graph.
var Module = fx.Module(Name,
	wiring.ProvideHandler(func(s hstore.Store, d *directory.Store, pub message.Publisher) wiring.Handler {
		return New(s, d, pub).Handler()
	}),
)
