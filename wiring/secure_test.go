package wiring_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring"
	"github.com/laneim/laneim/wiring/secure"
)

// secureBroker starts a kfake broker that speaks only TLS (a certificate
// ca issues) and requires SASL: user "laneim" with password "laneim-pw"
// by mechanism.
func secureBroker(t *testing.T, ca *testinfra.CA, mechanism string) []string {
	t.Helper()
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.AllowAutoTopicCreation(),
		kfake.TLS(ca.ServerTLS("kafka")),
		kfake.EnableSASL(),
		kfake.Superuser(mechanism, "laneim", "laneim-pw"),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

// TestKafkaTLSAndSASL runs the publisher, a subscriber and the admin
// (topics) over TLS with each SASL mechanism, and checks that a wrong
// password, a client without TLS and one that does not trust the CA are
// all refused.
func TestKafkaTLSAndSASL(t *testing.T) {
	t.Parallel()
	ca := testinfra.NewCA(t, "kafka")
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(mech, func(t *testing.T) {
			t.Parallel()
			brokers := secureBroker(t, ca, mech)
			cfg := wiring.KafkaConfig{
				Brokers:  brokers,
				ClientID: "laneim-test",
				TLS:      secure.TLS{CA: ca.File},
				SASL:     wiring.KafkaSASL{Mechanism: strings.ToLower(mech), User: "laneim", Password: "laneim-pw"},
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := wiring.EnsureTopics(ctx, cfg, wiring.TopicSpec{Name: "secure.test", Partitions: 1}); err != nil {
				t.Fatalf("topics over TLS+%s: %v", mech, err)
			}
			pub, err := wiring.NewPublisher(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer pub.Close()
			msg := message.NewMessage("m-1", []byte("hello"))
			msg.Metadata.Set(topics.KeyMetadata, "k")
			if err := pub.Publish("secure.test", msg); err != nil {
				t.Fatalf("publish over TLS+%s: %v", mech, err)
			}
			sub, err := wiring.NewSubscriber(cfg, "secure-group", slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			ch, err := sub.Subscribe(ctx, "secure.test")
			if err != nil {
				t.Fatal(err)
			}
			select {
			case got := <-ch:
				got.Ack()
				if string(got.Payload) != "hello" {
					t.Fatalf("payload %q", got.Payload)
				}
			case <-ctx.Done():
				t.Fatalf("no message consumed over TLS+%s", mech)
			}

			refused := func(name string, bad wiring.KafkaConfig) {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := wiring.EnsureTopics(ctx, bad, wiring.TopicSpec{Name: "secure.other", Partitions: 1}); err == nil {
					t.Errorf("%s: accepted", name)
				}
			}
			wrong := cfg
			wrong.SASL.Password = "not-it"
			refused("wrong password", wrong)
			plain := cfg
			plain.TLS = secure.TLS{}
			refused("no TLS", plain)
			untrusted := cfg
			untrusted.TLS = secure.TLS{CA: testinfra.NewCA(t, "other").File}
			refused("CA not trusted", untrusted)
		})
	}
}

// TestKafkaConfigValidate checks the settings refused before dialling.
func TestKafkaConfigValidate(t *testing.T) {
	t.Parallel()
	base := wiring.KafkaConfig{Brokers: []string{"127.0.0.1:1"}}
	for name, c := range map[string]wiring.KafkaConfig{
		"unknown mechanism":  {Brokers: base.Brokers, SASL: wiring.KafkaSASL{Mechanism: "GSSAPI", User: "u", Password: "p"}},
		"no password":        {Brokers: base.Brokers, SASL: wiring.KafkaSASL{Mechanism: "PLAIN", User: "u"}},
		"user, no mechanism": {Brokers: base.Brokers, SASL: wiring.KafkaSASL{User: "u", Password: "p"}},
		"cert without key":   {Brokers: base.Brokers, TLS: secure.TLS{Cert: "c.pem"}},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		} else if strings.Contains(err.Error(), "p\"") {
			t.Errorf("%s: error shows the password: %v", name, err)
		}
	}
	s := wiring.KafkaSASL{Mechanism: "PLAIN", User: "u", Password: "hunter2"}
	if strings.Contains(s.String(), "hunter2") {
		t.Errorf("KafkaSASL.String shows the password: %s", s)
	}
}

// TestRedisTLS connects through wiring.NewRedis to a redis-server that
// speaks only TLS and requires an ACL user.
func TestRedisTLS(t *testing.T) {
	t.Parallel()
	ca := testinfra.NewCA(t, "redis")
	addr := testinfra.StartRedisTLS(t, ca)
	ctx := context.Background()
	cfg := wiring.RedisConfig{Addrs: []string{addr}, Username: "laneim", Password: "laneim-pw", TLS: secure.TLS{CA: ca.File}}
	c, err := wiring.NewRedis(ctx, cfg)
	if err != nil {
		t.Fatalf("redis over TLS: %v", err)
	}
	defer c.Close()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("get: %q %v", v, err)
	}
	for name, bad := range map[string]wiring.RedisConfig{
		"no TLS":         {Addrs: cfg.Addrs, Username: cfg.Username, Password: cfg.Password},
		"wrong password": {Addrs: cfg.Addrs, Username: cfg.Username, Password: "no", TLS: cfg.TLS},
		"no user":        {Addrs: cfg.Addrs, TLS: cfg.TLS},
		"untrusted CA":   {Addrs: cfg.Addrs, Username: cfg.Username, Password: cfg.Password, TLS: secure.TLS{CA: testinfra.NewCA(t, "other").File}},
	} {
		if c, err := wiring.NewRedis(ctx, bad); err == nil {
			c.Close()
			t.Errorf("%s: accepted", name)
		}
	}
}
