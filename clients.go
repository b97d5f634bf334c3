package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/laneim/laneim/gateways/api"
	"github.com/laneim/laneim/internal/abuse"
	"github.com/laneim/laneim/internal/app"
	"github.com/laneim/laneim/internal/bench"
	"github.com/laneim/laneim/internal/chat"
	"github.com/laneim/laneim/internal/replay"
	"github.com/laneim/laneim/internal/soak"
	"github.com/laneim/laneim/workers/login"
)

func runChat(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("chat", flag.ContinueOnError)
	var cfg chat.Config
	user := fs.String("user", "", "log in as this user (a token is minted with --secret)")
	secret := fs.String("secret", devSecret, "HMAC secret to mint the token (default: dev mode's)")
	fs.StringVar(&cfg.Token, "token", "", "use this login token instead of minting one")
	fs.StringVar(&cfg.URL, "url", "ws://127.0.0.1:8080/ws", "comet WebSocket URL")
	fs.StringVar(&cfg.Room, "room", "lobby", "room to join (empty: none)")
	fs.BoolVar(&cfg.JSON, "json", false, "speak the JSON subprotocol instead of protobuf")
	fs.BoolVar(&cfg.ShowIDs, "show-ids", false, "show each message's id")
	fs.IntVar(&cfg.History, "history", 10, "recent messages shown on joining a room (0: none)")
	fs.StringVar(&cfg.StateFile, "state", "", "file keeping the last message seen per conversation, to show what came while away (default: one per --user in the user config directory)")
	apiAddr := fs.String("api", "", "api gateway address: connect (and reconnect) to the comet its PickComet names, --url when it cannot")
	apiToken := fs.String("api-token", devAPIToken, "api gateway token (with --api)")
	if err := app.Parse(fs, args); err != nil {
		return err
	}
	if cfg.History == 0 {
		cfg.History = -1
	}
	if cfg.StateFile == "" && *user != "" {
		if dir, err := os.UserConfigDir(); err == nil {
			cfg.StateFile = filepath.Join(dir, "laneim", "chat-"+*user+".json")
		}
	}
	if *apiAddr != "" {
		pc, closer, err := api.Dial(ctx, *apiAddr, *apiToken)
		if err != nil {
			return err
		}
		defer closer.Close()
		cfg.Pick = chat.PickComet(pc)
	}
	if cfg.Token == "" {
		if *user == "" {
			return fmt.Errorf("give --user (or --token)")
		}
		tok, err := login.MintToken([]byte(*secret), *user, 24*time.Hour)
		if err != nil {
			return err
		}
		cfg.Token = tok
	}
	return chat.Run(ctx, cfg, os.Stdin, os.Stdout)
}

func runBench(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var cfg bench.Config
	fs.StringVar(&cfg.Target, "target", "", "comet WebSocket URL of a running cluster (default: start a dev cluster as a child process)")
	fs.StringVar(&cfg.API, "api", "", "api gateway address (with --target)")
	fs.StringVar(&cfg.APIToken, "api-token", "", "api gateway token (with --target; dev mode's: "+devAPIToken+")")
	fs.StringVar(&cfg.APITLS.CA, "api-ca", "", "PEM CAs that sign the api gateway's certificate: connect over TLS (with --target)")
	fs.StringVar(&cfg.APITLS.Cert, "api-cert", "", "PEM client certificate for an api gateway requiring mutual TLS (with --api-key)")
	fs.StringVar(&cfg.APITLS.Key, "api-key", "", "PEM key of --api-cert")
	fs.StringVar(&cfg.APITLS.ServerName, "api-server-name", "", "name the api gateway's certificate must carry (default: the host of --api)")
	fs.BoolVar(&cfg.APITLS.Enabled, "api-tls", false, "connect to the api gateway over TLS, trusting the system's roots (implied by --api-ca)")
	fs.StringVar(&cfg.Redis, "redis", "", "Redis address(es) of the directory, comma-separated (several: a Redis Cluster), to create the bench room (with --target)")
	fs.StringVar(&cfg.Secret, "secret", "", "login token secret (with --target; dev mode's: "+devSecret+")")
	fs.IntVar(&cfg.Members, "members", 10000, "clients in the room")
	fs.IntVar(&cfg.Online, "online", 0, "clients logged in, the members included: those beyond --members are online in no room (default: --members)")
	fs.IntVar(&cfg.Rate, "rate", 200, "messages pushed per second")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to push")
	fs.DurationVar(&cfg.Drain, "drain", 10*time.Second, "how long to wait for deliveries after the last push")
	fs.IntVar(&cfg.DialConcurrency, "dial-concurrency", 0, "clients connecting and logging in at once, as after a comet dies (default 64)")
	fs.BoolVar(&cfg.JoinSeparately, "join-separately", false, "members join the room with a JoinRoom after logging in, not in the Login (Login.join) as the documented client does when it reconnects")
	fs.DurationVar(&cfg.BatchWindow, "batch-window", 0, "comet batch window of the dev cluster (default: its own)")
	fs.BoolVar(&cfg.JSON, "json-protocol", false, "clients speak the JSON subprotocol")
	fs.IntVar(&cfg.FrameBudget, "frame-budget", 0, "comet frame budget of the dev cluster (default: its own)")
	fs.BoolVar(&cfg.Pprof, "pprof", false, "serve /debug/pprof/ on the dev cluster's admin address (printed at start)")
	sweep := fs.String("sweep", "", "comma-separated rates to run in turn on the same members (e.g. 10,100,500,1000); stops at the first not sustained and prints a table")
	fs.DurationVar(&cfg.P99Bound, "p99", 200*time.Millisecond, "p99 latency within which a rate counts as sustained")
	cpuProfile := fs.String("cpuprofile", "", "write the bench tool's own CPU profile to this file")
	admin := fs.String("admin", "", "with --target: the cluster processes' admin addresses (comma-separated), read for CPU and memory")
	jsonOut := fs.Bool("json", false, "print the result as JSON on the last line")
	if err := app.Parse(fs, args); err != nil {
		return err
	}
	if *admin != "" {
		cfg.Admin = strings.Split(*admin, ",")
	} else if cfg.Target != "" {
		fmt.Fprintln(os.Stderr, "laneim bench: without --admin the cluster's CPU and memory are not measured (they print as 0): give the processes' --admin-addr list")
	}
	// The clients' reader goroutines wait on the network like the
	// pipeline's do: more scheduler threads than cores (see
	// app.Settings.SetProcs).
	runtime.GOMAXPROCS(app.NetworkProcs())
	// A load generator trades memory for CPU: collect garbage less often.
	debug.SetGCPercent(400)
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	rates := []int{cfg.Rate}
	if *sweep != "" {
		rates = rates[:0]
		for _, f := range strings.Split(*sweep, ",") {
			r, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || r < 1 {
				return fmt.Errorf("--sweep: %q is not a positive rate", f)
			}
			rates = append(rates, r)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer watchBench(cancel, benchLimit(cfg, len(rates)))()
	if *sweep != "" {
		rs, err := bench.Sweep(ctx, cfg, rates, os.Stderr)
		if err != nil {
			return err
		}
		bench.SweepTable(os.Stdout, rs, cfg.P99Bound)
		if *jsonOut {
			b, _ := json.Marshal(rs)
			fmt.Println(string(b))
		}
		return nil
	}
	res, err := bench.Run(ctx, cfg, os.Stderr)
	if err != nil {
		return err
	}
	res.Text(os.Stdout)
	if *jsonOut {
		fmt.Println(res.JSON())
	}
	if res.Lost > 0 {
		return fmt.Errorf("%d deliveries lost", res.Lost)
	}
	return nil
}

func runAbuse(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("abuse", flag.ContinueOnError)
	var cfg abuse.Config
	fs.StringVar(&cfg.Cluster.Target, "target", "", "comet WebSocket URL of a running cluster on this machine (default: start a dev cluster as a child process)")
	fs.StringVar(&cfg.Cluster.Redis, "redis", "", "Redis address(es) of the directory (with --target)")
	admin := fs.String("admin", "", "admin addresses of the cluster's processes, comma-separated (with --target): their /metrics give the CPU and memory each phase cost")
	fs.StringVar(&cfg.Cluster.Secret, "secret", "", "login token secret (with --target; dev mode's: "+devSecret+")")
	fs.DurationVar(&cfg.Baseline, "baseline", 5*time.Second, "how long the honest pair is measured alone")
	fs.DurationVar(&cfg.PerAttack, "per-attack", 10*time.Second, "how long each attack runs")
	list := fs.String("attacks", strings.Join(abuse.Attacks, ","), "attacks to run, comma-separated")
	jsonOut := fs.Bool("json", false, "print the phases as JSON on the last line")
	if err := app.Parse(fs, args); err != nil {
		return err
	}
	cfg.Attacks = strings.Split(*list, ",")
	if *admin != "" {
		cfg.Cluster.Admin = strings.Split(*admin, ",")
	}
	phases, err := abuse.Run(ctx, cfg, os.Stderr)
	abuse.Table(os.Stdout, phases)
	if *jsonOut {
		b, _ := json.Marshal(phases)
		fmt.Println(string(b))
	}
	return err
}

func runSoak(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	var cfg soak.Config
	targets := fs.String("targets", "ws://127.0.0.1:18081/ws,ws://127.0.0.1:18082/ws", "comet WebSocket URLs, comma-separated; clients are spread over them (loopback only)")
	fs.StringVar(&cfg.Redis, "redis", "127.0.0.1:17001,127.0.0.1:17002,127.0.0.1:17003,127.0.0.1:17004,127.0.0.1:17005,127.0.0.1:17006", "the directory's Redis node(s), comma-separated: users and rooms are created there, masters are frozen there")
	fs.StringVar(&cfg.Secret, "secret", devSecret, "login token secret (deploy/local/cluster.sh's default)")
	fs.IntVar(&cfg.Clients, "clients", 1000, "clients: half room members, half 1:1 senders")
	fs.IntVar(&cfg.Rooms, "rooms", 4, "rooms the room members are spread over")
	fs.Float64Var(&cfg.Rate, "rate", 200, "messages per second, all clients together")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Minute, "how long clients send")
	fs.DurationVar(&cfg.RequestTimeout, "request-timeout", 10*time.Second, "a request with no answer within this on an open connection is unanswered (and retried)")
	fs.IntVar(&cfg.SendAttempts, "send-attempts", 10, "attempts at one message before it is abandoned")
	fs.DurationVar(&cfg.Drain, "drain", 60*time.Second, "how long messages in flight at the end may still be retried")
	fs.DurationVar(&cfg.VerifyTimeout, "verify-timeout", 2*time.Minute, "bound of the final check of history")
	fs.BoolVar(&cfg.Chaos, "chaos", true, "inject faults: SIGKILL and restart a worker, comet, the api or the broker, or SIGSTOP a Redis master for 5-10s")
	fs.DurationVar(&cfg.ChaosMin, "chaos-min", 20*time.Second, "shortest time between the starts of two faults")
	fs.DurationVar(&cfg.ChaosMax, "chaos-max", 40*time.Second, "longest time between the starts of two faults")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "seed of every random choice (faults, timings)")
	fs.StringVar(&cfg.ClusterScript, "cluster-script", "deploy/local/cluster.sh", "the cluster's script (kill NAME, restart NAME)")
	fs.StringVar(&cfg.RunDir, "run-dir", ".run/cluster", "the cluster's state folder (pid files)")
	jsonOut := fs.Bool("json", false, "print the summary as JSON on the last line")
	if err := app.Parse(fs, args); err != nil {
		return err
	}
	cfg.Targets = strings.Split(*targets, ",")
	res, err := soak.Run(ctx, cfg, os.Stderr)
	if res != nil {
		res.Text(os.Stdout)
		if *jsonOut {
			fmt.Println(res.JSON())
		}
	}
	if err != nil {
		return err
	}
	if !res.OK() {
		return fmt.Errorf("%d acknowledged messages lost, %d requests unanswered", res.Lost, res.Unanswered)
	}
	return nil
}

func runReplay(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	var s app.Settings
	s.RegisterFor(fs, app.PartKafka)
	var opts replay.Options
	partition := fs.Int("partition", -1, "partition to read (-1: all)")
	fs.StringVar(&opts.Topic, "topic", "", "topic to read, e.g. messages.routed, deliver.comet-1, deadletters")
	fs.StringVar(&opts.From, "from", "oldest", "start: oldest, newest, an offset, or an RFC 3339 time")
	fs.StringVar(&opts.Until, "until", "", "stop before: an offset or an RFC 3339 time (default: the end when replay starts)")
	fs.StringVar(&opts.Key, "key", "", "only messages with this partition key (a conversation like room:lobby, or user/alice)")
	fs.IntVar(&opts.Limit, "limit", 0, "stop after this many messages (0: no limit)")
	fs.StringVar(&opts.Bodies, "bodies", replay.Base64, "how message bodies and other bytes fields print: base64 (protobuf's JSON) or text (UTF-8 as a string)")
	fs.StringVar(&opts.Republish, "republish", "", "send the messages to this topic instead of printing them ("+replay.Original+": dead letters back to where they failed)")
	if err := app.Parse(fs, args); err != nil {
		return err
	}
	kcfg := s.Infra().Kafka
	opts.Brokers, opts.Partition = kcfg.Brokers, int32(*partition)
	if len(opts.Brokers) == 0 {
		return fmt.Errorf("give --kafka (or LANEIM_KAFKA)")
	}
	sc, err := kcfg.Sarama() // TLS and SASL as the workers use them
	if err != nil {
		return err
	}
	opts.Sarama = sc
	n, err := replay.Run(ctx, opts, os.Stdout)
	if err == nil || n > 0 { // how far it went, when it went anywhere
		what := "messages"
		if n == 1 {
			what = "message"
		}
		fmt.Fprintf(os.Stderr, "laneim replay: %d %s\n", n, what)
	}
	return err
}

// benchLimit is how long a bench run may take: the members' setup, at
// most 5 minutes and 20 ms a member, then each rate's push and drain
// with a minute to spare.
func benchLimit(cfg bench.Config, rates int) time.Duration {
	drain := cfg.Drain
	if drain <= 0 {
		drain = 10 * time.Second
	}
	setup := 5*time.Minute + time.Duration(cfg.Members)*20*time.Millisecond
	return setup + time.Duration(rates)*(cfg.Duration+drain+time.Minute)
}

// watchBench bounds a bench run in time whatever happens inside it: past
// limit it cancels the run (cancel), which stops its dev cluster; if the
// run has not returned half a minute later, it prints every goroutine's
// stack, to tell where it hung, and exits. The returned func ends the
// watch.
func watchBench(cancel context.CancelFunc, limit time.Duration) (stop func()) {
	const grace = 30 * time.Second
	soft := time.AfterFunc(limit, func() {
		fmt.Fprintf(os.Stderr, "laneim bench: still running after %v, its limit: cancelling it\n", limit)
		cancel()
	})
	hard := time.AfterFunc(limit+grace, func() {
		fmt.Fprintf(os.Stderr, "laneim bench: still running %v after it was cancelled; its goroutines:\n", grace)
		_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 2)
		os.Exit(2)
	})
	return func() {
		soft.Stop()
		hard.Stop()
	}
}
