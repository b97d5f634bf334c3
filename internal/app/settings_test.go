package app

import (
	"flag"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

func TestParseFlagBeatsEnvironment(t *testing.T) {
	t.Setenv("LANEIM_KAFKA", "env:9092")
	t.Setenv("LANEIM_REDIS", "env:6379")
	t.Setenv("LANEIM_REDIS_CLUSTER", "true")
	var s Settings
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	s.Register(fs)
	if err := Parse(fs, []string{"--kafka", "flag:9092"}); err != nil {
		t.Fatal(err)
	}
	infra := s.Infra()
	if got := infra.Kafka.Brokers; len(got) != 1 || got[0] != "flag:9092" {
		t.Errorf("kafka = %v, want the flag", got)
	}
	if got := infra.Redis.Addrs; len(got) != 1 || got[0] != "env:6379" || !infra.Redis.Cluster {
		t.Errorf("redis = %+v, want the environment", infra.Redis)
	}
}

func TestParseReportsBadEnvironment(t *testing.T) {
	t.Setenv("LANEIM_SESSION_TTL", "soon")
	var s Settings
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	s.Register(fs)
	if err := Parse(fs, nil); err == nil {
		t.Fatal("bad LANEIM_SESSION_TTL accepted")
	}
}

func TestSplitList(t *testing.T) {
	tests := []struct {
		in   string
		want int
	}{{"", 0}, {"a", 1}, {"a, b,,c ", 3}}
	for _, tt := range tests {
		if got := splitList(tt.in); len(got) != tt.want {
			t.Errorf("splitList(%q) = %v", tt.in, got)
		}
	}
}

// TestSecureLinkSettings checks that the link flags and their environment
// variables reach each client's configuration.
func TestSecureLinkSettings(t *testing.T) {
	t.Setenv("LANEIM_KAFKA_SASL_PASSWORD", "kafka-pw")
	t.Setenv("LANEIM_ETCD_PASSWORD", "etcd-pw")
	// Validate wants the files named to exist (their content is not read).
	t.Chdir(t.TempDir())
	for _, f := range []string{"ca.pem", "eca.pem", "c.pem", "k.pem", "a.pem", "ak.pem", "cca.pem"} {
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var s Settings
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	s.Register(fs)
	err := Parse(fs, []string{
		"--kafka", "k:9093", "--kafka-ca", "ca.pem", "--kafka-sasl-mechanism", "SCRAM-SHA-512", "--kafka-sasl-user", "laneim-routing",
		"--redis", "r:6380", "--redis-tls", "--redis-user", "laneim", "--redis-password", "redis-pw",
		"--etcd", "e:2379", "--etcd-ca", "eca.pem", "--etcd-cert", "c.pem", "--etcd-key", "k.pem", "--etcd-user", "laneim",
		"--api-token", "tok", "--api-tls-cert", "a.pem", "--api-tls-key", "ak.pem", "--api-client-ca", "cca.pem",
	})
	if err != nil {
		t.Fatal(err)
	}
	infra := s.Infra()
	k := infra.Kafka
	if !k.TLS.On() || k.TLS.CA != "ca.pem" || k.SASL.Mechanism != "SCRAM-SHA-512" || k.SASL.User != "laneim-routing" || k.SASL.Password != "kafka-pw" {
		t.Errorf("kafka = %+v", k)
	}
	if r := infra.Redis; !r.TLS.On() || r.Username != "laneim" || r.Password != "redis-pw" {
		t.Errorf("redis = %+v", r)
	}
	if d := s.Discovery(); !d.TLS.On() || d.TLS.Cert != "c.pem" || d.Username != "laneim" || d.Password != "etcd-pw" {
		t.Errorf("etcd = %+v", d)
	}
	if err := s.Validate(API); err != nil {
		t.Errorf("validate: %v", err)
	}
	s.APITLSKey = ""
	if err := s.Validate(API); err == nil {
		t.Error("an api certificate without its key accepted")
	}
}

// TestValidateRefusesMissingPaths: a history database in a folder that does
// not exist, or TLS material that does not exist, is refused at start with
// the flag to change; nothing is created.
func TestValidateRefusesMissingPaths(t *testing.T) {
	dir := t.TempDir()
	base := Settings{Kafka: "k:9092", Redis: "r:6379", History: filepath.Join(dir, "h.db")}
	if err := base.Validate(Persist); err != nil {
		t.Fatalf("history in an existing folder: %v", err)
	}
	missing := filepath.Join(dir, "nonexistent", "dir", "h.db")
	for _, c := range []struct {
		name string
		tune func(*Settings)
		want string
	}{
		{"history folder", func(s *Settings) { s.History = missing }, "--history " + missing},
		{"kafka ca", func(s *Settings) { s.KafkaCA = missing }, "--kafka-ca " + missing},
		{"redis cert", func(s *Settings) { s.RedisCert, s.RedisKey = missing, missing }, "--redis-cert " + missing},
	} {
		s := base
		c.tune(&s)
		err := s.Validate(Persist)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", c.name, err, c.want)
		}
	}
	if _, err := os.Stat(filepath.Dir(missing)); !os.IsNotExist(err) {
		t.Errorf("Validate created %s (%v)", filepath.Dir(missing), err)
	}
}

// TestLimitsAcrossCometsFlags: the cluster-wide limits are flags of the
// roles that apply them, reach their configuration, and are checked at
// start.
func TestLimitsAcrossCometsFlags(t *testing.T) {
	for _, f := range []struct {
		name string
		role Role
	}{{"max-sessions-per-user", Presence}, {"user-send-rate", Routing}, {"user-send-burst", Routing}} {
		if !FlagUsedBy(f.name, PartsOfRoles(f.role)...) || FlagUsedBy(f.name, PartsOfRoles(Comet)...) {
			t.Errorf("--%s: want a flag of %s only, not of the comet", f.name, f.role)
		}
	}
	t.Setenv("LANEIM_USER_SEND_BURST", "7")
	var s Settings
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	s.Register(fs)
	if s.MaxSessionsPerUser != 100 || s.UserSendRate != 50 || s.UserSendBurst != 100 {
		t.Errorf("defaults %d, %g, %d; want 100, 50, 100", s.MaxSessionsPerUser, s.UserSendRate, s.UserSendBurst)
	}
	if err := Parse(fs, []string{"--max-sessions-per-user", "3", "--user-send-rate", "2.5"}); err != nil {
		t.Fatal(err)
	}
	if r := s.routingConfig(); r.UserSendRate != 2.5 || r.UserSendBurst != 7 || s.MaxSessionsPerUser != 3 {
		t.Errorf("routing %+v, sessions %d", r, s.MaxSessionsPerUser)
	}
	s.Kafka, s.Redis = "k:9092", "r:6379"
	if err := s.Validate(Routing); err != nil {
		t.Errorf("validate: %v", err)
	}
	s.UserSendRate = 0.0001
	if err := s.Validate(Routing); err == nil || !strings.Contains(err.Error(), "send rate") {
		t.Errorf("a send rate below the least accepted: %v", err)
	}
}

func TestSetCometGC(t *testing.T) {
	prev := debug.SetGCPercent(100)
	defer debug.SetGCPercent(prev)
	tests := []struct {
		gogc string
		want int
	}{
		{"", CometGCPercent}, // not set: the comet's target
		{"300", 100},         // set: the runtime's, left alone
	}
	for _, tt := range tests {
		t.Setenv("GOGC", tt.gogc)
		debug.SetGCPercent(100)
		SetCometGC()
		if got := debug.SetGCPercent(100); got != tt.want {
			t.Errorf("GOGC=%q: GC percent %d, want %d", tt.gogc, got, tt.want)
		}
	}
}
