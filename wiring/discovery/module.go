package discovery

import (
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/fx"
)

// Config says where etcd is.
type Config struct {
	Endpoints []string
}

// Module provides a *clientv3.Client, connected at construction and
// closed at stop. Components that register or discover take it.
var Module = fx.Module("discovery",
	fx.Provide(func(lc fx.Lifecycle, cfg Config) (*clientv3.Client, error) {
		c, err := Connect(cfg.Endpoints)
		if err != nil {
			return nil, err
		}
		lc.Append(fx.StopHook(c.Close))
		return c, nil
	}),
)
