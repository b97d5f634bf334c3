// Package discovery registers laneIM's live comets and services in etcd
// and finds them again. A registration lives under a lease that the
// registrant keeps alive: when a process dies, its lease expires (TTL) and
// its entries disappear by themselves.
//
// Keys: /laneim/comets/<id> holds a Comet as JSON; laneim/services/<name>/<addr>
// holds gRPC endpoints in the format of etcd's naming package, so gRPC
// clients resolve ServiceTarget(name), "etcd:///laneim/services/<name>", with Resolver.
package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.etcd.io/etcd/client/v3/naming/endpoints"
	"go.etcd.io/etcd/client/v3/naming/resolver"
	gresolver "google.golang.org/grpc/resolver"
)

const (
	cometsPrefix   = "/laneim/comets/"
	servicesPrefix = "laneim/services/" // etcd's gRPC resolver wants no leading slash
)

// Comet is a live comet as clients and the cluster see it.
type Comet struct {
	ID string `json:"id"`
	// URL is where clients connect (ws:// or wss://).
	URL string `json:"url"`
	// Topic is the comet's delivery topic.
	Topic string `json:"topic"`
	// Connections is its load when last reported.
	Connections int64 `json:"connections"`
}

// Connect returns an etcd client for endpoints, over plain TCP without
// authentication.
func Connect(endpoints []string) (*clientv3.Client, error) {
	return Dial(Config{Endpoints: endpoints})
}

// Dial returns an etcd client as cfg says (TLS, user), checked to answer.
func Dial(cfg Config) (*clientv3.Client, error) {
	endpoints := cfg.Endpoints
	if len(endpoints) == 0 {
		return nil, errors.New("discovery: no etcd endpoints (flag --etcd)")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tc, err := cfg.TLS.Client()
	if err != nil {
		return nil, fmt.Errorf("discovery: etcd: %w", err)
	}
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		TLS:         tc,
		Username:    cfg.Username,
		Password:    cfg.Password,
	})
	if err != nil {
		return nil, fmt.Errorf("discovery: etcd %v: %w", endpoints, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Get(ctx, "/laneim/ping"); err != nil {
		c.Close()
		return nil, fmt.Errorf("discovery: etcd %v not answering: %w", endpoints, err)
	}
	return c, nil
}

// Registration keeps entries alive under one lease until Close. The
// lease and its keep-alive are an etcd concurrency.Session; the
// Registration owns the goroutine that refreshes the value.
type Registration struct {
	mu      sync.Mutex
	session *concurrency.Session // the current one: a new one after a lease is lost
	// stopSession ends the session's context: the keep-alive and, during
	// Close, the revoke.
	stopSession context.CancelFunc
	// stop ends the update goroutine.
	stop context.CancelFunc
	wg   sync.WaitGroup
}

// current returns the registration's session and its stop.
func (r *Registration) current() (*concurrency.Session, context.CancelFunc) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.session, r.stopSession
}

// newSession grants a lease of ttl and keeps it alive until the returned
// cancel. ctx bounds only the grant: the session outlives it.
func newSession(ctx context.Context, c *clientv3.Client, ttl time.Duration) (*concurrency.Session, context.CancelFunc, error) {
	sctx, cancel := context.WithCancel(context.Background())
	unbind := context.AfterFunc(ctx, cancel)
	s, err := concurrency.NewSession(c,
		concurrency.WithTTL(int(max(ttl/time.Second, 1))),
		concurrency.WithContext(sctx))
	if !unbind() && err == nil {
		// ctx ended while the lease was granted: its keep-alive stopped
		// with it, so the lease (with no key yet) expires by itself.
		err = ctx.Err()
	}
	if err != nil {
		cancel()
		return nil, nil, fmt.Errorf("discovery: lease: %w", err)
	}
	return s, cancel, nil
}

// Register puts key=value under a lease of ttl, kept alive by an etcd
// session. update, if not nil, is called every ttl/3 for a fresh value (a
// comet's load) in a goroutine owned by the Registration. ctx bounds the
// registration itself, not the life of the entry: that lasts until Close.
// Should the lease be lost (etcd down or unreachable for longer than ttl,
// the process frozen as long), the entry is put again under a new lease
// as soon as etcd answers.
func Register(ctx context.Context, c *clientv3.Client, key string, ttl time.Duration, value string, update func() string, logger *slog.Logger) (*Registration, error) {
	put := func(ctx context.Context, lease clientv3.LeaseID) error {
		v := value
		if update != nil {
			v = update()
		}
		if _, err := c.Put(ctx, key, v, clientv3.WithLease(lease)); err != nil {
			return fmt.Errorf("discovery: register %s: %w", key, err)
		}
		return nil
	}
	return register(ctx, c, key, ttl, put, update != nil, logger)
}

// register puts an entry with put under a new lease of ttl and keeps it
// there until Close: every ttl/3 again if refresh (a fresh value), and
// under a new lease whenever the lease is lost.
func register(ctx context.Context, c *clientv3.Client, key string, ttl time.Duration, put func(context.Context, clientv3.LeaseID) error, refresh bool, logger *slog.Logger) (*Registration, error) {
	s, stopSession, err := leaseAndPut(ctx, c, ttl, put)
	if err != nil {
		return nil, err
	}
	kctx, stop := context.WithCancel(context.Background())
	r := &Registration{session: s, stopSession: stopSession, stop: stop}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		t := time.NewTicker(max(ttl/3, time.Second))
		defer t.Stop()
		for {
			s, _ := r.current()
			select {
			case <-kctx.Done():
				return
			case <-s.Done():
				if kctx.Err() != nil {
					return
				}
				logger.Warn("discovery: lease lost; registering again", "key", key)
				r.renew(kctx, c, key, ttl, put, logger)
			case <-t.C:
				if !refresh {
					continue
				}
				if err := put(kctx, s.Lease()); err != nil && kctx.Err() == nil {
					logger.Warn("discovery: update", "key", key, "err", err)
				}
			}
		}
	}()
	return r, nil
}

// leaseAndPut grants a lease of ttl, kept alive, and puts the entry under
// it; on failure nothing is left behind.
func leaseAndPut(ctx context.Context, c *clientv3.Client, ttl time.Duration, put func(context.Context, clientv3.LeaseID) error) (*concurrency.Session, context.CancelFunc, error) {
	s, stopSession, err := newSession(ctx, c, ttl)
	if err != nil {
		return nil, nil, err
	}
	if err := put(ctx, s.Lease()); err != nil {
		_ = closeSession(ctx, s, stopSession)
		return nil, nil, err
	}
	return s, stopSession, nil
}

// renew puts the entry under a new lease, trying again with a growing
// pause (1 s up to ttl) until it succeeds or ctx ends. The lost lease is
// revoked, should it still exist: the entry is under the new one.
func (r *Registration) renew(ctx context.Context, c *clientv3.Client, key string, ttl time.Duration, put func(context.Context, clientv3.LeaseID) error, logger *slog.Logger) {
	pause := time.Second
	for {
		actx, cancel := context.WithTimeout(ctx, max(ttl, time.Second))
		s, stopSession, err := leaseAndPut(actx, c, ttl, put)
		cancel()
		if err == nil {
			r.mu.Lock()
			old, stopOld := r.session, r.stopSession
			r.session, r.stopSession = s, stopSession
			r.mu.Unlock()
			rctx, cancel := context.WithTimeout(ctx, time.Second)
			_ = closeSession(rctx, old, stopOld)
			cancel()
			logger.Info("discovery: registered again", "key", key)
			return
		}
		if ctx.Err() != nil {
			return
		}
		logger.Warn("discovery: register again", "key", key, "err", err, "retry_in", pause)
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, max(ttl, time.Second))
	}
}

// Close stops the updates and the keep-alive and revokes the lease,
// removing the entries at once. If ctx ends first, the lease is left to
// expire after its TTL.
func (r *Registration) Close(ctx context.Context) error {
	r.stop()
	r.wg.Wait()
	s, stopSession := r.current()
	if err := closeSession(ctx, s, stopSession); err != nil {
		return fmt.Errorf("discovery: revoke: %w", err)
	}
	return nil
}

// closeSession ends the keep-alive of s and revokes its lease, giving up
// on the revoke when ctx ends (the lease then expires after its TTL).
func closeSession(ctx context.Context, s *concurrency.Session, stopSession context.CancelFunc) error {
	unbind := context.AfterFunc(ctx, stopSession)
	defer stopSession()
	defer unbind()
	return s.Close()
}

// RegisterComet registers a comet; load reports its connections.
func RegisterComet(ctx context.Context, c *clientv3.Client, comet Comet, ttl time.Duration, load func() int64, logger *slog.Logger) (*Registration, error) {
	value := func() string {
		comet.Connections = load()
		b, _ := json.Marshal(comet)
		return string(b)
	}
	return Register(ctx, c, cometsPrefix+comet.ID, ttl, value(), value, logger)
}

// Comets lists the live comets, least loaded first.
func Comets(ctx context.Context, c *clientv3.Client) ([]Comet, error) {
	resp, err := c.Get(ctx, cometsPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("discovery: list comets: %w", err)
	}
	var out []Comet
	for _, kv := range resp.Kvs {
		var cm Comet
		if err := json.Unmarshal(kv.Value, &cm); err != nil {
			continue
		}
		out = append(out, cm)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Connections != out[j].Connections {
			return out[i].Connections < out[j].Connections
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// ServiceTarget is the gRPC target that resolves a service through etcd.
func ServiceTarget(name string) string { return "etcd:///" + servicesPrefix + name }

// RegisterService registers a gRPC endpoint of service name at addr.
func RegisterService(ctx context.Context, c *clientv3.Client, name, addr string, ttl time.Duration, logger *slog.Logger) (*Registration, error) {
	em, err := endpoints.NewManager(c, strings.TrimSuffix(servicesPrefix+name, "/"))
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	key := servicesPrefix + name + "/" + addr
	put := func(ctx context.Context, lease clientv3.LeaseID) error {
		if err := em.AddEndpoint(ctx, key, endpoints.Endpoint{Addr: addr}, clientv3.WithLease(lease)); err != nil {
			return fmt.Errorf("discovery: register %s: %w", key, err)
		}
		return nil
	}
	return register(ctx, c, key, ttl, put, false, logger)
}

// Resolver returns a gRPC resolver builder for "etcd:///..." targets.
func Resolver(c *clientv3.Client) (gresolver.Builder, error) {
	b, err := resolver.NewBuilder(c)
	if err != nil {
		return nil, fmt.Errorf("discovery: resolver: %w", err)
	}
	return b, nil
}
