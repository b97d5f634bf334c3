// Package apptest starts a whole laneIM cluster in the test's process, for
// tests of clients: every worker, the comet and the api gateway against
// an in-process kfake broker and a real redis-server, seeded with the demo
// directory. To see a client reconnect, a test can stop and start the
// comet, or cut a Proxy in front of it.
package apptest

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/fx"

	"github.com/laneim/laneim/gateways/api"
	"github.com/laneim/laneim/gateways/comet"
	"github.com/laneim/laneim/internal/app"
	"github.com/laneim/laneim/internal/seed"
	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/apipb"
	"github.com/laneim/laneim/wiring"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/workers/login"
)

// Cluster is a running cluster; t's cleanup stops it. The comet runs
// apart from the other roles, so that a test can stop and start it.
type Cluster struct {
	t        testing.TB
	Settings app.Settings
	// URL is the comet's WebSocket URL.
	URL string

	logger *slog.Logger
	cometS app.Settings // the comet's: its own admin address
	idle   time.Duration
	etcd   bool
	comet  *fx.App // nil while stopped
}

// Option changes a Cluster before it starts.
type Option func(*Cluster)

// IdleTimeout sets the comet's idle timeout (default 60 s), which
// app.Settings does not carry.
func IdleTimeout(d time.Duration) Option { return func(c *Cluster) { c.idle = d } }

// WithEtcd runs an embedded etcd for the cluster: the comet registers
// there and the api gateway's PickComet answers.
func WithEtcd() Option { return func(c *Cluster) { c.etcd = true } }

// Start runs every role against fresh infrastructure and the demo seed.
// tune, if not nil, changes the settings first.
func Start(t testing.TB, tune func(*app.Settings), opts ...Option) *Cluster {
	t.Helper()
	kcfg := testinfra.Kafka(t)
	s := app.Settings{
		Kafka:         strings.Join(kcfg.Brokers, ","),
		Redis:         testinfra.Redis(t),
		Secret:        "apptest-secret-of-the-client-tests",
		APIToken:      "apptest-api-token",
		CometID:       "c1",
		CometAddr:     testinfra.FreeAddr(t),
		APIAddr:       testinfra.FreeAddr(t),
		SessionTTL:    30 * time.Second,
		NotifyLimit:   200,
		MaxBodyBytes:  16 << 10,
		BatchWindow:   10 * time.Millisecond,
		SendQueue:     256,
		MaxFrameBytes: 64 << 10,
		RequestRate:   -1,
		UserSendRate:  -1, // clients' tests send as fast as answered
		LogLevel:      "error",
		History:       filepath.Join(t.TempDir(), "history.db"),
		AdminAddr:     testinfra.FreeAddr(t),
	}
	if tune != nil {
		tune(&s)
	}
	c := &Cluster{t: t, logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, o := range opts {
		o(c)
	}
	if c.etcd {
		s.Etcd = strings.Join(testinfra.Etcd(t).Endpoints(), ",")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rdb, err := wiring.NewRedis(ctx, s.Infra().Redis)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	sd, err := seed.Load(testinfra.DemoSeed())
	if err != nil {
		t.Fatal(err)
	}
	if err := sd.Apply(ctx, directory.New(rdb)); err != nil {
		t.Fatal(err)
	}
	roles := append(append([]app.Role{}, app.Workers...), app.API)
	if err := s.Validate(append(roles, app.Comet)...); err != nil {
		t.Fatal(err)
	}
	a := testinfra.StartOnFreePorts(t, ctx,
		func() *fx.App { return fx.New(s.Options(c.logger, roles...)) },
		func() { s.APIAddr, s.AdminAddr = testinfra.FreeAddr(t), testinfra.FreeAddr(t) })
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := a.Stop(ctx); err != nil {
			t.Errorf("stop cluster: %v", err)
		}
	})
	c.Settings, c.URL, c.cometS = s, "ws://"+s.CometAddr+"/ws", s
	c.cometS.AdminAddr = testinfra.FreeAddr(t)
	// The first start may draw the comet's addresses again; a restart
	// (StartComet) keeps the address its clients know.
	c.comet = testinfra.StartOnFreePorts(t, ctx, c.cometApp, func() {
		c.cometS.CometAddr, c.cometS.AdminAddr = testinfra.FreeAddr(t), testinfra.FreeAddr(t)
		c.Settings.CometAddr, c.URL = c.cometS.CometAddr, "ws://"+c.cometS.CometAddr+"/ws"
	})
	t.Cleanup(c.StopComet) // before the other roles: cleanups run last first
	return c
}

// StartComet starts the comet (again, at the same address and with the
// same id, as a restarted process would).
func (c *Cluster) StartComet() {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a := c.cometApp()
	if err := a.Start(ctx); err != nil {
		c.t.Fatalf("start comet: %v", err)
	}
	c.comet = a
}

// cometApp is the comet's process, not started.
func (c *Cluster) cometApp() *fx.App {
	idle := c.idle
	return fx.New(c.cometS.Options(c.logger, app.Comet), fx.Decorate(func(cfg comet.Config) comet.Config {
		if idle > 0 {
			cfg.IdleTimeout = idle
		}
		return cfg
	}))
}

// MoveComet makes the comets StartComet starts from now on another one:
// id, on a fresh address; it returns its WebSocket URL. The cluster's URL
// stays the first comet's.
func (c *Cluster) MoveComet(id string) string {
	c.cometS.CometID = id
	c.cometS.CometAddr = testinfra.FreeAddr(c.t)
	c.cometS.AdminAddr = testinfra.FreeAddr(c.t)
	return "ws://" + c.cometS.CometAddr + "/ws"
}

// StopComet shuts the comet down as a stopped process does: its clients
// are closed with 1001 (going away). It does nothing if it is stopped.
func (c *Cluster) StopComet() {
	c.t.Helper()
	if c.comet == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.comet.Stop(ctx); err != nil {
		c.t.Errorf("stop comet: %v", err)
	}
	c.comet = nil
}

// Token mints a login token for user, valid for an hour.
func (c *Cluster) Token(user string) string {
	c.t.Helper()
	tok, err := login.MintToken([]byte(c.Settings.Secret), user, time.Hour)
	if err != nil {
		c.t.Fatal(err)
	}
	return tok
}

// PutUser creates or changes a user through the api gateway's Directory,
// failing the test on error.
func (c *Cluster) PutUser(u *apipb.PutUserRequest) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dc, closer, err := api.DialDirectory(ctx, c.Settings.APIAddr, c.Settings.APIToken)
	if err != nil {
		c.t.Fatal(err)
	}
	defer closer.Close()
	if _, err := dc.PutUser(ctx, u); err != nil {
		c.t.Fatalf("put user %s: %v", u.GetUser(), err)
	}
}

// Proxy forwards TCP connections to the comet. Cut drops every connection
// through it, as a comet or network going away would, and refuses new
// ones until Restore. t's cleanup stops it and its goroutines.
type Proxy struct {
	// URL is the WebSocket URL through the proxy.
	URL string

	target string
	ln     net.Listener
	wg     sync.WaitGroup

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]bool
}

// Proxy starts a proxy in front of the cluster's comet.
func (c *Cluster) Proxy() *Proxy {
	c.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.t.Fatal(err)
	}
	p := &Proxy{URL: "ws://" + ln.Addr().String() + "/ws", target: c.Settings.CometAddr, ln: ln, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.accept()
	c.t.Cleanup(func() {
		ln.Close()
		p.Cut()
		p.wg.Wait()
	})
	return p
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			in.Close()
			continue
		}
		p.conns[in] = true
		p.mu.Unlock()
		p.wg.Add(1)
		go p.serve(in)
	}
}

func (p *Proxy) serve(in net.Conn) {
	defer p.wg.Done()
	out, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		in.Close()
		return
	}
	p.mu.Lock()
	if !p.conns[in] { // cut meanwhile
		p.mu.Unlock()
		in.Close()
		out.Close()
		return
	}
	p.conns[out] = true
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(out, in)
	go pipe(in, out)
	<-done
	in.Close()
	out.Close()
	<-done
	p.mu.Lock()
	delete(p.conns, in)
	delete(p.conns, out)
	p.mu.Unlock()
}

// Cut closes every connection through the proxy and refuses new ones.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

// Restore accepts connections again.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}
