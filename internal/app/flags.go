package app

import (
	"flag"
	"fmt"
	"slices"
	"strings"
)

// Parts a Settings flag can belong to, besides the roles: a command
// exposes the flags of the parts it uses (RegisterFor), so that its help
// lists only what it reads.
const (
	// PartKafka is --kafka and the Kafka TLS and SASL flags.
	PartKafka = "kafka"
	// PartRedis is --redis and its credentials and TLS.
	PartRedis = "redis"
	// PartEtcd is --etcd and its credentials and TLS.
	PartEtcd = "etcd"
	// PartProcess is what a long-running process reads: admin endpoints,
	// scheduler threads, the connect timeout.
	PartProcess = "process"
	// PartStore is the history store: --history, --scylla, retention.
	PartStore = "store"
	// PartMySQL is --mysql.
	PartMySQL = "mysql"
)

// flagParts names the parts that read each flag of Settings that is not
// recognised by its prefix (see partsOf). A flag in neither is shown to
// every command.
var flagParts = map[string][]string{
	"secret":                {string(Comet)},
	"token-issuer":          {string(Comet)},
	"token-audience":        {string(Comet)},
	"token-max-lifetime":    {string(Comet)},
	"token-clock-skew":      {string(Comet)},
	"session-ttl":           {string(Presence), string(Comet)},
	"notify-limit":          {string(Presence)},
	"login-conversations":   {string(Presence)},
	"max-sessions-per-user": {string(Presence)},
	"presence-window":       {string(Presence)},
	"room-read-receipts":    {string(History)},
	"edit-window":           {string(Routing)},
	"recall-window":         {string(Routing)},
	"user-send-rate":        {string(Routing)},
	"user-send-burst":       {string(Routing)},
	"max-body":              {string(Routing), string(API)},
	"api-token":             {string(API)},
	"api-addr":              {string(API)},
	"api-http-addr":         {string(API)},
	"api-mysql":             {string(API)},
	"api-client-ca":         {string(API)},
	"comet-id":              {string(Comet)},
	"comet-addr":            {string(Comet)},
	"comet-url":             {string(Comet)},
	"batch-window":          {string(Comet)},
	"send-queue":            {string(Comet)},
	"request-rate":          {string(Comet)},
	"request-burst":         {string(Comet)},
	"send-burst":            {string(Comet)},
	"request-timeout":       {string(Comet)},
	"max-conns-per-user":    {string(Comet)},
	"frame-budget":          {string(Comet)},
	"max-batch-window":      {string(Comet)},
	"max-frame":             {string(Comet)},
	"max-conns-per-address": {string(Comet)},
	"max-queued-bytes":      {string(Comet)},
	"max-reads-in-flight":   {string(Comet)},
	"recent-bytes":          {string(Comet)},
	"mysql":                 {PartMySQL, string(API)}, // the api refuses directory writes that MySQL owns
	"history":               {PartStore},
	"admin-addr":            {PartProcess},
	"pprof":                 {PartProcess},
	"procs":                 {PartProcess},
	"connect-timeout":       {PartProcess},
}

// partsOf returns the parts that read a flag; nil: every command.
func partsOf(name string) []string {
	if p, ok := flagParts[name]; ok {
		return p
	}
	for _, prefix := range []struct{ prefix, part string }{
		{"kafka", PartKafka}, {"redis", PartRedis}, {"etcd", PartEtcd},
		{"scylla", PartStore}, {"retain-", PartStore},
		{"api-tls-", string(API)}, {"comet-tls-", string(Comet)},
	} {
		if strings.HasPrefix(name, prefix.prefix) {
			return []string{prefix.part}
		}
	}
	return nil
}

// PartsOfRoles returns the parts a process running roles reads: the roles
// themselves, Kafka, etcd, the process's own flags, and Redis, the history
// store and MySQL where a role needs them.
func PartsOfRoles(roles ...Role) []string {
	parts := []string{PartKafka, PartEtcd, PartProcess}
	for _, r := range roles {
		parts = append(parts, string(r))
		switch r {
		case Login, Presence, Routing, API, Binlog, Persist, History:
			parts = append(parts, PartRedis)
		}
		if needsStore(r) || r == API {
			parts = append(parts, PartStore)
		}
		if r == Binlog {
			parts = append(parts, PartMySQL)
		}
	}
	slices.Sort(parts)
	return slices.Compact(parts)
}

// RegisterFor defines on fs the flags of s that the given parts read (and
// the flags of no particular part), with defaults. The others keep their
// defaults in s but are neither accepted nor listed by fs, and their
// environment variables are not read.
func (s *Settings) RegisterFor(fs *flag.FlagSet, parts ...string) {
	all := flag.NewFlagSet(fs.Name(), flag.ContinueOnError)
	s.Register(all)
	all.VisitAll(func(f *flag.Flag) {
		if FlagUsedBy(f.Name, parts...) {
			fs.Var(f.Value, f.Name, f.Usage)
		}
	})
}

// CheckUsed refuses a command line that gives a flag none of parts reads:
// fs holds the flags of several roles (laneim worker), and the roles
// named are known only once it is parsed.
func CheckUsed(fs *flag.FlagSet, what string, parts ...string) error {
	var unused []string
	fs.Visit(func(f *flag.Flag) {
		if !FlagUsedBy(f.Name, parts...) {
			unused = append(unused, "--"+f.Name)
		}
	})
	if len(unused) > 0 {
		return fmt.Errorf("%s does not read %s", what, strings.Join(unused, ", "))
	}
	return nil
}

// FlagUsedBy reports whether a Settings flag is read by any of parts.
func FlagUsedBy(name string, parts ...string) bool {
	p := partsOf(name)
	return p == nil || slices.ContainsFunc(p, func(x string) bool { return slices.Contains(parts, x) })
}
