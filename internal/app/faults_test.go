package app

// End-to-end tests of faults in a real redis-server under the cluster:
// frozen (SIGSTOP), and killed and restarted without its data.

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/laneim/laneim/gateways/comet/client"
	"github.com/laneim/laneim/internal/embedded"
	"github.com/laneim/laneim/internal/seed"
	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring"
)

// sendUntilAccepted sends one message with a fixed client_msg_id, retrying
// on UNAVAILABLE as docs/protocol.md asks, at most 100 times.
func sendUntilAccepted(t *testing.T, conn *client.Conn, room, id, body string) *clientpb.SendResult {
	t.Helper()
	for range 100 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err := conn.Send(ctx, &clientpb.Send{ClientMsgId: id, To: &clientpb.Send_Room{Room: room}, Body: []byte(body)})
		cancel()
		if err == nil {
			return res
		}
		if errCode(err) != clientpb.Error_UNAVAILABLE {
			t.Fatalf("send %s: %v", id, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("send %s: still UNAVAILABLE after 100 tries", id)
	return nil
}

// TestE2ERedisRestartedWithoutDataReusesNoSeq: Redis is killed and comes
// back empty (issue 10: the next room message got seq 1 again and was
// missing from history although acknowledged). The directory is seeded
// again, as binlogsync would; the next message gets the seq after the
// stored ones and history holds every acknowledged message.
func TestE2ERedisRestartedWithoutDataReusesNoSeq(t *testing.T) {
	t.Parallel()
	srv := testinfra.StartRedis(t)
	c := startCluster(t, func(s *Settings) { s.Redis = srv.Addr })
	alice := c.login("alice")
	c.join(alice, "lobby")
	acked := map[uint64]string{} // seq -> message id
	for i := range 3 {
		res := sendUntilAccepted(t, alice, "lobby", fmt.Sprint("before-", i), fmt.Sprint("before ", i))
		acked[res.GetSeq()] = res.GetMessageId()
	}
	conv := topics.RoomConversation("lobby")
	testinfra.Eventually(t, 10*time.Second, func() bool { return len(syncAll(t, alice, conv, 0)) == 3 }, "3 messages stored")

	srv.Restart()
	sd, err := seed.Load(testinfra.DemoSeed())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	testinfra.Eventually(t, 10*time.Second, func() error { return sd.Apply(ctx, c.store) }, "seed the empty Redis")

	alice2 := c.login("alice")
	c.join(alice2, "lobby")
	res := sendUntilAccepted(t, alice2, "lobby", "after", "after the restart")
	if res.GetSeq() != 4 {
		t.Fatalf("first message after Redis lost its data got seq %d, want 4", res.GetSeq())
	}
	acked[res.GetSeq()] = res.GetMessageId()
	testinfra.Eventually(t, 10*time.Second, func() bool { return len(syncAll(t, alice2, conv, 0)) == 4 }, "4 messages stored")
	for _, m := range syncAll(t, alice2, conv, 0) {
		if acked[m.GetSeq()] != m.GetId() {
			t.Errorf("history seq %d holds message %s, acknowledged was %s", m.GetSeq(), m.GetId(), acked[m.GetSeq()])
		}
	}
}

// TestE2ERedisFrozenEverySendAnswered: with Redis frozen (SIGSTOP) for
// 4 s, every Send sent meanwhile is answered (issue 10: answers came
// ~10 s late or never), and sending works again once it thaws.
func TestE2ERedisFrozenEverySendAnswered(t *testing.T) {
	t.Parallel()
	srv := testinfra.StartRedis(t)
	c := startCluster(t, func(s *Settings) { s.Redis = srv.Addr })
	alice := c.login("alice")
	c.join(alice, "lobby")
	sendUntilAccepted(t, alice, "lobby", "warm-up", "warm up")

	srv.Pause()
	thawed := false
	defer func() {
		if !thawed {
			srv.Resume()
		}
	}()
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			// Far more than the 2 s the server promises, far less than
			// the retries (~20 s) that made clients wait before.
			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
			defer cancel()
			_, err := alice.Send(ctx, &clientpb.Send{ClientMsgId: fmt.Sprint("frozen-", i), To: &clientpb.Send_Room{Room: "lobby"}, Body: []byte("x")})
			if err != nil && errCode(err) != clientpb.Error_UNAVAILABLE {
				errs <- fmt.Errorf("send %d during the freeze: %w", i, err)
			}
		})
		time.Sleep(200 * time.Millisecond) // spread over the freeze
	}
	wg.Wait()
	srv.Resume()
	thawed = true
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if res := sendUntilAccepted(t, alice, "lobby", "thawed", "after the freeze"); res.GetSeq() == 0 {
		t.Fatal("no seq after the freeze")
	}
}

// TestE2EWorkerDownRequestsStillAnswered: with no routing worker running
// (killed, say), a Send is answered UNAVAILABLE by the comet after its
// request timeout instead of never (issue 10: "never silence").
func TestE2EWorkerDownRequestsStillAnswered(t *testing.T) {
	t.Parallel()
	var roles []Role
	for _, r := range Workers {
		if r != Routing {
			roles = append(roles, r)
		}
	}
	c := startClusterRoles(t, func(s *Settings) { s.RequestTimeout = 500 * time.Millisecond }, append(roles, Comet))
	alice := c.login("alice")
	c.join(alice, "lobby")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The login or join may have been answered by the comet too, on a
	// loaded machine: only the Send's answer is counted.
	before := c.comet.Stats().Unanswered
	_, err := alice.Send(ctx, &clientpb.Send{ClientMsgId: "m1", To: &clientpb.Send_Room{Room: "lobby"}, Body: []byte("x")})
	if errCode(err) != clientpb.Error_UNAVAILABLE {
		t.Fatalf("send with routing down: %v, want UNAVAILABLE", err)
	}
	if n := c.comet.Stats().Unanswered - before; n != 1 {
		t.Fatalf("comet answered %d requests itself, want 1", n)
	}
}

// TestE2EBrokerRestartLosesNothingAcknowledged: the Kafka-protocol broker
// (persistent, like `laneim broker`) stops and starts again on the same
// address and data. Sends made meanwhile are answered (UNAVAILABLE or
// SendResult), sending works again afterwards, and every message that got
// a SendResult, before, during or after, is in history with its seq and id.
func TestE2EBrokerRestartLosesNothingAcknowledged(t *testing.T) {
	t.Parallel()
	addr := testinfra.FreeAddr(t)
	dataDir := t.TempDir()
	startBroker := func() *embedded.Broker {
		t.Helper()
		var b *embedded.Broker
		testinfra.Eventually(t, 10*time.Second, func() (err error) {
			b, err = embedded.StartBroker(embedded.BrokerConfig{Addr: addr, DataDir: dataDir})
			return err
		}, "start the broker on %s", addr)
		return b
	}
	broker := startBroker()
	defer func() { broker.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := wiring.EnsureTopics(ctx, wiring.KafkaConfig{Brokers: []string{addr}}, wiring.PipelineTopics()...); err != nil {
		t.Fatal(err)
	}
	c := startCluster(t, func(s *Settings) { s.Kafka = addr; s.RequestTimeout = 2 * time.Second })
	alice := c.login("alice")
	c.join(alice, "lobby")

	acked := map[uint64]string{}
	var mu sync.Mutex
	ack := func(res *clientpb.SendResult) {
		mu.Lock()
		defer mu.Unlock()
		acked[res.GetSeq()] = res.GetMessageId()
	}
	for i := range 3 {
		ack(sendUntilAccepted(t, alice, "lobby", fmt.Sprint("before-", i), "before"))
	}

	broker.Close()
	// Sends while the broker is down: each is answered one way or the other.
	for i := range 3 {
		sctx, scancel := context.WithTimeout(ctx, 15*time.Second)
		res, err := alice.Send(sctx, &clientpb.Send{ClientMsgId: fmt.Sprint("down-", i), To: &clientpb.Send_Room{Room: "lobby"}, Body: []byte("down")})
		scancel()
		switch {
		case err == nil:
			ack(res)
		case errCode(err) != clientpb.Error_UNAVAILABLE:
			t.Fatalf("send %d with the broker down: %v, want an answer", i, err)
		}
	}
	broker = startBroker()

	// The same client ids again (the client retries), then new ones.
	for i := range 3 {
		ack(sendUntilAccepted(t, alice, "lobby", fmt.Sprint("down-", i), "down"))
		ack(sendUntilAccepted(t, alice, "lobby", fmt.Sprint("after-", i), "after"))
	}
	conv := topics.RoomConversation("lobby")
	testinfra.Eventually(t, 60*time.Second, func() error {
		got := syncAll(t, alice, conv, 0)
		stored := map[uint64]string{}
		for _, m := range got {
			stored[m.GetSeq()] = m.GetId()
		}
		mu.Lock()
		defer mu.Unlock()
		for seq, id := range acked {
			if stored[seq] != id {
				return fmt.Errorf("acknowledged seq %d (%s) not in history (%d stored)", seq, id, len(stored))
			}
		}
		return nil
	}, "every acknowledged message in history")
}
