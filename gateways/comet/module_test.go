package comet_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/coder/websocket"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/laneim/laneim/gateways/comet"
	"github.com/laneim/laneim/gateways/comet/client"
	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring"
	"github.com/laneim/laneim/wiring/pipeline"
)

// cometApp is a process running comet.Module with a Kafka publisher and a
// router for the handlers, as the laneim binary assembles it (less Redis).
func cometApp(t *testing.T, kcfg wiring.KafkaConfig, cfg comet.Config, populate ...any) fx.Option {
	logger := slog.New(slog.DiscardHandler)
	newRouter := func(lc fx.Lifecycle, handlers []pipeline.Handler, pub message.Publisher) (*message.Router, error) {
		var subs []message.Subscriber
		lc.Append(fx.StopHook(func() {
			for _, s := range subs {
				s.Close()
			}
		}))
		subscribe := func(group string) (message.Subscriber, error) {
			s, err := wiring.NewSubscriber(kcfg, group, logger)
			if err == nil {
				subs = append(subs, s)
			}
			return s, err
		}
		return wiring.NewRouter(wiring.RouterConfig{}, handlers, subscribe, pub, logger)
	}
	return fx.Options(
		fx.NopLogger,
		fx.Supply(cfg, wiring.Config{Kafka: kcfg}, logger),
		fx.Provide(wiring.NewMetrics),
		fx.Provide(func(lc fx.Lifecycle) (message.Publisher, error) {
			p, err := wiring.NewPublisher(kcfg)
			if err != nil {
				return nil, err
			}
			lc.Append(fx.StopHook(p.Close))
			return p, nil
		}),
		fx.Provide(fx.Annotate(newRouter, fx.ParamTags("", pipeline.Group, ""))),
		fx.Invoke(wiring.RunRouter),
		comet.Module,
		fx.Populate(populate...),
	)
}

func TestModuleOverKafka(t *testing.T) {
	kcfg := testinfra.Kafka(t)
	addr := testinfra.FreeAddr(t)
	var cm *comet.Comet
	var pub message.Publisher
	app := fxtest.New(t, cometApp(t, kcfg, comet.Config{ID: "m1", Secret: testSecret, Addr: addr}, &cm, &pub))
	app.RequireStart()
	stopped := false
	defer func() {
		if !stopped {
			app.RequireStop()
		}
	}()

	// The delivery topic exists, with its two lanes.
	admin, err := sarama.NewClusterAdmin(kcfg.Brokers, sarama.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	list, err := admin.ListTopics()
	admin.Close()
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := list["deliver.m1"]; !ok || d.NumPartitions != topics.Deliveries.Partitions {
		t.Fatalf("deliver.m1: %+v, %v", d, ok)
	}

	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "ok" {
		t.Errorf("healthz: %d %q", resp.StatusCode, body)
	}
	// Headers are read up to wiring.MaxHeaderBytes, not net/http's 1 MiB.
	big, err := http.NewRequest(http.MethodGet, "http://"+addr+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	big.Header.Set("X-Padding", strings.Repeat("p", 2*wiring.MaxHeaderBytes))
	if resp, err := http.DefaultClient.Do(big); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("an upgrade with %d bytes of headers: %s, want 431", 2*wiring.MaxHeaderBytes, resp.Status)
	}

	// Login goes to Kafka; the answer comes back through deliver.m1 and the router.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sub, err := wiring.NewSubscriber(kcfg, "test.login", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	requests, err := sub.Subscribe(ctx, topics.LoginRequests.Name)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := client.Dial(ctx, "ws://"+addr+"/ws", client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tok := token(t, "alice")
	if err := conn.Write(ctx, &clientpb.ClientFrame{RequestId: 1, Body: &clientpb.ClientFrame_Login{Login: &clientpb.Login{Token: tok}}}); err != nil {
		t.Fatal(err)
	}
	var req *topicpb.LoginRequest
	select {
	case msg := <-requests:
		msg.Ack()
		// The topic has the verified claims, not the bearer token.
		if bytes.Contains(msg.Payload, []byte(tok)) || bytes.Contains(msg.Payload, []byte(strings.Split(tok, ".")[2])) {
			t.Fatal("login.requests holds the token")
		}
		if req, err = topics.LoginRequests.Decode(msg); err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("no login request on Kafka")
	}
	if req.GetSession().GetComet() != "m1" || req.GetUser() != "alice" {
		t.Fatalf("login request %v", req)
	}
	answer, err := topics.Deliveries.Encode(&topicpb.Delivery{
		Conns:   []string{req.GetSession().GetConn()},
		Control: &topicpb.Control{Authenticate: "alice"},
		Frame:   &clientpb.ServerFrame{RequestId: 1, Body: &clientpb.ServerFrame_LoginResult{LoginResult: &clientpb.LoginResult{Ok: true, User: "alice"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(topics.Delivery("m1"), answer); err != nil {
		t.Fatal(err)
	}
	select {
	case fr := <-conn.Frames():
		if fr.GetLoginResult().GetUser() != "alice" {
			t.Fatalf("got %v", fr)
		}
	case <-ctx.Done():
		t.Fatal("no login result through Kafka")
	}
	if st := cm.Stats(); st.Users != 1 {
		t.Errorf("stats %+v", st)
	}

	// A second comet on the same address fails to start.
	clash := fx.New(cometApp(t, kcfg, comet.Config{ID: "m2", Secret: testSecret, Addr: addr}))
	if err := clash.Start(ctx); err == nil || !strings.Contains(err.Error(), "listen") {
		t.Errorf("second comet on %s: %v", addr, err)
		clash.Stop(ctx)
	}

	app.RequireStop()
	stopped = true
	<-conn.Done()
	if got := websocket.CloseStatus(conn.Err()); got != websocket.StatusGoingAway {
		t.Errorf("close status on stop %v, want 1001", got)
	}
}

// TestModuleRegistrationFailureUndoesStart starts comet.Module with an
// etcd client that fails every call, so that registering the comet in the
// directory fails after the topic is made and the address is listened on.
// fx runs no OnStop for a hook whose OnStart failed, so the start must
// undo itself: afterwards no goroutine of the comet (HTTP server,
// heartbeats) is left and the address is free again.
func TestModuleRegistrationFailureUndoesStart(t *testing.T) {
	kcfg := testinfra.Kafka(t)
	etcd, err := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:1"}, DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	etcd.Close() // every call now fails at once
	// What runs now (the broker, the closed client winding down) is not
	// the comet's.
	before := goleak.IgnoreCurrent()

	addr := testinfra.FreeAddr(t)
	var cm *comet.Comet
	app := fx.New(
		fx.NopLogger,
		fx.Supply(comet.Config{ID: "r1", Secret: testSecret, Addr: addr, HeartbeatInterval: 50 * time.Millisecond}, wiring.Config{Kafka: kcfg}, slog.New(slog.DiscardHandler), etcd),
		fx.Provide(wiring.NewMetrics),
		fx.Provide(func() message.Publisher { return &testinfra.Recorder{} }),
		comet.Module,
		fx.Populate(&cm),
	)
	if err := app.Err(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = app.Start(ctx)
	if err == nil {
		app.Stop(ctx)
		t.Fatal("start with a failing etcd succeeded")
	}
	if !strings.Contains(err.Error(), "discovery") {
		t.Fatalf("start failed with %v, want a discovery error", err)
	}

	goleak.VerifyNone(t, before,
		// Sarama's metrics library starts one process-wide ticker.
		goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"),
	)
	testinfra.Eventually(t, wait, func() bool {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return false
		}
		l.Close()
		return true
	}, "%s still listened on after the failed start", addr)
}

// TestModuleServesWSS runs the comet with a certificate: a client trusting
// the CA exchanges frames over wss://, the page is served over https, and
// a plain ws:// client gets nothing.
func TestModuleServesWSS(t *testing.T) {
	kcfg := testinfra.Kafka(t)
	ca := testinfra.NewCA(t, "comet")
	cert, key := ca.Issue("comet")
	addr := testinfra.FreeAddr(t)
	app := fxtest.New(t, cometApp(t, kcfg, comet.Config{ID: "tls1", Secret: testSecret, Addr: addr, TLSCert: cert, TLSKey: key}))
	app.RequireStart()
	defer app.RequireStop()

	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	resp, err := hc.Get("https://" + addr + "/healthz")
	if err != nil {
		t.Fatalf("https healthz: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil {
		t.Fatalf("https healthz: %d, TLS %v", resp.StatusCode, resp.TLS != nil)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := client.Dial(ctx, "wss://"+addr+"/ws", client.Options{HTTPClient: hc})
	if err != nil {
		t.Fatalf("wss dial: %v", err)
	}
	defer conn.Close()
	if _, err := conn.Ping(ctx); err != nil {
		t.Fatalf("ping over wss: %v", err)
	}

	if c, err := client.Dial(ctx, "ws://"+addr+"/ws", client.Options{}); err == nil {
		c.Close()
		t.Error("plain ws:// accepted by a TLS comet")
	}
	if c, err := client.Dial(ctx, "wss://"+addr+"/ws", client.Options{}); err == nil {
		c.Close()
		t.Error("a client not trusting the CA connected")
	}
}
