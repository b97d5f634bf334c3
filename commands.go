package main

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"time"

	"go.uber.org/fx"

	"github.com/laneim/laneim/internal/app"
	"github.com/laneim/laneim/internal/embedded"
	"github.com/laneim/laneim/internal/seed"
	"github.com/laneim/laneim/wiring"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/workers/binlogsync"
	"github.com/laneim/laneim/workers/login"
)

// demoSeed is testdata/seed.json, the demo directory of dev mode and
// `laneim seed`: the binary needs no repository to run them.
//
//go:embed testdata/seed.json
var demoSeed []byte

// builtinSeed is the --seed value that means demoSeed.
const builtinSeed = "builtin"

// Defaults of dev mode; production has none and must be configured.
const (
	devSecret   = "laneim-dev-secret-public-do-not-deploy"
	devAPIToken = "laneim-dev-api-token"
)

// devAdminAddr is where dev mode serves /metrics, /healthz and /readyz
// unless --admin-addr or LANEIM_ADMIN_ADDR says otherwise.
const devAdminAddr = "127.0.0.1:9100"

func runDev(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	var cfg app.DevConfig
	// Dev mode runs its own Kafka and Redis: their flags are not offered.
	cfg.Settings.RegisterFor(fs, slices.DeleteFunc(app.PartsOfRoles(append(app.Workers, app.Comet, app.API, app.Binlog)...),
		func(p string) bool { return p == app.PartKafka || p == app.PartRedis })...)
	fs.StringVar(&cfg.KafkaAddr, "kafka-addr", "127.0.0.1:9092", "embedded Kafka-protocol broker listen address")
	fs.StringVar(&cfg.RedisAddr, "redis-addr", "127.0.0.1:16379", "embedded Redis-protocol server listen address")
	fs.StringVar(&cfg.EtcdAddr, "etcd-addr", "127.0.0.1:12379", "embedded etcd client address (peer: next port); empty: no etcd")
	fs.StringVar(&cfg.DataDir, "data", ".run/dev", "folder for the history store and etcd's data; kept across restarts (empty: a temporary folder)")
	// Dev mode serves its admin endpoints unless told otherwise, and
	// fills these when they are empty (below and app.StartDev): -h says
	// so.
	for name, def := range map[string]string{
		"admin-addr": devAdminAddr, "secret": devSecret, "api-token": devAPIToken,
		"comet-id": "comet-1", "history": "DATA/msgstore.db, DATA being --data",
	} {
		fs.Lookup(name).DefValue = def
	}
	fs.StringVar(&cfg.Seed, "seed", builtinSeed, "demo directory (users, rooms) to load: a JSON file, or "+builtinSeed+" (testdata/seed.json, compiled in); empty: none")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: laneim dev [flags]\n\nDev mode runs its own Kafka and Redis (--kafka-addr, --redis-addr): --kafka and --redis\nbelong to `laneim worker`, `comet` and `api`. It runs its own etcd too (--etcd-addr);\n--etcd registers its comet and api gateway in another one instead (with --etcd-addr \"\" to run none).")
		fs.PrintDefaults()
	}
	if err := app.Parse(fs, args); err != nil {
		return err
	}
	if cfg.Seed == builtinSeed {
		cfg.SeedData = demoSeed
	}
	if cfg.Settings.Secret == "" {
		cfg.Settings.Secret = devSecret
	}
	if cfg.Settings.APIToken == "" {
		cfg.Settings.APIToken = devAPIToken
	}
	if !flagGiven(fs, "admin-addr") && os.Getenv(app.EnvName("admin-addr")) == "" {
		cfg.Settings.AdminAddr = devAdminAddr
	}
	// In one process the comet cannot die without presence: sessions need
	// heartbeats only to survive, so dev mode sends them four times less
	// often than a cluster's default. With the embedded Redis each
	// session's refresh is a Lua call that costs ~0.1ms: 10,000 members
	// every 10s took a third of what the pipeline could carry.
	if !flagGiven(fs, "session-ttl") && os.Getenv(app.EnvName("session-ttl")) == "" {
		cfg.Settings.SessionTTL = 2 * time.Minute
	}
	cfg.Settings.SetProcs(true)
	logger := cfg.Settings.Logger()
	d, err := app.StartDev(ctx, cfg, logger)
	if err != nil {
		return err
	}
	d.PrintWelcome(os.Stdout)
	<-ctx.Done()
	fmt.Fprintln(os.Stderr, "\nlaneim dev: shutting down")
	stopCtx, cancel := context.WithTimeout(context.Background(), stopWithin)
	defer cancel()
	return d.Close(stopCtx)
}

// cometOnly reports whether roles run a comet and no pipeline worker
// (the api gateway may run beside it): see app.SetCometGC.
func cometOnly(roles []app.Role) bool {
	if !slices.Contains(roles, app.Comet) {
		return false
	}
	for _, r := range roles {
		if r != app.Comet && r != app.API {
			return false
		}
	}
	return true
}

// runRoles runs a process of the given roles until ctx ends.
func runRoles(ctx context.Context, s *app.Settings, roles ...app.Role) error {
	if err := s.Validate(roles...); err != nil {
		return err
	}
	s.SetProcs(slices.Contains(roles, app.Comet))
	if cometOnly(roles) {
		app.SetCometGC()
	}
	logger := s.Logger()
	app.QuietRedis(logger)
	// Every dependency answers within --connect-timeout, or the process
	// stops with one line naming it, before fx builds anything.
	if err := app.CheckDependencies(ctx, s.ConnectTimeout, s.Dependencies(roles...)); err != nil {
		return interrupted(ctx, err)
	}
	// fx builds and starts the components without heeding a signal: it
	// does so apart, and a signal ends the process at once. That goroutine
	// then dies with the process.
	type started struct {
		app *fx.App
		err error
	}
	done := make(chan started, 1)
	go func() {
		a := fx.New(s.Options(logger, roles...))
		if err := a.Err(); err != nil {
			done <- started{err: app.Brief(err)}
			return
		}
		startCtx, cancel := context.WithTimeout(ctx, s.ConnectTimeout+60*time.Second)
		defer cancel()
		if err := a.Start(startCtx); err != nil {
			done <- started{err: app.Brief(err)}
			return
		}
		done <- started{app: a}
	}()
	var a *fx.App
	select {
	case <-ctx.Done():
		return errors.New("stopped by a signal while starting")
	case st := <-done:
		if st.err != nil {
			return interrupted(ctx, st.err)
		}
		a = st.app
	}
	logger.Info("laneim running", "roles", roles)
	<-ctx.Done()
	// Stopping is bounded: a part that waits on a dependency already gone
	// (a broker that no longer answers, say) does not hold the process.
	stopCtx, cancel2 := context.WithTimeout(context.Background(), stopWithin)
	defer cancel2()
	if err := a.Stop(stopCtx); err != nil {
		logger.Warn("stopped without waiting for every part", "within", stopWithin, "err", err)
	}
	return nil
}

// stopWithin bounds a process's stop after SIGTERM: comets take up to
// five seconds to close their connections' handshakes.
const stopWithin = 10 * time.Second

// interrupted returns err, or a shorter word when a signal caused it.
func interrupted(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return errors.New("stopped by a signal while starting")
	}
	return err
}

func runWorker(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: laneim worker [flags] NAME... (login, presence, routing, fanout, persist, history, binlogsync, all)")
		fs.PrintDefaults()
	}
	var s app.Settings
	s.RegisterFor(fs, app.PartsOfRoles(append(app.Workers, app.Binlog)...)...)
	// Worker names and flags may come in any order.
	var names []string
	for rest := args; len(rest) > 0; {
		if err := app.ParseArgs(fs, rest); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		names = append(names, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(names) == 0 {
		fs.Usage()
		return errUsage
	}
	var roles []app.Role
	for _, name := range names {
		if name == "all" {
			roles = append(roles, app.Workers...)
			continue
		}
		r, err := app.ParseRole(name)
		if err != nil {
			return err
		}
		if r == app.Comet || r == app.API {
			return fmt.Errorf("%s is a gateway: run `laneim %s`", r, r)
		}
		roles = append(roles, r)
	}
	// fs holds every worker's flags: those the named workers do not read
	// are refused, and their environment variables not read.
	parts := app.PartsOfRoles(roles...)
	if err := app.CheckUsed(fs, "worker "+strings.Join(names, " "), parts...); err != nil {
		return err
	}
	if err := app.FromEnv(fs, parts...); err != nil {
		return err
	}
	return runRoles(ctx, &s, roles...)
}

func runComet(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("comet", flag.ContinueOnError)
	var s app.Settings
	s.RegisterFor(fs, app.PartsOfRoles(app.Comet)...)
	if err := app.Parse(fs, args); err != nil {
		return err
	}
	return runRoles(ctx, &s, app.Comet)
}

func runAPI(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("api", flag.ContinueOnError)
	var s app.Settings
	s.RegisterFor(fs, app.PartsOfRoles(app.API)...)
	if err := app.Parse(fs, args); err != nil {
		return err
	}
	return runRoles(ctx, &s, app.API)
}

func runBroker(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("broker", flag.ContinueOnError)
	var cfg embedded.BrokerConfig
	fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:9092", "listen address")
	fs.StringVar(&cfg.DataDir, "data", "", "persist topics and offsets in this folder (default: memory only)")
	fs.BoolVar(&cfg.SyncWrites, "sync", false, "fsync every produced batch (with --data)")
	if err := app.Parse(fs, args); err != nil {
		return err
	}
	b, err := embedded.StartBroker(cfg)
	if err != nil {
		return err
	}
	defer b.Close()
	if err := wiring.EnsureTopics(ctx, wiring.KafkaConfig{Brokers: b.Addrs()}, wiring.PipelineTopics()...); err != nil {
		return err
	}
	fmt.Printf("laneim broker: Kafka protocol on %v (data: %q)\n", b.Addrs(), cfg.DataDir)
	<-ctx.Done()
	return nil
}

func runTopics(ctx context.Context, args []string) error {
	return topicsCmd(ctx, args, os.Stdout, os.Stderr)
}

// topicsCmd is runTopics writing its table to out and its warning to
// errOut.
func topicsCmd(ctx context.Context, args []string, out, errOut io.Writer) error {
	fs := flag.NewFlagSet("topics", flag.ContinueOnError)
	var s app.Settings
	s.RegisterFor(fs, app.PartKafka)
	replicas := fs.Int("replication-factor", 1, "replicas of each topic created (at most the number of brokers; existing topics keep theirs)")
	if err := app.Parse(fs, args); err != nil {
		return err
	}
	if *replicas < 1 || *replicas > math.MaxInt16 {
		return fmt.Errorf("--replication-factor %d: want at least 1", *replicas)
	}
	specs := wiring.PipelineTopics()
	for i := range specs {
		specs[i].Replicas = int16(*replicas)
	}
	if err := wiring.EnsureTopics(ctx, s.Infra().Kafka, specs...); err != nil {
		return err
	}
	names := make([]string, len(specs))
	for i, t := range specs {
		names[i] = t.Name
	}
	brokers, have, err := wiring.TopicReplicas(ctx, s.Infra().Kafka, names...)
	if err != nil {
		return err
	}
	if *replicas > brokers {
		fmt.Fprintf(errOut, "laneim topics: --replication-factor %d is more than the cluster's brokers (%d)\n", *replicas, brokers)
	}
	// An existing topic keeps its replicas (Kafka changes them only by a
	// partition reassignment): say so where they are fewer than asked.
	fewer := 0
	for _, t := range specs {
		note := ""
		if n := have[t.Name]; n < *replicas {
			note = fmt.Sprintf(" (existed before: %d replicas, not %d; change it with kafka-reassign-partitions)", n, *replicas)
			fewer++
		}
		fmt.Fprintf(out, "%s\t%d partitions\t%d replicas%s\n", t.Name, t.Partitions, have[t.Name], note)
	}
	if fewer > 0 {
		fmt.Fprintf(errOut, "laneim topics: %d topics have fewer replicas than --replication-factor %d\n", fewer, *replicas)
	}
	return nil
}

func runToken(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	user := fs.String("user", "", "user id (the token's sub)")
	secret := fs.String("secret", devSecret, "HMAC secret (default: dev mode's)")
	ttl := fs.Duration("ttl", 24*time.Hour, "validity (comets refuse more than their --token-max-lifetime, 24h by default)")
	issuer := fs.String("token-issuer", "", "the token's iss (for comets run with --token-issuer)")
	audience := fs.String("token-audience", "", "the token's aud (for comets run with --token-audience)")
	if err := app.Parse(fs, args); err != nil {
		return err
	}
	if *user == "" {
		return fmt.Errorf("--user is required")
	}
	tok, err := login.MintTokenFor([]byte(*secret), *user, *ttl, *issuer, *audience)
	if err != nil {
		return err
	}
	fmt.Println(tok)
	return nil
}

func runMigrate(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	var s app.Settings
	s.RegisterFor(fs, app.PartMySQL)
	if err := app.Parse(fs, args); err != nil {
		return err
	}
	cfg, err := binlogsync.ParseDSN(s.MySQL)
	if err != nil {
		return err
	}
	if err := binlogsync.Migrate(cfg); err != nil {
		return err
	}
	fmt.Println("laneim migrate: tables users, rooms, room_members, blocks are in place")
	return nil
}

func runResetPosition(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("reset-position", flag.ContinueOnError)
	var s app.Settings
	s.RegisterFor(fs, app.PartRedis)
	key := fs.String("position-key", binlogsync.DefaultPositionKey, "Redis key of the saved binlog position")
	if err := app.Parse(fs, args); err != nil {
		return err
	}
	rdb, err := wiring.NewRedis(ctx, s.Infra().Redis)
	if err != nil {
		return err
	}
	defer rdb.Close()
	if err := binlogsync.NewPositions(rdb, *key).Reset(ctx); err != nil {
		return err
	}
	fmt.Println("laneim reset-position: the binlog worker will take a new snapshot on its next start")
	return nil
}

// flagGiven reports whether a flag was set on the command line.
func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}

func runEtcd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("etcd", flag.ContinueOnError)
	var cfg embedded.EtcdConfig
	fs.StringVar(&cfg.ClientAddr, "addr", "127.0.0.1:2379", "client listen address")
	fs.StringVar(&cfg.PeerAddr, "peer-addr", "127.0.0.1:2380", "peer listen address")
	fs.StringVar(&cfg.Dir, "data", ".run/etcd", "data folder")
	if err := app.Parse(fs, args); err != nil {
		return err
	}
	e, err := embedded.StartEtcd(cfg)
	if err != nil {
		return err
	}
	defer e.Close()
	fmt.Printf("laneim etcd: single-member etcd on %v (data: %s)\n", e.Endpoints(), cfg.Dir)
	<-ctx.Done()
	return nil
}

func runSeed(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("seed", flag.ContinueOnError)
	var s app.Settings
	s.RegisterFor(fs, app.PartRedis)
	path := fs.String("seed", builtinSeed, "demo directory: a JSON file, or "+builtinSeed+" (testdata/seed.json, compiled in)")
	if err := app.Parse(fs, args); err != nil {
		return err
	}
	var sd *seed.Seed
	var err error
	if *path == builtinSeed {
		sd, err = seed.Parse(*path, demoSeed)
	} else {
		sd, err = seed.Load(*path)
	}
	if err != nil {
		return err
	}
	rdb, err := wiring.NewRedis(ctx, s.Infra().Redis)
	if err != nil {
		return err
	}
	defer rdb.Close()
	if err := sd.Apply(ctx, directory.New(rdb)); err != nil {
		return err
	}
	fmt.Printf("laneim seed: %d users, %d rooms written (dev only: production follows MySQL)\n", len(sd.Users), len(sd.Rooms))
	return nil
}
