package app

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/fx"

	"github.com/laneim/laneim/gateways/api"
	"github.com/laneim/laneim/gateways/comet/client"
	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/apipb"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/workers/login"
)

// freeAddr is a free loopback address.

// devTestConfig is a dev cluster on free ports, with its data in a
// folder of the test's and the seed of testdata.
func devTestConfig(t *testing.T) DevConfig {
	return DevConfig{
		Settings: Settings{
			Secret: "dev-test-secret-of-the-dev-mode-test", APIToken: "dev-test-token", CometAddr: testinfra.FreeAddr(t), APIAddr: testinfra.FreeAddr(t),
			SessionTTL: 30 * time.Second, NotifyLimit: 200, MaxBodyBytes: 16 << 10, BatchWindow: 10 * time.Millisecond,
			SendQueue: 256, MaxFrameBytes: 64 << 10, LogLevel: "error",
		},
		KafkaAddr: "127.0.0.1:0",
		RedisAddr: "127.0.0.1:0",
		EtcdAddr:  testinfra.FreeAddr(t),
		// Its own free port: the one after the client port may be taken.
		EtcdPeerAddr: testinfra.FreeAddr(t),
		DataDir:      t.TempDir(),
		Seed:         "../../testdata/seed.json",
	}
}

// startDev starts a dev cluster on cfg. A port FreePort drew can be taken
// by another package's test before the cluster binds it: then the ports
// are drawn again, at most twice more.
func startDev(t *testing.T, ctx context.Context, cfg *DevConfig) *Dev {
	t.Helper()
	for attempt := 1; ; attempt++ {
		d, err := StartDev(ctx, *cfg, slog.New(slog.DiscardHandler))
		if err == nil {
			return d
		}
		if attempt == 3 || !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatal(err)
		}
		t.Logf("start, attempt %d: %v; drawing other ports", attempt, err)
		fresh := devTestConfig(t)
		cfg.Settings.CometAddr, cfg.Settings.APIAddr, cfg.EtcdAddr, cfg.EtcdPeerAddr = fresh.Settings.CometAddr, fresh.Settings.APIAddr, fresh.EtcdAddr, fresh.EtcdPeerAddr
		if cfg.Settings.AdminAddr != "" {
			cfg.Settings.AdminAddr = testinfra.FreeAddr(t)
		}
		cfg.DataDir = fresh.DataDir
	}
}

// TestDevCluster runs `laneim dev` in-process on free ports (embedded
// Kafka-protocol broker, etcd and Redis-protocol server) and chats through it.
func TestDevCluster(t *testing.T) {
	t.Parallel()
	cfg := devTestConfig(t)
	cfg.Settings.AdminAddr = testinfra.FreeAddr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	d := startDev(t, ctx, &cfg)
	var welcome strings.Builder
	d.PrintWelcome(&welcome)
	if !strings.Contains(welcome.String(), "ws://"+cfg.Settings.CometAddr+"/ws") || len(d.EtcdEndpoints()) != 1 {
		t.Errorf("welcome %q, etcd %v", welcome.String(), d.EtcdEndpoints())
	}
	for _, w := range []string{"http://" + cfg.Settings.CometAddr + "/", "Demo users: alice bob carol dave erin (disabled: mallory); rooms: lobby",
		"--admin " + cfg.Settings.AdminAddr} { // the bench line reads the cluster's CPU
		if !strings.Contains(welcome.String(), w) {
			t.Errorf("welcome lacks %q:\n%s", w, welcome.String())
		}
	}

	url := "ws://" + cfg.Settings.CometAddr + "/ws"
	// The comet registered itself in etcd; the api gateway tells clients where to go.
	pc, closer, err := api.Dial(ctx, cfg.Settings.APIAddr, cfg.Settings.APIToken)
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	picked, err := pc.PickComet(ctx, &apipb.PickCometRequest{})
	if err != nil || picked.GetUrl() != url || picked.GetCometId() != "comet-1" {
		t.Fatalf("pick comet = %v, %v; want %s", picked, err, url)
	}
	var conns []*client.Conn
	for _, u := range []string{"alice", "bob"} {
		conn, err := client.Dial(ctx, url, client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		tok, _ := login.MintToken([]byte(cfg.Settings.Secret), u, time.Hour)
		if _, err := conn.Login(ctx, tok, "test"); err != nil {
			t.Fatalf("login %s: %v", u, err)
		}
		if _, err := conn.Join(ctx, "lobby"); err != nil {
			t.Fatalf("join %s: %v", u, err)
		}
		conns = append(conns, conn)
	}
	if _, err := conns[0].SendRoom(ctx, "lobby", []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if m := nextMessages(t, conns[1], topics.RoomConversation("lobby"), 1)[0]; string(m.GetBody()) != "hi" {
		t.Fatalf("got %v", m)
	}
	if err := d.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
	// Shutting down closes the clients' connections (1001 going away).
	select {
	case <-conns[1].Done():
	case <-ctx.Done():
		t.Fatal("client still connected after the cluster stopped")
	}

	// History survives a restart, and the conversation goes on after it.
	d, err = StartDev(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	defer d.Close(context.Background())
	conn, err := client.Dial(ctx, url, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tok, _ := login.MintToken([]byte(cfg.Settings.Secret), "bob", time.Hour)
	res, err := conn.Login(ctx, tok, "test")
	if err != nil {
		t.Fatal(err)
	}
	if got := latestOf(res, topics.RoomConversation("lobby")); got != 1 {
		t.Errorf("after restart the lobby is at %d, want 1", got)
	}
	if old := syncAll(t, conn, topics.RoomConversation("lobby"), 0); len(old) != 1 || string(old[0].GetBody()) != "hi" {
		t.Fatalf("history after restart = %v", old)
	}
	if _, err := conn.Join(ctx, "lobby"); err != nil {
		t.Fatal(err)
	}
	next, err := conn.SendRoom(ctx, "lobby", []byte("again"))
	if err != nil || next.GetSeq() != 2 {
		t.Fatalf("first message after restart = %v, %v; want seq 2", next, err)
	}
}

// TestRoleGraphs checks that every process kind has a complete fx graph.
func TestRoleGraphs(t *testing.T) {
	s := Settings{Kafka: "127.0.0.1:1", Redis: "127.0.0.1:1", Secret: "x", APIToken: "y", CometID: "c1"}
	logger := slog.New(slog.DiscardHandler)
	sets := [][]Role{{Login}, {Presence}, {Routing}, {Fanout}, {Comet}, {API}, append(append([]Role{}, Workers...), Comet, API)}
	for _, roles := range sets {
		if err := fx.ValidateApp(s.Options(logger, roles...)); err != nil {
			t.Errorf("roles %v: %v", roles, err)
		}
	}
}

func TestValidateNamesTheMissingSetting(t *testing.T) {
	tests := []struct {
		s    Settings
		role Role
		want string
	}{
		{Settings{}, Login, "LANEIM_KAFKA"},
		{Settings{Kafka: "k", CometID: "c1"}, Comet, "LANEIM_SECRET"},
		{Settings{Kafka: "k"}, Login, "LANEIM_REDIS"},
		{Settings{Kafka: "k"}, Comet, "LANEIM_COMET_ID"},
		{Settings{Kafka: "k", Redis: "r"}, API, "LANEIM_API_TOKEN"},
	}
	for _, tt := range tests {
		err := tt.s.Validate(tt.role)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v %s: %v, want mention of %s", tt.s, tt.role, err, tt.want)
		}
	}
	if _, err := ParseRole("nope"); err == nil {
		t.Error("ParseRole accepted nope")
	}
}

// TestDevReadPositionsSurviveRedisLoss: read positions are saved in the
// history store too, so a dev cluster restarted with an empty Redis (its
// embedded one keeps nothing) but its kept history file still reports a
// user's read_seq and unread at login.
func TestDevReadPositionsSurviveRedisLoss(t *testing.T) {
	t.Parallel()
	cfg := devTestConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	d := startDev(t, ctx, &cfg)
	url := "ws://" + cfg.Settings.CometAddr + "/ws"
	// logIn logs user in, on a new connection again after an
	// UNAVAILABLE (a pipeline still starting), up to ten times.
	logIn := func(user string) (*client.Conn, *clientpb.LoginResult) {
		t.Helper()
		tok, _ := login.MintToken([]byte(cfg.Settings.Secret), user, time.Hour)
		for attempt := 1; ; attempt++ {
			conn, err := client.Dial(ctx, url, client.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() })
			res, err := conn.Login(ctx, tok, "test")
			if errCode(err) == clientpb.Error_UNAVAILABLE && attempt < 10 {
				conn.Close()
				time.Sleep(100 * time.Millisecond)
				continue
			}
			if err != nil {
				t.Fatalf("login %s: %v", user, err)
			}
			return conn, res
		}
	}
	alice, _ := logIn("alice")
	bob, _ := logIn("bob")
	lobby := topics.RoomConversation("lobby")
	for _, body := range []string{"one", "two", "three"} {
		if _, err := alice.SendRoom(ctx, "lobby", []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if r, err := ack(ctx, bob, lobby, 2); err != nil || r.GetSeq() != 2 {
		t.Fatalf("ack: %v, %v", r, err)
	}
	// alice's own messages raise her position, alongside their answers:
	// her Ack of the last one makes sure it is recorded.
	if r, err := ack(ctx, alice, lobby, 3); err != nil || r.GetSeq() != 3 {
		t.Fatalf("alice's position: %v, %v; want 3", r, err)
	}
	if err := d.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}

	d, err := StartDev(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	defer d.Close(context.Background())
	for user, want := range map[string]*clientpb.ConversationState{
		"bob":   {Conversation: lobby, LatestSeq: 3, ReadSeq: 2, Unread: 1},
		"alice": {Conversation: lobby, LatestSeq: 3, ReadSeq: 3},
	} {
		_, res := logIn(user)
		got := stateOf(res.GetConversations(), lobby)
		if got.GetLatestSeq() != want.GetLatestSeq() || got.GetReadSeq() != want.GetReadSeq() || got.GetUnread() != want.GetUnread() {
			t.Errorf("%s after restart: %v, want %v", user, got, want)
		}
	}
}
