// Package embedded starts in-process stand-ins for laneIM's infrastructure:
// a Kafka-protocol broker (kfake), etcd, and a Redis-protocol server
// (miniredis). The pipeline talks to them over their real protocols on
// loopback, so the code path is the production one. They are meant for
// `laneim dev`, the standalone `laneim broker` and tests; production runs
// real Kafka, etcd and Redis.
package embedded

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/twmb/franz-go/pkg/kfake"
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
}

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
	srv *miniredis.Miniredis
}

// StartRedis starts an embedded Redis-protocol server on addr
// ("127.0.0.1:0" picks a free port). Its keys expire only when Tick says
// time passed: the caller advances it with the wall clock (dev mode does).
func StartRedis(addr string) (*Redis, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	srv := miniredis.NewMiniRedis()
	if err := srv.StartAddr(addr); err != nil {
		return nil, fmt.Errorf("embedded redis on %s: %w", addr, err)
	}
	return &Redis{srv: srv}, nil
}

// Addr returns the server's host:port.
func (r *Redis) Addr() string { return r.srv.Addr() }

// Tick advances the server's clock by d; miniredis expires keys only when
// told time has passed. Dev mode calls it from a ticker.
func (r *Redis) Tick(d time.Duration) { r.srv.FastForward(d) }

// Close stops the server.
func (r *Redis) Close() { r.srv.Close() }

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
	e *embed.Etcd
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

// Close stops etcd.
func (e *Etcd) Close() { e.e.Close() }
