// Package app assembles laneIM processes: it turns flags and environment
// into configuration and builds the fx application of each role (a worker,
// the comet or api gateway, or all of them in dev mode).
package app

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/laneim/laneim/wiring"
	"github.com/laneim/laneim/wiring/auth"
	"github.com/laneim/laneim/wiring/discovery"
	"github.com/laneim/laneim/wiring/secure"
)

// Settings is every setting a laneIM process reads. Each has a flag
// (--kafka) and an environment variable (LANEIM_KAFKA); a flag given on the
// command line wins over the environment.
type Settings struct {
	Kafka              string
	Redis              string
	RedisCluster       bool
	RedisPassword      string
	Secret             string
	TokenIssuer        string
	TokenAudience      string
	TokenMaxLifetime   time.Duration
	TokenClockSkew     time.Duration
	APIToken           string
	CometID            string
	CometAddr          string
	APIAddr            string
	APIHTTPAddr        string
	APIMySQL           string
	SessionTTL         time.Duration
	NotifyLimit        int
	RoomReadReceipts   bool
	LoginConvLimit     int
	PresenceWindow     time.Duration
	MaxBodyBytes       int
	EditWindow         time.Duration
	RecallWindow       time.Duration
	BatchWindow        time.Duration
	SendQueue          int
	RequestTimeout     time.Duration
	MaxReadsInFlight   int
	RecentBytes        int
	RequestRate        float64
	RequestBurst       int
	SendBurst          int
	MaxConnsPerUser    int
	MaxSessionsPerUser int
	UserSendRate       float64
	UserSendBurst      int
	MaxConnsPerAddr    int
	MaxQueuedBytes     int64
	FrameBudget        int
	MaxBatchWindow     time.Duration
	Procs              int
	MaxFrameBytes      int
	MySQL              string
	History            string
	Scylla             string
	ScyllaKeyspace     string
	ScyllaConsistency  string
	RetainRoom         time.Duration
	RetainDirect       time.Duration
	RetainBroadcast    time.Duration
	AdminAddr          string
	Pprof              bool
	Etcd               string
	CometURL           string
	LogLevel           string
	// ConnectTimeout bounds the start-up check of each dependency (and
	// the readiness checks).
	ConnectTimeout time.Duration

	// Securing the links (docs/security.md, "Securing the links").
	KafkaTLS           bool
	KafkaCA            string
	KafkaCert          string
	KafkaKey           string
	KafkaServerName    string
	KafkaSASLMechanism string
	KafkaSASLUser      string
	KafkaSASLPassword  string
	RedisUser          string
	RedisTLS           bool
	RedisCA            string
	RedisCert          string
	RedisKey           string
	RedisServerName    string
	EtcdCA             string
	EtcdCert           string
	EtcdKey            string
	EtcdServerName     string
	EtcdUser           string
	EtcdPassword       string
	APITLSCert         string
	APITLSKey          string
	APIClientCA        string
	CometTLSCert       string
	CometTLSKey        string
}

// Register defines the flags of s on fs, with defaults.
func (s *Settings) Register(fs *flag.FlagSet) {
	fs.StringVar(&s.Kafka, "kafka", "", "Kafka brokers, comma-separated host:port")
	fs.StringVar(&s.Redis, "redis", "", "Redis address(es), comma-separated; several mean a Cluster")
	fs.BoolVar(&s.RedisCluster, "redis-cluster", false, "treat a single Redis address as a Cluster seed")
	fs.StringVar(&s.RedisPassword, "redis-password", "", "Redis password")
	fs.StringVar(&s.Secret, "secret", "", "HMAC secret that signs login tokens (HS256 JWT), which comets verify; at least 32 bytes, not a placeholder")
	fs.StringVar(&s.TokenIssuer, "token-issuer", "", "comet: when set, a login token's \"iss\" must be this")
	fs.StringVar(&s.TokenAudience, "token-audience", "", "comet: when set, a login token's \"aud\" must include this")
	fs.DurationVar(&s.TokenMaxLifetime, "token-max-lifetime", 24*time.Hour, "comet: longest a login token may live (exp - iat); an exp further ahead is refused (0: the default)")
	fs.DurationVar(&s.TokenClockSkew, "token-clock-skew", 30*time.Second, "comet: how far a login token's iat/nbf may be ahead of this clock (never extends exp; 0: the default, negative: none)")
	fs.StringVar(&s.APIToken, "api-token", "", "bearer token the api gateway requires")
	fs.StringVar(&s.CometID, "comet-id", "", "this comet's stable id (its delivery topic is deliver.<id>)")
	fs.StringVar(&s.CometAddr, "comet-addr", "127.0.0.1:8080", "comet WebSocket listen address")
	fs.StringVar(&s.APIAddr, "api-addr", "127.0.0.1:9090", "api gateway gRPC listen address")
	fs.StringVar(&s.APIMySQL, "api-mysql", "", "api gateway: DSN of a MySQL user that may write users, rooms, room_members and blocks: the Directory service then changes MySQL (without it, and with --mysql, it is refused)")
	fs.StringVar(&s.APIHTTPAddr, "api-http-addr", "127.0.0.1:9091", "api gateway HTTP/JSON listen address (docs/http-api.md; empty: none)")
	fs.DurationVar(&s.SessionTTL, "session-ttl", 30*time.Second, "a session without heartbeat for this long expires")
	fs.IntVar(&s.NotifyLimit, "notify-limit", 200, "rooms with more online users get no per-user presence frames, typing indicators or read receipts")
	fs.BoolVar(&s.RoomReadReceipts, "room-read-receipts", false, "history: tell a room's members (within --notify-limit) when one of them reads further")
	fs.DurationVar(&s.PresenceWindow, "presence-window", time.Second, "presence: at most one PresenceChange per (room, user) per window, the last state winning (negative: every change)")
	fs.IntVar(&s.LoginConvLimit, "login-conversations", 1000, "presence: most conversations a LoginResult lists (rooms, then the most recent 1:1); clients page through the rest")
	fs.IntVar(&s.MaxBodyBytes, "max-body", 16<<10, "largest message body accepted, bytes")
	fs.DurationVar(&s.EditWindow, "edit-window", 24*time.Hour, "routing: how long after a message its sender may edit it (at most 24h)")
	fs.DurationVar(&s.RecallWindow, "recall-window", 2*time.Minute, "routing: how long after a message its sender may recall it (at most 24h)")
	fs.DurationVar(&s.BatchWindow, "batch-window", 10*time.Millisecond, "comet: merge a room's messages arriving within this window")
	fs.IntVar(&s.SendQueue, "send-queue", 256, "comet: frames queued per connection before it is dropped as a slow consumer")
	fs.Float64Var(&s.RequestRate, "request-rate", 20, "comet: frames a connection may send a second (negative: no limit); more get RATE_LIMITED")
	fs.IntVar(&s.MaxConnsPerUser, "max-conns-per-user", 100, "comet: connections one user may have on a comet (negative: no limit); a login past it gets RATE_LIMITED and is closed")
	fs.IntVar(&s.MaxSessionsPerUser, "max-sessions-per-user", 100, "presence: sessions one user may have across the cluster, all comets together (negative: no limit); a login past it gets RATE_LIMITED and is closed")
	fs.Float64Var(&s.UserSendRate, "user-send-rate", 50, "routing: messages (sends, edits, recalls) one user may submit a second across the cluster, all connections together (negative: no limit); more get RATE_LIMITED")
	fs.IntVar(&s.UserSendBurst, "user-send-burst", 100, "routing: messages one user may submit at once within its --user-send-rate")
	fs.Int64Var(&s.MaxQueuedBytes, "max-queued-bytes", 512<<20, "comet: bytes queued to all its connections together (a room's frame counts once per member); past it the largest queues are closed as slow consumers (negative: no limit)")
	fs.IntVar(&s.MaxConnsPerAddr, "max-conns-per-address", 1000, "comet: connections from one client address (IPv6: one /64) on a comet, loopback exempt (negative: no limit, e.g. behind a proxy); more are refused with HTTP 429")
	fs.IntVar(&s.RequestBurst, "request-burst", 50, "comet: frames a connection may send at once within its --request-rate")
	fs.IntVar(&s.SendBurst, "send-burst", 5, "comet: messages (sends, edits, recalls) one user may send at once on a comet within its --request-rate (negative: only --request-burst)")
	fs.DurationVar(&s.RequestTimeout, "request-timeout", 5*time.Second, "comet: a request the pipeline has not answered by then is answered UNAVAILABLE by the comet")
	fs.IntVar(&s.RecentBytes, "recent-bytes", 64<<20, "comet: bytes of the latest messages its rooms keep, to answer most of a room's catch-up without the history worker (negative: none)")
	fs.IntVar(&s.MaxReadsInFlight, "max-reads-in-flight", 256, "comet: history reads (Sync, Conversations) of all its connections waiting for an answer; one more is answered UNAVAILABLE with retry_after_ms (negative: no bound)")
	fs.IntVar(&s.FrameBudget, "frame-budget", 60000, "comet: frames a second a busy room may cost; a room of N local members flushes at most budget/N times a second")
	fs.DurationVar(&s.MaxBatchWindow, "max-batch-window", 500*time.Millisecond, "comet: the longest a busy room's messages wait to be merged")
	fs.IntVar(&s.Procs, "procs", 0, "Go scheduler threads (GOMAXPROCS); 0: four times Go's default (at most 32) for a process that runs a comet, Go's default otherwise")
	fs.IntVar(&s.MaxFrameBytes, "max-frame", 64<<10, "comet: largest client frame, bytes (larger closes with 1009)")
	fs.StringVar(&s.MySQL, "mysql", "", "system of record for binlogsync: mysql://user:password@host:port/database[?flavor=mariadb&server_id=1001]")
	fs.StringVar(&s.History, "history", "", "embedded history store file (bbolt), for persist, history and the api gateway's History")
	fs.StringVar(&s.Scylla, "scylla", "", "Scylla/Cassandra contact points for the history store, comma-separated host:port (instead of --history)")
	fs.StringVar(&s.ScyllaKeyspace, "scylla-keyspace", "laneim", "Scylla keyspace")
	fs.StringVar(&s.ScyllaConsistency, "scylla-consistency", "LOCAL_QUORUM", "Scylla consistency of reads and writes")
	fs.DurationVar(&s.RetainRoom, "retain-room", 0, "keep room messages this long (0: forever)")
	fs.DurationVar(&s.RetainDirect, "retain-dm", 0, "keep 1:1 messages this long (0: forever)")
	fs.DurationVar(&s.RetainBroadcast, "retain-broadcast", 7*24*time.Hour, "keep broadcasts this long (0: forever)")
	fs.StringVar(&s.Etcd, "etcd", "", "etcd endpoints, comma-separated: comets and the api gateway register there")
	fs.StringVar(&s.CometURL, "comet-url", "", "the WebSocket URL clients use for this comet, registered in etcd (default ws://<comet-addr>/ws)")
	fs.StringVar(&s.AdminAddr, "admin-addr", "", "serve /metrics, /healthz and /readyz on this address (empty: none)")
	fs.BoolVar(&s.Pprof, "pprof", false, "also serve Go's profiling endpoints /debug/pprof/ on --admin-addr")
	fs.StringVar(&s.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.DurationVar(&s.ConnectTimeout, "connect-timeout", 10*time.Second, "at start, give up on a dependency (Kafka, Redis, etcd, MySQL, Scylla) that does not answer within this")

	// Securing the links. A CA or client certificate turns TLS on by itself.
	fs.BoolVar(&s.KafkaTLS, "kafka-tls", false, "connect to Kafka over TLS (the system's roots unless --kafka-ca)")
	fs.StringVar(&s.KafkaCA, "kafka-ca", "", "PEM file of the CAs that sign the Kafka brokers' certificates (implies --kafka-tls)")
	fs.StringVar(&s.KafkaCert, "kafka-cert", "", "PEM client certificate for Kafka (mutual TLS; with --kafka-key)")
	fs.StringVar(&s.KafkaKey, "kafka-key", "", "PEM key of --kafka-cert")
	fs.StringVar(&s.KafkaServerName, "kafka-server-name", "", "name the Kafka brokers' certificates must carry (default: the host dialled)")
	fs.StringVar(&s.KafkaSASLMechanism, "kafka-sasl-mechanism", "", "SASL to Kafka: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (empty: none)")
	fs.StringVar(&s.KafkaSASLUser, "kafka-sasl-user", "", "SASL user for Kafka")
	fs.StringVar(&s.KafkaSASLPassword, "kafka-sasl-password", "", "SASL password for Kafka (prefer LANEIM_KAFKA_SASL_PASSWORD: a flag shows in ps)")
	fs.StringVar(&s.RedisUser, "redis-user", "", "Redis ACL user (with --redis-password; empty: the default user)")
	fs.BoolVar(&s.RedisTLS, "redis-tls", false, "connect to Redis over TLS (the system's roots unless --redis-ca)")
	fs.StringVar(&s.RedisCA, "redis-ca", "", "PEM file of the CAs that sign Redis's certificates (implies --redis-tls)")
	fs.StringVar(&s.RedisCert, "redis-cert", "", "PEM client certificate for Redis (tls-auth-clients; with --redis-key)")
	fs.StringVar(&s.RedisKey, "redis-key", "", "PEM key of --redis-cert")
	fs.StringVar(&s.RedisServerName, "redis-server-name", "", "name Redis's certificates must carry (default: the host dialled)")
	fs.StringVar(&s.EtcdCA, "etcd-ca", "", "PEM file of the CAs that sign etcd's certificates (turns TLS on)")
	fs.StringVar(&s.EtcdCert, "etcd-cert", "", "PEM client certificate for etcd (--client-cert-auth; with --etcd-key)")
	fs.StringVar(&s.EtcdKey, "etcd-key", "", "PEM key of --etcd-cert")
	fs.StringVar(&s.EtcdServerName, "etcd-server-name", "", "name etcd's certificate must carry (default: the host dialled)")
	fs.StringVar(&s.EtcdUser, "etcd-user", "", "etcd user (etcd auth enabled; with --etcd-password)")
	fs.StringVar(&s.EtcdPassword, "etcd-password", "", "etcd password (prefer LANEIM_ETCD_PASSWORD)")
	fs.StringVar(&s.APITLSCert, "api-tls-cert", "", "api gateway: serve gRPC over TLS with this PEM certificate (with --api-tls-key)")
	fs.StringVar(&s.APITLSKey, "api-tls-key", "", "api gateway: PEM key of --api-tls-cert")
	fs.StringVar(&s.APIClientCA, "api-client-ca", "", "api gateway: require client certificates signed by these PEM CAs (mutual TLS)")
	fs.StringVar(&s.CometTLSCert, "comet-tls-cert", "", "comet: serve wss:// with this PEM certificate (with --comet-tls-key; empty: ws://, e.g. behind a TLS proxy)")
	fs.StringVar(&s.CometTLSKey, "comet-tls-key", "", "comet: PEM key of --comet-tls-cert")
}

// Parse parses args into fs, then fills every flag not given on the command
// line from its LANEIM_ environment variable.
func Parse(fs *flag.FlagSet, args []string) error {
	if err := ParseArgs(fs, args); err != nil {
		return err
	}
	return FromEnv(fs)
}

// FromEnv fills every flag of fs not given on the command line, and read
// by one of parts (FlagUsedBy; no parts: every flag), from its LANEIM_
// environment variable.
func FromEnv(fs *flag.FlagSet, parts ...string) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || len(parts) > 0 && !FlagUsedBy(f.Name, parts...) {
			return
		}
		env := EnvName(f.Name)
		if v, ok := os.LookupEnv(env); ok {
			if err := f.Value.Set(v); err != nil {
				if sensitive(f.Name) {
					errs = append(errs, fmt.Errorf("%s: invalid value (not shown)", env))
				} else {
					errs = append(errs, fmt.Errorf("%s=%q: %w", env, v, err))
				}
			}
		}
	})
	return errors.Join(errs...)
}

// FlagError is a command line the flag package refused (and printed,
// with the command's usage).
type FlagError struct{ Err error }

func (e *FlagError) Error() string { return e.Err.Error() }
func (e *FlagError) Unwrap() error { return e.Err }

// ParseArgs is fs.Parse with its errors, but flag.ErrHelp, as *FlagError.
func ParseArgs(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		return &FlagError{err}
	}
	return err
}

// sensitive reports a flag whose value may hold a credential, never to be
// echoed in an error or a log line.
func sensitive(flagName string) bool {
	for _, w := range []string{"secret", "password", "token", "mysql", "dsn", "key"} {
		if strings.Contains(flagName, w) && flagName != "token-max-lifetime" && flagName != "token-clock-skew" {
			return true
		}
	}
	return false
}

// EnvName is the environment variable of a flag: --redis-cluster is
// LANEIM_REDIS_CLUSTER.
func EnvName(flagName string) string {
	return "LANEIM_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Infra returns the infrastructure configuration.
func (s *Settings) Infra() wiring.Config {
	return wiring.Config{
		Kafka: wiring.KafkaConfig{
			Brokers:  splitList(s.Kafka),
			ClientID: "laneim",
			TLS:      secure.TLS{Enabled: s.KafkaTLS, CA: s.KafkaCA, Cert: s.KafkaCert, Key: s.KafkaKey, ServerName: s.KafkaServerName},
			SASL:     wiring.KafkaSASL{Mechanism: s.KafkaSASLMechanism, User: s.KafkaSASLUser, Password: s.KafkaSASLPassword},
		},
		Redis: wiring.RedisConfig{
			Addrs: splitList(s.Redis), Cluster: s.RedisCluster,
			Username: s.RedisUser, Password: s.RedisPassword,
			TLS: secure.TLS{Enabled: s.RedisTLS, CA: s.RedisCA, Cert: s.RedisCert, Key: s.RedisKey, ServerName: s.RedisServerName},
		},
		AdminAddr: s.AdminAddr,
		Pprof:     s.Pprof,
	}
}

// TokenPolicy returns the token checks of the comet, which verifies
// login tokens.
func (s *Settings) TokenPolicy() auth.Policy {
	return auth.Policy{Issuer: s.TokenIssuer, Audience: s.TokenAudience, MaxLifetime: s.TokenMaxLifetime, ClockSkew: s.TokenClockSkew}
}

// Discovery returns the etcd client configuration.
func (s *Settings) Discovery() discovery.Config {
	return discovery.Config{
		Endpoints: splitList(s.Etcd),
		TLS:       secure.TLS{CA: s.EtcdCA, Cert: s.EtcdCert, Key: s.EtcdKey, ServerName: s.EtcdServerName},
		Username:  s.EtcdUser,
		Password:  s.EtcdPassword,
	}
}

// Logger returns the process's structured logger on stderr.
func (s *Settings) Logger() *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(s.LogLevel)); err != nil {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// SetProcs sets the Go scheduler's thread count (GOMAXPROCS) for a process
// that runs a comet (comet is true) or not: --procs when given, otherwise
// four times Go's default (at most 32) for a comet, and Go's default for
// the rest.
//
// Why: a comet's fan-out keeps every scheduler thread busy writing to
// sockets in bursts, and Go checks for goroutines readied by the network
// only when a thread runs out of work (or every 10ms). With as many
// threads as cores, the pipeline's goroutines waiting on Kafka and Redis
// replies then wait up to 10ms per reply behind the comet's writers. More
// threads than cores let the kernel time-slice them, so a reply is picked
// up at once. Measured with `laneim bench --members 1000 --rate 200`
// (embedded default, 2 cores): p50 2.9s with GOMAXPROCS=2, 0.24-0.34s with
// 4-8.
func (s *Settings) SetProcs(comet bool) {
	switch {
	case s.Procs > 0:
		runtime.GOMAXPROCS(s.Procs)
	case comet:
		runtime.GOMAXPROCS(NetworkProcs())
	}
}

// CometGCPercent is the garbage collector's target (GOGC) of a process
// that runs a comet and no worker, unless GOGC is set.
const CometGCPercent = 50

// SetCometGC sets the garbage collector's target to CometGCPercent when
// GOGC is not set in the environment.
//
// Why: a comet's heap is mostly its connections' state, which lives as
// long as they do, and it allocates little per message (a room's frame is
// encoded once), so collections are rare and cheap; with Go's default of
// 100 the heap may grow to twice what is live before one, and that
// headroom was most of an idle connection's resident memory. Measured on
// the multi-process cluster (comet-1 alone, 10,000 members, two runs
// each, 2 shared cores): 10.8-11.3 KB of RSS per idle connection and
// 11.3-11.8 KB at 50 msg/s with GOGC=100; 9.2-9.4 and 8.0-8.3 KB with 50,
// at 0.82-0.84 µs of comet CPU per delivery against 0.88 (within noise).
// The embedded dev cluster, whose workers allocate for every message,
// keeps Go's default.
func SetCometGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(CometGCPercent)
	}
}

// NetworkProcs is the thread count for a process whose goroutines mostly
// wait on the network while others write in bursts (a comet, a load
// generator): four times Go's default, which follows the CPUs and a
// container's CPU quota, at most 32 and never below the default.
func NetworkProcs() int {
	n := runtime.GOMAXPROCS(0)
	return max(n, min(4*n, 32))
}
