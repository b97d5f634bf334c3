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

// Connect returns an etcd client for endpoints.
func Connect(endpoints []string) (*clientv3.Client, error) {
	if len(endpoints) == 0 {
		return nil, errors.New("discovery: no etcd endpoints (flag --etcd)")
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
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

// Registration keeps entries alive under one lease until Close.
type Registration struct {
	client *clientv3.Client
	lease  clientv3.LeaseID
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Register puts key=value under a lease of ttl and keeps it alive in a
// goroutine owned by the Registration. update, if not nil, is called
// every ttl/3 for a fresh value (a comet's load).
func Register(ctx context.Context, c *clientv3.Client, key string, ttl time.Duration, value string, update func() string, logger *slog.Logger) (*Registration, error) {
	lease, err := c.Grant(ctx, int64(max(ttl/time.Second, 1)))
	if err != nil {
		return nil, fmt.Errorf("discovery: lease: %w", err)
	}
	if _, err := c.Put(ctx, key, value, clientv3.WithLease(lease.ID)); err != nil {
		return nil, fmt.Errorf("discovery: register %s: %w", key, err)
	}
	return keep(c, lease.ID, key, ttl, update, logger)
}

// keep keeps lease alive, and refreshes key with update every ttl/3, in
// a goroutine owned by the returned Registration.
func keep(c *clientv3.Client, lease clientv3.LeaseID, key string, ttl time.Duration, update func() string, logger *slog.Logger) (*Registration, error) {
	kctx, cancel := context.WithCancel(context.Background())
	alive, err := c.KeepAlive(kctx, lease)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("discovery: keep %s alive: %w", key, err)
	}
	r := &Registration{client: c, lease: lease, cancel: cancel}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		t := time.NewTicker(max(ttl/3, time.Second))
		defer t.Stop()
		for {
			select {
			case <-kctx.Done():
				return
			case _, ok := <-alive:
				if !ok {
					if kctx.Err() == nil {
						logger.Warn("discovery: lease lost; entry will vanish", "key", key)
					}
					return
				}
			case <-t.C:
				if update == nil {
					continue
				}
				if _, err := c.Put(kctx, key, update(), clientv3.WithLease(lease)); err != nil && kctx.Err() == nil {
					logger.Warn("discovery: update", "key", key, "err", err)
				}
			}
		}
	}()
	return r, nil
}

// Close stops the keep-alive and revokes the lease, removing the entries.
func (r *Registration) Close(ctx context.Context) error {
	r.cancel()
	r.wg.Wait()
	if _, err := r.client.Revoke(ctx, r.lease); err != nil {
		return fmt.Errorf("discovery: revoke: %w", err)
	}
	return nil
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
	lease, err := c.Grant(ctx, int64(max(ttl/time.Second, 1)))
	if err != nil {
		return nil, fmt.Errorf("discovery: lease: %w", err)
	}
	key := servicesPrefix + name + "/" + addr
	if err := em.AddEndpoint(ctx, key, endpoints.Endpoint{Addr: addr}, clientv3.WithLease(lease.ID)); err != nil {
		return nil, fmt.Errorf("discovery: register %s: %w", key, err)
	}
	return keep(c, lease.ID, key, ttl, nil, logger)
}

// Resolver returns a gRPC resolver builder for "etcd:///..." targets.
func Resolver(c *clientv3.Client) (gresolver.Builder, error) {
	b, err := resolver.NewBuilder(c)
	if err != nil {
		return nil, fmt.Errorf("discovery: resolver: %w", err)
	}
	return b, nil
}
