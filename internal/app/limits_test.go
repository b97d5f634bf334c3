package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/laneim/laneim/gateways/comet/client"
	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/workers/presence"
)

// startComet runs another comet, id, beside the cluster's (which it
// shares the workers of) and returns its WebSocket URL.
func (c *cluster) startComet(id string) string {
	c.t.Helper()
	s := c.settings
	s.CometID = id
	s.CometAddr = testinfra.FreeAddr(c.t)
	s.AdminAddr, s.History = "", ""
	r := &restartable{t: c.t, opts: s.Options(slog.New(testWriter{c.t}.handler()), Comet)}
	r.start()
	c.t.Cleanup(r.stop)
	return "ws://" + s.CometAddr + "/ws"
}

// tryLogin logs user in on a new connection to url and returns the
// connection and the answer, a LoginResult or an Error; a Login answered
// UNAVAILABLE (a pipeline still starting) is tried again on a new
// connection.
func (c *cluster) tryLogin(url, user string) (*client.Conn, *clientpb.ServerFrame) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for attempt := 1; ; attempt++ {
		conn, err := client.Dial(ctx, url, client.Options{})
		if err != nil {
			c.t.Fatalf("dial %s: %v", url, err)
		}
		c.t.Cleanup(func() { conn.Close() })
		res, err := conn.Do(ctx, &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Login{Login: &clientpb.Login{Token: c.token(user, time.Hour), Device: "test"}}})
		if errCode(err) == clientpb.Error_UNAVAILABLE && attempt < 10 && ctx.Err() == nil {
			conn.Close()
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if res == nil {
			c.t.Fatalf("login %s at %s: %v", user, url, err)
		}
		return conn, res
	}
}

// loginAt logs user in on a new connection to url, failing the test if
// it is refused.
func (c *cluster) loginAt(url, user string) *client.Conn {
	c.t.Helper()
	conn, res := c.tryLogin(url, user)
	if !res.GetLoginResult().GetOk() {
		c.t.Fatalf("login %s at %s: %v", user, url, res)
	}
	return conn
}

// metric returns the value of an unlabelled metric of the cluster's
// admin endpoint.
func (c *cluster) metric(name string) float64 {
	c.t.Helper()
	resp, err := http.Get("http://" + c.settings.AdminAddr + "/metrics")
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				c.t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	c.t.Fatalf("no metric %s", name)
	return 0
}

// TestE2ESessionsPerUserAcrossComets: with --max-sessions-per-user 3,
// alice logged in twice on one comet and once on another is refused a
// fourth session on either, RATE_LIMITED with retry_after_ms, and the
// connection closed (1008 "too many connections"), though each comet
// alone holds fewer than its own bound; bob is not touched; once alice
// closes a connection a login takes its place.
func TestE2ESessionsPerUserAcrossComets(t *testing.T) {
	t.Parallel()
	c := startCluster(t, func(s *Settings) { s.MaxSessionsPerUser = 3 })
	url2 := c.startComet("c2")

	first := c.loginAt(c.ws, "alice")
	c.loginAt(c.ws, "alice")
	c.loginAt(url2, "alice")
	refused := func(url string) {
		t.Helper()
		conn, res := c.tryLogin(url, "alice")
		e := res.GetError()
		if e.GetCode() != clientpb.Error_RATE_LIMITED || e.GetRetryAfterMs() != uint32(presence.SessionsRetryAfter.Milliseconds()) {
			t.Fatalf("a fourth session of alice at %s answered %v, want RATE_LIMITED with retry_after_ms %d", url, res, presence.SessionsRetryAfter.Milliseconds())
		}
		select {
		case <-conn.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("the refused connection at %s is still open", url)
		}
		var ce websocket.CloseError
		if !errors.As(conn.Err(), &ce) || ce.Code != websocket.StatusPolicyViolation || ce.Reason != "too many connections" {
			t.Fatalf("the refused connection at %s ended with %v, want 1008 \"too many connections\"", url, conn.Err())
		}
	}
	refused(c.ws)
	refused(url2)
	c.loginAt(url2, "bob")
	if n := c.metric("laneim_presence_rate_limited_total"); n != 2 {
		t.Errorf("laneim_presence_rate_limited_total = %v, want 2", n)
	}

	// A place freed (presence handles the close) is taken again.
	first.Close()
	testinfra.Eventually(t, 20*time.Second, func() bool {
		_, res := c.tryLogin(url2, "alice")
		return res.GetLoginResult().GetOk()
	}, "alice never logged in again after closing a connection")
	refused(c.ws)
}

// TestE2EUserSendRateAcrossComets: with a cluster-wide budget of bursts
// of 10 messages and one more every 5 s, alice sends 8 messages through
// each of two comets (so neither comet alone sees more than the burst):
// some are refused RATE_LIMITED with retry_after_ms, no more are
// accepted than the budget holds, and bob, sending a few, is not
// limited.
func TestE2EUserSendRateAcrossComets(t *testing.T) {
	t.Parallel()
	const burst, rate = 10, 0.2
	c := startCluster(t, func(s *Settings) { s.UserSendRate, s.UserSendBurst = rate, burst })
	url2 := c.startComet("c2")
	alice := []*client.Conn{c.loginAt(c.ws, "alice"), c.loginAt(url2, "alice")}
	bob := c.loginAt(url2, "bob")

	// send sends one message to the lobby, again with the same
	// client_msg_id while answered UNAVAILABLE, and returns the answer.
	send := func(conn *client.Conn, id string) *clientpb.ServerFrame {
		t.Helper()
		for attempt := 1; ; attempt++ {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			res, err := conn.Do(ctx, &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Send{Send: &clientpb.Send{
				ClientMsgId: id, To: &clientpb.Send_Room{Room: "lobby"}, Body: []byte(id),
			}}})
			cancel()
			if errCode(err) == clientpb.Error_UNAVAILABLE && attempt < 10 {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			if res == nil {
				t.Fatalf("send %s: %v", id, err)
			}
			return res
		}
	}
	start := time.Now()
	accepted, limited := 0, 0
	for i := range 8 {
		for j, conn := range alice {
			res := send(conn, fmt.Sprintf("a-%d-%d", j, i))
			switch e := res.GetError(); {
			case res.GetSendResult() != nil:
				accepted++
			case e.GetCode() == clientpb.Error_RATE_LIMITED:
				if ms := e.GetRetryAfterMs(); ms == 0 || ms > uint32(1000/rate)+1 {
					t.Errorf("retry_after_ms %d, want within (0, %v]", ms, 1000/rate+1)
				}
				limited++
			default:
				t.Fatalf("alice's message %d through comet %d answered %v", i, j+1, res)
			}
		}
	}
	elapsed := time.Since(start)
	if limited == 0 {
		t.Fatalf("all 16 of alice's messages accepted; want refusals past the burst of %d", burst)
	}
	if most := burst + int(elapsed.Seconds()*rate) + 1; accepted > most {
		t.Fatalf("%d of alice's messages accepted in %v, want at most %d", accepted, elapsed, most)
	}
	for i := range 3 {
		if res := send(bob, fmt.Sprintf("b-%d", i)); res.GetSendResult() == nil {
			t.Fatalf("bob's message %d answered %v, want accepted", i, res)
		}
	}
	if n := c.metric("laneim_routing_rate_limited_total"); n != float64(limited) {
		t.Errorf("laneim_routing_rate_limited_total = %v, want %d", n, limited)
	}
	t.Logf("alice: %d accepted, %d refused in %v", accepted, limited, elapsed)
}
