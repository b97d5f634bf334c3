package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/fx"
	"google.golang.org/grpc"

	"github.com/laneim/laneim/wiring"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/wiring/discovery"
	"github.com/laneim/laneim/wiring/msgstore"
)

var _ Presence = (*directory.Store)(nil)

// Module runs the api gateway on Config.Addr. It needs a Config, a
// *directory.Store, a message.Publisher and a *slog.Logger in the graph.
//
// With a msgstore.Store in the graph it answers History, and with an etcd
// client PickComet; it then also registers itself in etcd. With
// Config.HTTPAddr it also serves the HTTP/JSON api there.
var Module = fx.Module("api",
	fx.Provide(newServer),
	fx.Invoke(serve),
	fx.Invoke(serveHTTP),
)

type params struct {
	fx.In
	Config    Config
	Publisher message.Publisher
	Directory *directory.Store
	Logger    *slog.Logger
	Store     msgstore.Store   `optional:"true"`
	Etcd      *clientv3.Client `optional:"true"`
	Metrics   *wiring.Metrics  `optional:"true"`
}

func newServer(p params) (*Server, error) {
	opt := Optional{Directory: p.Directory, Lookup: p.Directory}
	if p.Store != nil {
		opt.History = p.Store
	}
	if p.Etcd != nil {
		opt.Comets = func(ctx context.Context) ([]discovery.Comet, error) { return discovery.Comets(ctx, p.Etcd) }
	}
	s, err := New(p.Config, p.Publisher, p.Directory, opt, p.Logger.With("gateway", "api"))
	if err != nil || p.Metrics == nil {
		return s, err
	}
	if s.metrics, err = newMetrics(p.Metrics.Registry); err != nil {
		return nil, fmt.Errorf("api: metrics: %w", err)
	}
	return s, nil
}

type serveParams struct {
	fx.In
	Server *Server
	Etcd   *clientv3.Client `optional:"true"`
}

func serve(lc fx.Lifecycle, p serveParams, logger *slog.Logger) error {
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
	return nil
}
