package discovery

import (
	"errors"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/fx"

	"github.com/laneim/laneim/wiring/secure"
)

// Config says where etcd is and how to reach it.
type Config struct {
	Endpoints []string
	// TLS secures the client connections (zero: plain TCP). Endpoints
	// may then be written host:port or https://host:port.
	TLS secure.TLS
	// Username and Password authenticate to etcd (etcd's auth enabled);
	// empty: no authentication.
	Username, Password string
}

// Validate reports settings that cannot work.
func (c Config) Validate() error {
	if (c.Username == "") != (c.Password == "") {
		return errors.New("discovery: etcd user and password go together (flags --etcd-user and --etcd-password)")
	}
	return c.TLS.Validate("etcd")
}

// String describes the configuration without the password.
func (c Config) String() string {
	s := "etcd " + strings.Join(c.Endpoints, ",")
	if c.TLS.On() {
		s += " (TLS)"
	}
	if c.Username != "" {
		s += " as " + c.Username + " (password redacted)"
	}
	return s
}

// Module provides a *clientv3.Client, connected at construction and
// closed at stop. Components that register or discover take it.
var Module = fx.Module("discovery",
	fx.Provide(func(lc fx.Lifecycle, cfg Config) (*clientv3.Client, error) {
		c, err := Dial(cfg)
		if err != nil {
			return nil, err
		}
		lc.Append(fx.StopHook(c.Close))
		return c, nil
	}),
)
