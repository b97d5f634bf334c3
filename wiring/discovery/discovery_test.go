package discovery_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/wiring/discovery"
)

func startEtcd(t *testing.T) []string {
	t.Helper()
	return testinfra.Etcd(t).Endpoints()
}

// connect starts an etcd for t and returns a client of it; both end with t.
func connect(t *testing.T) *clientv3.Client {
	t.Helper()
	c, err := discovery.Connect(startEtcd(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestCometsRegisterAndVanish(t *testing.T) {
	c := connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	logger := slog.New(slog.DiscardHandler)
	var busy atomic.Int64
	busy.Store(50)
	r1, err := discovery.RegisterComet(ctx, c, discovery.Comet{ID: "c1", URL: "ws://a/ws"}, 3*time.Second, busy.Load, logger)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := discovery.RegisterComet(ctx, c, discovery.Comet{ID: "c2", URL: "ws://b/ws"}, 3*time.Second, func() int64 { return 10 }, logger)
	if err != nil {
		t.Fatal(err)
	}
	comets, err := discovery.Comets(ctx, c)
	if err != nil || len(comets) != 2 || comets[0].ID != "c2" || comets[0].URL != "ws://b/ws" {
		t.Fatalf("comets = %+v, %v; want c2 (least loaded) first", comets, err)
	}
	// Load is refreshed: c1 becomes the least loaded.
	busy.Store(1)
	testinfra.Eventually(t, 10*time.Second, func() bool {
		comets, _ := discovery.Comets(ctx, c)
		return len(comets) == 2 && comets[0].ID == "c1"
	}, "load of c1 not refreshed")
	// A comet that stops leaves the list.
	if err := r1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if comets, _ := discovery.Comets(ctx, c); len(comets) != 1 || comets[0].ID != "c2" {
		t.Fatalf("after c1 stopped: %+v", comets)
	}
	defer r2.Close(ctx)
}

func TestGRPCClientsResolveServicesThroughEtcd(t *testing.T) {
	c := connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A gRPC service on a random port, known only through etcd.
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	l, addr := testinfra.Listen(t)
	go srv.Serve(l)
	defer srv.Stop()
	reg, err := discovery.RegisterService(ctx, c, "api", addr, 5*time.Second, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close(ctx)
	b, err := discovery.Resolver(c)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(discovery.ServiceTarget("api"), grpc.WithResolvers(b), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	res, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	if err != nil || res.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health through etcd = %v, %v", res, err)
	}
}

// exists reports whether key is in etcd.
func exists(t *testing.T, c *clientv3.Client, key string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count > 0
}

func TestCloseRemovesTheKeyAtOnce(t *testing.T) {
	c := connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A TTL far longer than the test: only the revoke can remove the key.
	r, err := discovery.Register(ctx, c, "/test/close", time.Minute, "v", nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if !exists(t, c, "/test/close") {
		t.Fatal("key not registered")
	}
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if exists(t, c, "/test/close") {
		t.Fatal("key still there after Close")
	}
}

// The entry outlives the context it was registered with (an fx start
// context ends right after start) for as long as the registrant lives, and
// vanishes one TTL after the registrant's etcd client goes away without
// revoking.
func TestRegistrationOutlivesItsContextAndExpiresWhenOrphaned(t *testing.T) {
	eps := startEtcd(t)
	owner, err := discovery.Connect(eps)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	observer, err := discovery.Connect(eps)
	if err != nil {
		t.Fatal(err)
	}
	defer observer.Close()
	const ttl = 2 * time.Second // embedded etcd's minimum lease TTL
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	r, err := discovery.Register(ctx, owner, "/test/orphan", ttl, "v", func() string { return "v" }, slog.New(slog.DiscardHandler))
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * ttl)
	if !exists(t, observer, "/test/orphan") {
		t.Fatal("key expired although its registrant is alive")
	}
	// The registrant's client dies: nothing keeps the lease alive any more.
	owner.Close()
	gone := time.Now()
	testinfra.Eventually(t, 3*ttl, func() bool { return !exists(t, observer, "/test/orphan") }, "orphaned key never expired")
	t.Logf("orphaned key gone after %v", time.Since(gone).Round(100*time.Millisecond))
	if err := r.Close(context.Background()); err == nil {
		t.Error("Close revoked a lease through a closed client")
	}
}

// TestRegistrationComesBackAfterItsLeaseIsLost: when the lease goes (etcd
// was away, or the process frozen, for longer than the TTL; here revoked
// from outside), the entry vanishes and is put again under a new lease,
// for a comet and for a service alike (outside fault check: they stayed
// unregistered while serving).
func TestRegistrationComesBackAfterItsLeaseIsLost(t *testing.T) {
	c := connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	logger := slog.New(slog.DiscardHandler)
	const ttl = 2 * time.Second
	comet, err := discovery.RegisterComet(ctx, c, discovery.Comet{ID: "c1", URL: "ws://a/ws"}, ttl, func() int64 { return 1 }, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer comet.Close(ctx)
	service, err := discovery.RegisterService(ctx, c, "api", "127.0.0.1:1", ttl, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer service.Close(ctx)
	for _, key := range []string{"/laneim/comets/c1", "laneim/services/api/127.0.0.1:1"} {
		resp, err := c.Get(ctx, key)
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("%s: %v, %v", key, resp, err)
		}
		lost := clientv3.LeaseID(resp.Kvs[0].Lease)
		if _, err := c.Revoke(ctx, lost); err != nil {
			t.Fatal(err)
		}
		testinfra.Eventually(t, 10*time.Second, func() error {
			resp, err := c.Get(ctx, key)
			switch {
			case err != nil:
				return err
			case len(resp.Kvs) == 0:
				return fmt.Errorf("%s not registered again", key)
			case clientv3.LeaseID(resp.Kvs[0].Lease) == lost:
				return fmt.Errorf("%s still under the revoked lease", key)
			}
			return nil
		}, "the entry put again under a new lease")
	}
	if err := comet.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if exists(t, c, "/laneim/comets/c1") {
		t.Error("the entry outlived Close after a renewal")
	}
}
