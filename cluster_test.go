package main

// The multi-process cluster test: every worker and gateway in its own
// process of the real binary, a Kafka-protocol broker process, an etcd
// process and a real Redis Cluster (3 masters, 3 replicas). It kills a
// worker mid-stream and a comet with clients on it.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/laneim/laneim/gateways/api"
	"github.com/laneim/laneim/gateways/comet/client"
	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/apipb"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/workers/login"
)

type proc struct {
	t    *testing.T
	name string
	args []string
	env  []string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *proc) start() {
	p.t.Helper()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	p.cmd = exec.Command(p.args[0], p.args[1:]...)
	p.cmd.Env = append(os.Environ(), p.env...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	p.done = make(chan struct{})
	go func() { _ = p.cmd.Wait(); f.Close(); close(p.done) }()
}

// kill sends SIGKILL: no shutdown hook runs.
func (p *proc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.kill()
	}
}

func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// waitReady waits for p's /readyz to answer 200; the test's deferred
// function shows the processes' logs if it does not.
func waitReady(t *testing.T, p *proc, adminAddr string) {
	t.Helper()
	testinfra.Eventually(t, 90*time.Second, func() error {
		select {
		case <-p.done:
			t.Fatalf("%s exited", p.name)
		default:
		}
		resp, err := http.Get("http://" + adminAddr + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz: %s", resp.Status)
		}
		return nil
	}, "%s not ready", p.name)
}

func waitPort(t *testing.T, p *proc, a string) {
	t.Helper()
	testinfra.Eventually(t, 60*time.Second, func() error {
		c, err := net.DialTimeout("tcp", a, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err
	}, "%s not listening on %s", p.name, a)
}

func TestMultiProcessCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs a dozen processes")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "laneim")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var procs []*proc
	spawn := func(name string, env []string, args ...string) *proc {
		p := &proc{t: t, name: name, args: append([]string{bin}, args...), env: env, log: filepath.Join(dir, name+".log")}
		p.start()
		procs = append(procs, p)
		return p
	}
	defer func() {
		for i := len(procs) - 1; i >= 0; i-- {
			procs[i].stop()
		}
		if t.Failed() {
			for _, p := range procs {
				t.Logf("--- %s ---\n%s", p.name, p.tail())
			}
		}
	}()

	kafka, etcd, etcdPeer := testinfra.FreeAddr(t), testinfra.FreeAddr(t), testinfra.FreeAddr(t)
	broker := spawn("broker", nil, "broker", "--addr", kafka)
	waitPort(t, broker, kafka)
	etcdProc := spawn("etcd", nil, "etcd", "--addr", etcd, "--peer-addr", etcdPeer, "--data", filepath.Join(dir, "etcd"))
	waitPort(t, etcdProc, etcd)
	redisNodes := strings.Join(testinfra.RedisCluster(t), ",")
	env := []string{
		"LANEIM_KAFKA=" + kafka, "LANEIM_REDIS=" + redisNodes, "LANEIM_ETCD=" + etcd,
		"LANEIM_SECRET=mp-secret-of-the-multi-process-test", "LANEIM_API_TOKEN=mp-token", "LANEIM_LOG_LEVEL=warn",
		"LANEIM_SESSION_TTL=6s",
	}
	if out, err := exec.Command(bin, "seed", "--redis", redisNodes, "--seed", "testdata/seed.json").CombinedOutput(); err != nil {
		t.Fatalf("seed: %v\n%s", err, out)
	}
	type role struct {
		name string
		args []string
	}
	comet1, comet2, apiAddr := testinfra.FreeAddr(t), testinfra.FreeAddr(t), testinfra.FreeAddr(t)
	roles := []role{
		{"login-presence", []string{"worker", "login", "presence"}},
		{"routing", []string{"worker", "routing"}},
		{"fanout", []string{"worker", "fanout"}},
		{"history", []string{"worker", "persist", "history", "--history", filepath.Join(dir, "history.db")}},
		{"comet-c1", []string{"comet", "--comet-id", "c1", "--comet-addr", comet1}},
		{"comet-c2", []string{"comet", "--comet-id", "c2", "--comet-addr", comet2}},
		{"api", []string{"api", "--api-addr", apiAddr, "--api-http-addr", testinfra.FreeAddr(t)}},
	}
	byName := map[string]*proc{}
	admins := map[string]string{}
	for _, r := range roles {
		admins[r.name] = testinfra.FreeAddr(t)
		byName[r.name] = spawn(r.name, env, append(r.args, "--admin-addr", admins[r.name])...)
	}
	for _, r := range roles {
		waitReady(t, byName[r.name], admins[r.name])
	}

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	connect := func(url, user string) *client.Conn {
		t.Helper()
		c, err := client.Dial(ctx, url, client.Options{})
		if err != nil {
			t.Fatalf("dial %s: %v", url, err)
		}
		tok, _ := login.MintToken([]byte("mp-secret-of-the-multi-process-test"), user, time.Hour)
		lctx, lcancel := context.WithTimeout(ctx, 60*time.Second)
		defer lcancel()
		if _, err := c.Login(lctx, tok, "test"); err != nil {
			t.Fatalf("login %s on %s: %v", user, url, err)
		}
		return c
	}
	join := func(c *client.Conn) {
		t.Helper()
		jctx, jcancel := context.WithTimeout(ctx, 60*time.Second)
		defer jcancel()
		if _, err := c.Join(jctx, "lobby"); err != nil {
			t.Fatalf("join: %v", err)
		}
	}
	url1, url2 := "ws://"+comet1+"/ws", "ws://"+comet2+"/ws"
	alice, bob, carol := connect(url1, "alice"), connect(url2, "bob"), connect(url1, "carol")
	defer alice.Close()
	defer carol.Close()
	join(alice)
	join(bob)
	conv := topics.RoomConversation("lobby")
	expect := func(c *client.Conn, from, to uint64) {
		t.Helper()
		next := from
		deadline := time.After(90 * time.Second)
		for next <= to {
			select {
			case f, ok := <-c.Frames():
				if !ok {
					t.Fatalf("connection closed waiting for seq %d", next)
				}
				for _, m := range f.GetMessages().GetMessages() {
					if m.GetConversation() != conv {
						continue
					}
					if m.GetSeq() < next {
						continue // a repeat after a restart: clients drop it
					}
					if m.GetSeq() != next {
						t.Fatalf("got seq %d, want %d: a message was lost", m.GetSeq(), next)
					}
					next++
				}
			case <-deadline:
				t.Fatalf("waiting for seq %d of %d", next, to)
			}
		}
	}
	// send sends n messages one after the other, each retried with the
	// same client_msg_id on UNAVAILABLE (the comet answers so when a
	// worker is down) and after the wait of a RATE_LIMITED, as
	// docs/protocol.md asks.
	var sends atomic.Int64
	send := func(c *client.Conn, n int) {
		t.Helper()
		for i := range n {
			id := fmt.Sprint("multi-", sends.Add(1))
			var err error
			for attempt := 0; attempt < 20; attempt++ {
				sctx, scancel := context.WithTimeout(ctx, 90*time.Second)
				_, err = c.Send(sctx, &clientpb.Send{ClientMsgId: id, To: &clientpb.Send_Room{Room: "lobby"}, Body: []byte(fmt.Sprint("m", i))})
				scancel()
				var e *client.Error
				if !errors.As(err, &e) || e.Code != clientpb.Error_UNAVAILABLE && e.Code != clientpb.Error_RATE_LIMITED {
					break
				}
				wait := 500 * time.Millisecond
				if e.Code == clientpb.Error_RATE_LIMITED {
					wait = e.RetryAfter
				}
				time.Sleep(wait)
			}
			if err != nil {
				t.Errorf("send: %v", err)
				return
			}
		}
	}

	// Phase 1: the cluster works across processes and comets.
	send(carol, 10)
	expect(alice, 1, 10)
	expect(bob, 1, 10)

	// Phase 2: the routing worker is killed mid-stream and restarted.
	sent := make(chan struct{})
	go func() { defer close(sent); send(carol, 10) }()
	byName["routing"].kill()
	time.Sleep(time.Second)
	byName["routing"].start()
	waitReady(t, byName["routing"], admins["routing"])
	<-sent
	expect(alice, 11, 20)
	expect(bob, 11, 20)

	// Phase 3: bob's comet dies. He asks the api gateway where to go,
	// reconnects to the other comet and catches up on what he missed.
	byName["comet-c2"].kill()
	select {
	case <-bob.Done():
	case <-ctx.Done():
		t.Fatal("bob still connected to a killed comet")
	}
	send(alice, 5)
	expect(alice, 21, 25)
	pc, closer, err := api.Dial(ctx, apiAddr, "mp-token")
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	var again *client.Conn
	testinfra.Eventually(t, 60*time.Second, func() bool {
		picked, err := pc.PickComet(ctx, &apipb.PickCometRequest{})
		if err != nil {
			return false
		}
		dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
		defer dcancel()
		c, err := client.Dial(dctx, picked.GetUrl(), client.Options{})
		if err != nil {
			return false // the dead comet's lease has not expired yet
		}
		c.Close()
		again = connect(picked.GetUrl(), "bob")
		return true
	}, "bob found no live comet")
	defer again.Close()
	var caught []*clientpb.Message
	testinfra.Eventually(t, 30*time.Second, func() error {
		res, err := again.Do(ctx, &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Sync{Sync: &clientpb.Sync{Conversation: conv, AfterSeq: 20}}})
		if err != nil {
			return err
		}
		if caught = res.GetSyncResult().GetMessages(); len(caught) != 5 {
			return fmt.Errorf("caught up %d", len(caught))
		}
		return nil
	}, "bob caught up on 5 messages")
	for i, m := range caught {
		if m.GetSeq() != uint64(21+i) {
			t.Fatalf("caught up seq %d at %d", m.GetSeq(), i)
		}
	}
	if u := again.Done(); u == nil {
		t.Fatal("no connection")
	}
	_ = url2
}
