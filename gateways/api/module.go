package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/fx"
	"google.golang.org/grpc"

	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/wiring/discovery"
	"github.com/laneim/laneim/wiring/msgstore"
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

type optionalParams struct {
	fx.In
	Server *Server
	Store  msgstore.Store   `optional:"true"`
	Etcd   *clientv3.Client `optional:"true"`
}

// useHistory lets the server answer History when the process has a store,
// and PickComet when it has etcd.
func useHistory(p optionalParams) {
	if p.Store != nil {
		p.Server.SetHistory(p.Store)
	}
	if p.Etcd != nil {
		p.Server.SetComets(func(ctx context.Context) ([]discovery.Comet, error) { return discovery.Comets(ctx, p.Etcd) })
	}
}

func serve(lc fx.Lifecycle, p optionalParams, logger *slog.Logger) {
	s := p.Server
	g := s.GRPCServer()
	done := make(chan error, 1)
	var reg *discovery.Registration
	lc.Append(fx.Hook{
		OnStart: func(context.Context) error {
			l, err := net.Listen("tcp", s.Addr())
			if err != nil {
				return fmt.Errorf("api: listen: %w", err)
			}
			go func() { done <- g.Serve(l) }()
			logger.Info("api gateway listening", "addr", l.Addr().String())
			if p.Etcd != nil {
				// In-cluster gRPC clients resolve discovery.ServiceTarget("api").
				if reg, err = discovery.RegisterService(context.Background(), p.Etcd, "api", l.Addr().String(), 10*time.Second, logger); err != nil {
					g.Stop()
					return fmt.Errorf("api: %w", err)
				}
			}
			return nil
		},
		OnStop: func(ctx context.Context) error {
			if reg != nil {
				_ = reg.Close(ctx)
			}
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
