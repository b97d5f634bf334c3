package app

import (
	"flag"
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
