package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"

	"go.uber.org/fx"
	"go.uber.org/fx/fxevent"

	"github.com/laneim/laneim/gateways/api"
	"github.com/laneim/laneim/gateways/comet"
	"github.com/laneim/laneim/wiring"
	"github.com/laneim/laneim/wiring/auth"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/wiring/discovery"
	"github.com/laneim/laneim/wiring/msgstore"
	"github.com/laneim/laneim/workers/binlogsync"
	"github.com/laneim/laneim/workers/fanout"
	history "github.com/laneim/laneim/workers/history"
	"github.com/laneim/laneim/workers/login"
	"github.com/laneim/laneim/workers/persist"
	"github.com/laneim/laneim/workers/presence"
	"github.com/laneim/laneim/workers/routing"
)

// Role is a part of the cluster a process can run.
type Role string

// The roles. Workers are the pipeline's handlers; gateways face clients.
const (
	Login    Role = "login"
	Presence Role = "presence"
	Routing  Role = "routing"
	Fanout   Role = "fanout"
	Comet    Role = "comet"
	API      Role = "api"
	// Binlog follows the system of record (MySQL) into the directory.
	Binlog Role = "binlogsync"
	// Persist stores routed messages; History answers clients' Sync.
	Persist Role = "persist"
	History Role = "history"
)

// Workers lists the worker roles in pipeline order.
var Workers = []Role{Login, Presence, Routing, Fanout, Persist, History}

// needsStore tells whether a role reads or writes the history store.
func needsStore(r Role) bool { return r == Persist || r == History }

// modules maps each role to its fx module.
var modules = map[Role]fx.Option{
	Login:    login.Module,
	Presence: presence.Module,
	Routing:  routing.Module,
	Fanout:   fanout.Module,
	Comet:    comet.Module,
	API:      api.Module,
	Binlog:   binlogsync.Module,
	Persist:  persist.Module,
	History:  history.Module,
}

// ParseRole checks a role name.
func ParseRole(name string) (Role, error) {
	r := Role(name)
	if _, ok := modules[r]; !ok {
		var names []string
		for k := range modules {
			names = append(names, string(k))
		}
		sort.Strings(names)
		return "", fmt.Errorf("unknown role %q (one of %s)", name, strings.Join(names, ", "))
	}
	return r, nil
}

// Validate checks that the settings have what roles need and says which
// flag is missing.
func (s *Settings) Validate(roles ...Role) error {
	if err := s.checkAddresses(); err != nil {
		return err
	}
	if err := s.checkPaths(); err != nil {
		return err
	}
	infra := s.Infra()
	if err := infra.Kafka.Validate(); err != nil {
		return err
	}
	needRedis := false
	for _, r := range roles {
		switch r {
		case Login, Presence, Routing, API, Binlog, Persist, History:
			needRedis = true
		}
		if needsStore(r) && s.History == "" && s.Scylla == "" {
			return fmt.Errorf("%s: no history store (flag --history or --scylla, or %s)", r, EnvName("history"))
		}
		if r == Binlog {
			if s.MySQL == "" {
				return fmt.Errorf("binlogsync: no MySQL DSN (flag --mysql or %s)", EnvName("mysql"))
			}
			if _, err := binlogsync.ParseDSN(s.MySQL); err != nil {
				return err
			}
		}
		if r == Routing {
			if err := s.routingConfig().Validate(); err != nil {
				return err
			}
		}
		if r == API && s.APIMySQL != "" {
			if _, err := binlogsync.ParseDSN(s.APIMySQL); err != nil {
				return fmt.Errorf("api: --api-mysql: %w", err)
			}
		}
		switch {
		case r == Comet && s.CometID == "":
			return fmt.Errorf("comet: no id (flag --comet-id or %s)", EnvName("comet-id"))
		case r == Comet && s.Secret == "":
			// The comet verifies login tokens (the login worker gets
			// their claims only).
			return fmt.Errorf("comet: no token secret (flag --secret or %s)", EnvName("secret"))
		case r == Comet && auth.CheckSecret([]byte(s.Secret)) != nil:
			return fmt.Errorf("comet: %w (flag --secret or %s)", auth.CheckSecret([]byte(s.Secret)), EnvName("secret"))
		case r == Comet && s.TokenMaxLifetime < 0:
			return fmt.Errorf("comet: --token-max-lifetime %s is negative", s.TokenMaxLifetime)
		case r == API && s.APIToken == "":
			return fmt.Errorf("api: no token (flag --api-token or %s)", EnvName("api-token"))
		case r == API && (s.APITLSCert == "") != (s.APITLSKey == ""):
			return errors.New("api: --api-tls-cert and --api-tls-key go together")
		case r == API && s.APIClientCA != "" && s.APITLSCert == "":
			return errors.New("api: --api-client-ca (mutual TLS) needs --api-tls-cert and --api-tls-key")
		case r == Comet && (s.CometTLSCert == "") != (s.CometTLSKey == ""):
			return errors.New("comet: --comet-tls-cert and --comet-tls-key go together")
		}
	}
	if s.Etcd != "" {
		if err := s.Discovery().Validate(); err != nil {
			return err
		}
	}
	if needRedis {
		return infra.Redis.Validate()
	}
	return nil
}

// Options returns the fx options of a process running roles.
func (s *Settings) Options(logger *slog.Logger, roles ...Role) fx.Option {
	mysqlCfg, _ := binlogsync.ParseDSN(s.MySQL)
	opts := []fx.Option{
		fx.Supply(s.Infra(), logger, mysqlCfg),
		fx.Supply(
			presence.Config{SessionTTL: s.SessionTTL, NotifyLimit: s.NotifyLimit, LoginConversations: s.LoginConvLimit, PresenceWindow: s.PresenceWindow, MaxSessionsPerUser: s.MaxSessionsPerUser},
			s.routingConfig(),
			history.Config{NotifyLimit: s.NotifyLimit, RoomReceipts: s.RoomReadReceipts},
			comet.Config{ID: s.CometID, Secret: s.Secret, Token: s.TokenPolicy(), Addr: s.CometAddr, PublicURL: s.CometURL, TLSCert: s.CometTLSCert, TLSKey: s.CometTLSKey, BatchWindow: s.BatchWindow, FrameBudget: s.FrameBudget, MaxBatchWindow: s.MaxBatchWindow, HeartbeatInterval: s.SessionTTL / 3, SendQueue: s.SendQueue, MaxFrameBytes: s.MaxFrameBytes, RequestTimeout: s.RequestTimeout, MaxReadsInFlight: s.MaxReadsInFlight, RecentBytes: s.RecentBytes, RequestRate: s.RequestRate, RequestBurst: s.RequestBurst, SendBurst: s.SendBurst, MaxConnsPerUser: s.MaxConnsPerUser, MaxConnsPerAddress: s.MaxConnsPerAddr, MaxQueuedBytes: s.MaxQueuedBytes},
			api.Config{Addr: s.APIAddr, HTTPAddr: s.APIHTTPAddr, DirectoryFollowsMySQL: s.MySQL != "", MySQL: s.APIMySQL, Token: s.APIToken, MaxBodyBytes: s.MaxBodyBytes, TLSCert: s.APITLSCert, TLSKey: s.APITLSKey, ClientCA: s.APIClientCA},
		),
		wiring.Module,
		directory.Module,
		fx.WithLogger(func() fxevent.Logger {
			if logger.Enabled(context.Background(), slog.LevelDebug) {
				return &fxevent.SlogLogger{Logger: logger.With("component", "fx")}
			}
			return fxevent.NopLogger
		}),
	}
	store := s.History != "" || s.Scylla != ""
	for _, r := range roles {
		opts = append(opts, modules[r])
		store = store || needsStore(r)
	}
	// /readyz asks every dependency (fresh connections, so a hung server
	// shows even while pooled ones wait) and the history store.
	deps := s.Dependencies(roles...)
	opts = append(opts, fx.Invoke(func(m *wiring.Metrics) {
		for _, d := range deps {
			check := d.Check
			if d.Degrades {
				check = func(ctx context.Context) error { return wiring.Degraded(d.Check(ctx)) }
			}
			m.AddCheck(d.Name, check)
		}
	}))
	// Only a process whose roles read the store asks it: one that is
	// merely given --history (a comet beside the workers, say) does not
	// open it.
	if store && slices.ContainsFunc(roles, func(r Role) bool { return needsStore(r) || r == API }) {
		opts = append(opts, fx.Invoke(func(m *wiring.Metrics, st msgstore.Store) {
			m.AddCheck("history store", func(ctx context.Context) error {
				_, _, err := st.After(ctx, "laneim:readyz", 0, 1)
				return err
			})
		}),
			// Read positions are saved in the store too and read back
			// from it when Redis has lost them.
			fx.Provide(func(st msgstore.Store) directory.ReadStore { return st }))
	}
	if store {
		opts = append(opts, fx.Supply(msgstore.Config{
			Path:      s.History,
			Scylla:    msgstore.ScyllaConfig{Hosts: splitList(s.Scylla), Keyspace: s.ScyllaKeyspace, Consistency: s.ScyllaConsistency},
			Retention: msgstore.Retention{Room: s.RetainRoom, Direct: s.RetainDirect, Broadcast: s.RetainBroadcast},
		}), msgstore.Module)
	}
	if s.Etcd != "" {
		opts = append(opts, fx.Supply(s.Discovery()), discovery.Module)
	}
	return fx.Options(append(opts, wiring.Ready)...)
}

// routingConfig returns the routing worker's configuration.
func (s *Settings) routingConfig() routing.Config {
	return routing.Config{MaxBodyBytes: s.MaxBodyBytes, EditWindow: s.EditWindow, RecallWindow: s.RecallWindow, UserSendRate: s.UserSendRate, UserSendBurst: s.UserSendBurst}
}

// checkAddresses refuses credentials written into an address list (a
// Redis URL with a password, say): they would be echoed by every
// connection error. The message names the flag and the position, never
// the address.
func (s *Settings) checkAddresses() error {
	for _, l := range []struct{ flag, list, instead string }{
		{"kafka", s.Kafka, "host:port only"},
		{"redis", s.Redis, "host:port, and the password with --redis-password"},
		{"etcd", s.Etcd, "host:port or http(s)://host:port"},
		{"scylla", s.Scylla, "host:port only"},
	} {
		for i, a := range splitList(l.list) {
			if strings.Contains(a, "@") {
				return fmt.Errorf("--%s (%s): address %d holds credentials (user:password@), which are not shown nor accepted there: give %s",
					l.flag, EnvName(l.flag), i+1, l.instead)
			}
		}
	}
	return nil
}
