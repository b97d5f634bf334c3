// Package embedded starts in-process stand-ins for laneIM's infrastructure:
// a Kafka-protocol broker (kfake), etcd, and a Redis-protocol server
// (miniredis). The pipeline talks to them over their real protocols on
// loopback, so the code path is the production one. They are meant for
// `laneim dev`, the standalone `laneim broker` and tests; production runs
// real Kafka, etcd and Redis.
package embedded

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/twmb/franz-go/pkg/kfake"
	lua "github.com/yuin/gopher-lua"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// BrokerConfig configures an embedded Kafka-protocol broker.
type BrokerConfig struct {
	// Addr is the host:port to listen on; "127.0.0.1:0" picks a free port.
	Addr string
	// DataDir, when set, persists topics, offsets and consumer groups there
	// and reloads them on start. Empty keeps everything in memory.
	DataDir string
	// SyncWrites fsyncs every produced batch (only with DataDir).
	SyncWrites bool
	// CleanerInterval is how often topics' retention is applied (0: 1s).
	CleanerInterval time.Duration
}

// cleanerInterval is how often the embedded broker applies retention
// unless BrokerConfig says otherwise.
const cleanerInterval = time.Second

// Broker is a running embedded Kafka-protocol broker.
type Broker struct {
	cluster *kfake.Cluster
}

// StartBroker starts a single-node Kafka-protocol broker. Topics are
// created automatically on first use, but callers should create the
// pipeline's topics explicitly: only those survive a crash of a
// persistent broker.
func StartBroker(cfg BrokerConfig) (*Broker, error) {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(1),
		// Topics' retention is applied every cleanerInterval rather than
		// kfake's hourly default: it holds every record in memory, and
		// the delivery topics' byte bound (topics.Deliveries) is what
		// keeps a client paging through large messages from growing it.
		kfake.BrokerConfigs(map[string]string{"log.cleaner.backoff.ms": strconv.FormatInt(cmp.Or(cfg.CleanerInterval, cleanerInterval).Milliseconds(), 10)}),
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			return net.Listen(network, cfg.Addr)
		}),
	}
	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
			return nil, fmt.Errorf("embedded broker: %w", err)
		}
		opts = append(opts, kfake.DataDir(cfg.DataDir))
		if cfg.SyncWrites {
			opts = append(opts, kfake.SyncWrites())
		}
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("embedded broker on %s: %w", cfg.Addr, err)
	}
	return &Broker{cluster: c}, nil
}

// Addrs returns the broker's listen addresses.
func (b *Broker) Addrs() []string { return b.cluster.ListenAddrs() }

// Close stops the broker, saving its state if it persists.
func (b *Broker) Close() { b.cluster.Close() }

// Redis is a running embedded Redis-protocol server (miniredis). It serves
// dev mode only; tests run against a real redis-server.
type Redis struct {
	srv  *miniredis.Miniredis
	ln   net.Listener
	done sync.WaitGroup // the accept loop
}

// Lua state sizes for the embedded Redis: see shrinkLuaStates.
const (
	luaRegistrySize  = 1024 // slots of a state's value stack (gopher-lua: 5,120)
	luaCallStackSize = 64   // call frames (gopher-lua: 256)
)

var smallLuaStates sync.Once

// shrinkLuaStates makes the Lua states miniredis creates smaller.
// miniredis runs each EVAL and EVALSHA in a fresh gopher-lua state, sized
// by gopher-lua's package defaults: ~120 KB of stacks allocated and
// dropped per script call, which was 65 % of everything the dev process
// allocated with 10,000 members at 100 msg/s (the directory's scripts run
// for every message and session), and a tenth of its CPU went to
// collecting it. laneIM's scripts call no deeper than a few frames and
// hold a few dozen values, so smaller states do. miniredis is the only
// user of gopher-lua in the binary, and only dev mode starts it.
func shrinkLuaStates() {
	lua.RegistrySize = luaRegistrySize
	lua.CallStackSize = luaCallStackSize
}

// StartRedis starts an embedded Redis-protocol server on addr
// ("127.0.0.1:0" picks a free port). Its keys expire only when Tick says
// time passed: the caller advances it with the wall clock (dev mode does).
//
// Its connections are accepted here and handed to miniredis with their
// replies coalesced (replyConn): miniredis writes each command's reply
// with a write call of its own, so a pipeline of N commands cost N
// system calls. miniredis also listens on a loopback port of its own,
// which nothing uses.
func StartRedis(addr string) (*Redis, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	smallLuaStates.Do(shrinkLuaStates)
	srv := miniredis.NewMiniRedis()
	if err := srv.StartAddr("127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("embedded redis: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		srv.Close()
		return nil, fmt.Errorf("embedded redis on %s: %w", addr, err)
	}
	r := &Redis{srv: srv, ln: ln}
	r.done.Add(1)
	go r.accept()
	return r, nil
}

// accept hands the connections of r.ln to miniredis until r.ln closes.
func (r *Redis) accept() {
	defer r.done.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.srv.Server().ServeConn(&replyConn{Conn: c})
	}
}

// Addr returns the server's host:port.
func (r *Redis) Addr() string { return r.ln.Addr().String() }

// Tick advances the server's clock by d; miniredis expires keys only when
// told time has passed. Dev mode calls it from a ticker.
func (r *Redis) Tick(d time.Duration) { r.srv.FastForward(d) }

// Close stops the server and closes its connections.
func (r *Redis) Close() {
	r.ln.Close()
	r.done.Wait()
	r.srv.Close()
}

// replyConn is a server's side of a connection whose writes wait while
// the server is answering commands it has already read: they go out
// together when its reader next needs bytes from the client, and at once
// while the reader is waiting for them. miniredis reads a connection in
// one goroutine and answers in another, flushing after every reply; so
// a client's pipeline, read in one go, is answered in about two writes
// instead of one per command, and a lone command as before.
type replyConn struct {
	net.Conn
	mu      sync.Mutex
	reading bool   // the reader is waiting for the client
	pending []byte // replies not written yet
}

// Read writes the replies waiting, then reads from the client.
func (c *replyConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	err := c.flushLocked()
	c.reading = err == nil
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.reading = false
	c.mu.Unlock()
	return n, err
}

// Write writes p, after the replies waiting, if the reader is waiting
// for the client; otherwise it keeps p for the reader's next Read.
func (c *replyConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.reading {
		c.pending = append(c.pending, p...)
		return len(p), nil
	}
	if err := c.flushLocked(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// flushLocked writes the replies waiting; c.mu must be held.
func (c *replyConn) flushLocked() error {
	if len(c.pending) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.pending)
	c.pending = c.pending[:0]
	return err
}

// EtcdConfig configures an embedded etcd.
type EtcdConfig struct {
	// Dir holds etcd's data; required.
	Dir string
	// ClientAddr is the host:port clients connect to ("127.0.0.1:0" is not
	// supported by etcd: pick a port).
	ClientAddr string
	// PeerAddr is the host:port of the (single-member) peer listener.
	PeerAddr string
	// CertFile and KeyFile, PEM, make the client listener speak TLS
	// (https); ClientCAFile then also requires client certificates it
	// signs. The peer listener stays plain (single member, loopback).
	CertFile, KeyFile, ClientCAFile string
	// BcryptCost is the cost of hashing users' passwords (0: etcd's
	// default, 10); tests lower it, since every login of a user then
	// hashes its password again.
	BcryptCost uint
}

// Etcd is a running embedded etcd server.
type Etcd struct {
	e    *embed.Etcd
	stop sync.Once
}

// StartEtcd starts a single-member etcd and waits until it serves.
func StartEtcd(cfg EtcdConfig) (*Etcd, error) {
	if cfg.Dir == "" {
		return nil, errors.New("embedded etcd: no data folder")
	}
	ec := embed.NewConfig()
	ec.Dir = cfg.Dir
	ec.LogLevel = "error"
	if cfg.BcryptCost > 0 {
		ec.BcryptCost = cfg.BcryptCost
	}
	// etcd logs its own shutdown as errors; an embedded one stays quiet.
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	scheme := "http://"
	if cfg.CertFile != "" {
		scheme = "https://"
		ec.ClientTLSInfo.CertFile, ec.ClientTLSInfo.KeyFile = cfg.CertFile, cfg.KeyFile
		if cfg.ClientCAFile != "" {
			ec.ClientTLSInfo.TrustedCAFile, ec.ClientTLSInfo.ClientCertAuth = cfg.ClientCAFile, true
		}
	}
	cu, err := url.Parse(scheme + cfg.ClientAddr)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd: client address: %w", err)
	}
	pu, err := url.Parse("http://" + cfg.PeerAddr)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd: peer address: %w", err)
	}
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	ec.InitialCluster = ec.Name + "=" + pu.String()
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
		return &Etcd{e: e}, nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-time.After(30 * time.Second):
		e.Close()
		return nil, errors.New("embedded etcd: not ready after 30s")
	}
}

// Endpoints returns the client URLs.
func (e *Etcd) Endpoints() []string {
	var out []string
	for _, u := range e.e.Config().ListenClientUrls {
		out = append(out, u.Host)
	}
	return out
}

// Close stops etcd; later calls do nothing.
func (e *Etcd) Close() { e.stop.Do(e.e.Close) }
