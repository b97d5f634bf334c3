// Command laneim runs every part of the laneIM cluster from one binary.
//
//	laneim dev                    the whole cluster in one process on embedded infrastructure
//	laneim worker NAME...         pipeline workers: login, presence, routing, fanout, persist, history (or all), binlogsync
//	laneim migrate --mysql DSN    create laneIM's tables in MySQL
//	laneim reset-position         make the binlog worker take a new snapshot
//	laneim comet                  a WebSocket gateway
//	laneim api                    the gRPC api gateway
//	laneim broker                 a standalone Kafka-protocol broker (kfake) for local clusters
//	laneim topics                 create the pipeline's topics
//	laneim replay --topic T       print a topic as JSON lines, or republish it
//	laneim token --user ID        mint a login token
//	laneim chat --user ID         a terminal chat client
//	laneim bench                  load test: N clients in one room, R messages/s
//	laneim soak                   soak test with faults against deploy/local/cluster.sh: nothing acknowledged lost, every request answered
//
// Every flag also reads from the environment: --kafka is LANEIM_KAFKA.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/laneim/laneim/internal/app"
)

var commands = map[string]struct {
	run  func(ctx context.Context, args []string) error
	help string
}{
	"dev":            {runDev, "run the whole cluster in one process on embedded infrastructure"},
	"worker":         {runWorker, "run workers: login, presence, routing, fanout, persist, history (or all), binlogsync"},
	"comet":          {runComet, "run a WebSocket gateway (comet)"},
	"api":            {runAPI, "run the gRPC api gateway"},
	"broker":         {runBroker, "run a standalone Kafka-protocol broker"},
	"etcd":           {runEtcd, "run a standalone single-member etcd for local clusters"},
	"seed":           {runSeed, "write the demo directory into Redis (dev only)"},
	"topics":         {runTopics, "create the pipeline's topics"},
	"migrate":        {runMigrate, "create laneIM's tables in MySQL (--mysql)"},
	"reset-position": {runResetPosition, "forget the binlog worker's position so it takes a new snapshot"},
	"replay":         {runReplay, "print a topic's messages as JSON lines, or republish them"},
	"token":          {runToken, "mint a login token for a user"},
	"chat":           {runChat, "chat from a terminal"},
	"bench":          {runBench, "load test: clients in one room, messages pushed through the api gateway"},
	"abuse":          {runAbuse, "an honest pair's latency alone and while each abuse of issue 11 runs (loopback only)"},
	"soak":           {runSoak, "soak test against deploy/local/cluster.sh while killing and freezing its processes"},
}

var order = []string{"dev", "worker", "comet", "api", "broker", "etcd", "seed", "topics", "migrate", "reset-position", "replay", "token", "chat", "bench", "abuse", "soak"}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: laneim COMMAND [flags]\n\ncommands:")
	for _, name := range order {
		fmt.Fprintf(os.Stderr, "  %-15s %s\n", name, commands[name].help)
	}
	fmt.Fprintln(os.Stderr, "\nRun laneim COMMAND -h for its flags. Every flag also reads LANEIM_<FLAG> from the environment.")
}

// errUsage is returned by a command that printed its usage because it was
// called wrongly: the process exits 2 without another message.
var errUsage = errors.New("usage")

// isFlagError reports an error of the flag package (an unknown flag, a bad
// value), which it has already printed with the command's usage.
func isFlagError(err error) bool {
	var fe *app.FlagError
	return errors.As(err, &fe)
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	cmd, ok := commands[os.Args[1]]
	if !ok {
		if os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
			usage()
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "laneim: unknown command %q\n\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cmd.run(ctx, os.Args[2:]); err != nil {
		switch {
		case errors.Is(err, flag.ErrHelp): // -h or --help: the help was asked for
			os.Exit(0)
		case errors.Is(err, errUsage), isFlagError(err): // the flag package printed why
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "laneim %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
