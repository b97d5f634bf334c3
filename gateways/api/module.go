package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"go.uber.org/fx"
	"google.golang.org/grpc"

	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/wiring/history"
)

var _ Presence = (*directory.Store)(nil)

// Module runs the api gateway on Config.Addr. It needs a Config, a
// *directory.Store, a message.Publisher and a *slog.Logger in the graph.
var Module = fx.Module("api",
	fx.Provide(New),
	fx.Provide(func(s *directory.Store) Presence { return s }),
	fx.Invoke(useHistory),
	fx.Invoke(serve),
)

type historyParams struct {
	fx.In
	Server *Server
	Store  history.Store `optional:"true"`
}

// useHistory lets the server answer History when the process has a store.
func useHistory(p historyParams) {
	if p.Store != nil {
		p.Server.SetHistory(p.Store)
	}
}

func serve(lc fx.Lifecycle, s *Server, logger *slog.Logger) {
	g := s.GRPCServer()
	done := make(chan error, 1)
	lc.Append(fx.Hook{
		OnStart: func(context.Context) error {
			l, err := net.Listen("tcp", s.Addr())
			if err != nil {
				return fmt.Errorf("api: listen: %w", err)
			}
			go func() { done <- g.Serve(l) }()
			logger.Info("api gateway listening", "addr", l.Addr().String())
			return nil
		},
		OnStop: func(ctx context.Context) error {
			stopped := make(chan struct{})
			go func() { g.GracefulStop(); close(stopped) }()
			select {
			case <-stopped:
			case <-ctx.Done():
				g.Stop()
				<-stopped
			case <-time.After(10 * time.Second):
				g.Stop()
				<-stopped
			}
			if err := <-done; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				return err
			}
			return nil
		},
	})
}
