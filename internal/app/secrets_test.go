package app

import (
	"bytes"
	"flag"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/laneim/laneim/wiring/auth"
)

// TestValidateRefusesWeakTokenSecrets: a comet (which verifies tokens) does not start
// with a short secret or the Kubernetes manifest's placeholder, and says
// which setting to fix without repeating the secret.
func TestValidateRefusesWeakTokenSecrets(t *testing.T) {
	b, err := os.ReadFile("../../deploy/k8s/base/secret.example.env")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^LANEIM_SECRET=(.*)$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("no LANEIM_SECRET in deploy/k8s/base/secret.example.env")
	}
	for _, secret := range []string{"x", "laneim-dev-secret", string(m[1]), "changeme-changeme-changeme-changeme"} {
		s := Settings{Kafka: "k:9092", Redis: "r:6379", Secret: secret, CometID: "c1"}
		err := s.Validate(Comet)
		if err == nil {
			t.Errorf("secret %q accepted", secret)
			continue
		}
		if !strings.Contains(err.Error(), "LANEIM_SECRET") || strings.Contains(err.Error(), secret) {
			t.Errorf("secret %q: %v; want LANEIM_SECRET named and the secret not shown", secret, err)
		}
		// Only the comet verifies tokens: the login worker gets claims.
		for _, r := range []Role{Routing, Login} {
			if err := s.Validate(r); err != nil {
				t.Errorf("%s refused for the token secret: %v", r, err)
			}
		}
	}
	s := Settings{Kafka: "k:9092", Redis: "r:6379", Secret: "a-real-secret-of-forty-or-so-bytes-9f3c1e", CometID: "c1"}
	if err := s.Validate(Comet); err != nil {
		t.Errorf("good secret refused: %v", err)
	}
}

// TestTokenFlags: the token policy flags (and their environment) reach
// the comet's Config.
func TestTokenFlags(t *testing.T) {
	t.Setenv("LANEIM_TOKEN_AUDIENCE", "laneim-chat")
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	var s Settings
	s.Register(fs)
	if err := Parse(fs, []string{"--token-issuer", "https://auth.example.org", "--token-max-lifetime", "1h"}); err != nil {
		t.Fatal(err)
	}
	want := auth.Policy{Issuer: "https://auth.example.org", Audience: "laneim-chat", MaxLifetime: time.Hour, ClockSkew: 30 * time.Second}
	if got := s.TokenPolicy(); got != want {
		t.Fatalf("TokenPolicy = %+v, want %+v", got, want)
	}
	s.Secret = strings.Repeat("k7", 20)
	s.Kafka, s.Redis = "k:9092", "r:6379"
	s.TokenMaxLifetime = -time.Hour
	s.CometID = "c1"
	if err := s.Validate(Comet); err == nil {
		t.Error("negative --token-max-lifetime accepted")
	}
}

// TestCredentialsNeverInSettingsErrors: a password in a DSN or an
// address list never appears in the error a process exits with, nor in
// dev mode's welcome text.
func TestCredentialsNeverInSettingsErrors(t *testing.T) {
	const pw = "hunter2-Secret"
	base := Settings{Kafka: "k:9092", Redis: "r:6379", Secret: strings.Repeat("k7", 20), APIToken: "t", CometID: "c1", History: "h.db"}
	tests := []struct {
		name string
		tune func(*Settings)
		role Role
	}{
		{"mysql no host", func(s *Settings) { s.MySQL = "mysql://sync:" + pw + "@" }, Binlog},
		{"mysql bad port", func(s *Settings) { s.MySQL = "mysql://sync:" + pw + "@db:port/app" }, Binlog},
		{"mysql bad escape", func(s *Settings) { s.MySQL = "mysql://sync:" + pw + "%zz@db:3306/app" }, Binlog},
		{"mysql no database", func(s *Settings) { s.MySQL = "mysql://sync:" + pw + "@db:3306" }, Binlog},
		{"mysql driver form", func(s *Settings) { s.MySQL = "sync:" + pw + "@tcp(db:3306)/app" }, Binlog},
		{"redis url", func(s *Settings) { s.Redis = "redis://:" + pw + "@r:6379" }, Routing},
		{"redis user:pw", func(s *Settings) { s.Redis = "r1:6379,default:" + pw + "@r2:6379" }, Routing},
		{"kafka", func(s *Settings) { s.Kafka = "user:" + pw + "@k:9092" }, Fanout},
		{"etcd", func(s *Settings) { s.Etcd = "http://root:" + pw + "@etcd:2379" }, Comet},
		{"api-mysql no database", func(s *Settings) { s.APIMySQL = "mysql://writer:" + pw + "@db:3306" }, API},
		{"api-mysql driver form", func(s *Settings) { s.APIMySQL = "writer:" + pw + "@tcp(db:3306)/app" }, API},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := base
			tt.tune(&s)
			err := s.Validate(tt.role)
			if err == nil {
				t.Fatal("accepted")
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("error shows the password: %v", err)
			}
		})
	}
	var buf bytes.Buffer
	d := &Dev{settings: Settings{MySQL: "mysql://sync:" + pw + "@db:3306/app"}}
	d.PrintWelcome(&buf)
	if strings.Contains(buf.String(), "hunter2") {
		t.Fatalf("welcome shows the password:\n%s", buf.String())
	}
	if strings.Contains(buf.String(), "Demo users") {
		t.Fatalf("welcome lists demo users while following MySQL:\n%s", buf.String())
	}
}
