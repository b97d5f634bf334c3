package app

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/fx"

	"github.com/laneim/laneim/gateways/comet/client"
	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/workers/binlogsync"
)

// httpAPI calls a cluster's HTTP/JSON api.
type httpAPI struct {
	t     *testing.T
	base  string
	token string
	hc    *http.Client
}

func (c *cluster) httpAPI() *httpAPI {
	c.t.Helper()
	hc := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{}}
	c.t.Cleanup(hc.CloseIdleConnections)
	return &httpAPI{t: c.t, base: "http://" + c.settings.APIHTTPAddr + "/v1/", token: c.settings.APIToken, hc: hc}
}

// call posts body to method with token and decodes the JSON answer into
// out (the error body when the status is not 200); it returns the status.
func (a *httpAPI) call(method, token, body string, out any) int {
	a.t.Helper()
	req, err := http.NewRequest(http.MethodPost, a.base+method, strings.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		a.t.Fatalf("POST %s: %v", method, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatal(err)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			a.t.Fatalf("POST %s: %d, not JSON: %v: %s", method, resp.StatusCode, err, raw)
		}
	}
	return resp.StatusCode
}

// ok calls method with the cluster's token and fails the test unless it
// answers 200.
func (a *httpAPI) ok(method, body string, out any) {
	a.t.Helper()
	var e apiError
	if out == nil {
		out = &e
	}
	if st := a.call(method, a.token, body, out); st != http.StatusOK {
		a.t.Fatalf("POST %s %s: status %d %+v", method, body, st, out)
	}
}

type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// TestE2EHTTPAPI drives the whole cluster through the HTTP/JSON api: a
// room push reaches WebSocket members, online status and history answer,
// and a room and a user created over HTTP can be used at once, until the
// membership is removed and the user disabled.
func TestE2EHTTPAPI(t *testing.T) {
	t.Parallel()
	c := startCluster(t, func(s *Settings) {
		s.APIHTTPAddr = testinfra.FreeAddr(t)
	})
	a := c.httpAPI()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Authentication is the gRPC api's.
	for _, tok := range []string{"", "wrong"} {
		var e apiError
		if st := a.call("online_status", tok, `{"users":["alice"]}`, &e); st != http.StatusUnauthorized || e.Error.Code != "UNAUTHENTICATED" {
			t.Errorf("token %q: %d %+v, want 401 UNAUTHENTICATED", tok, st, e)
		}
	}
	var e apiError
	if st := a.call("push_room", a.token, `{"room":"lobby","content":`, &e); st != http.StatusBadRequest || e.Error.Code != "INVALID_ARGUMENT" {
		t.Errorf("bad JSON: %d %+v, want 400 INVALID_ARGUMENT", st, e)
	}
	// A push to a room or user the directory lacks is refused, not lost.
	for method, body := range map[string]string{
		"push_room":  `{"room":"nowhere","content":{"body":"` + b64("x") + `"}}`,
		"push_users": `{"users":["alice","ghost"],"content":{"body":"` + b64("x") + `"}}`,
	} {
		var e apiError
		if st := a.call(method, a.token, body, &e); st != http.StatusNotFound || e.Error.Code != "NOT_FOUND" {
			t.Errorf("%s to an unknown: %d %+v, want 404 NOT_FOUND", method, st, e)
		}
	}

	// A room push reaches the members' WebSocket connections.
	alice := c.login("alice")
	c.join(alice, "lobby")
	bob := c.login("bob")
	c.join(bob, "lobby")
	var pushed struct {
		Accepted     int      `json:"accepted"`
		ClientMsgIDs []string `json:"client_msg_ids"`
	}
	a.ok("push_room", `{"room":"lobby","content":{"body":"`+b64("announcement")+`","content_type":"text/plain","client_msg_id":"ann-1"}}`, &pushed)
	if pushed.Accepted != 1 || len(pushed.ClientMsgIDs) != 1 || pushed.ClientMsgIDs[0] != "ann-1" {
		t.Fatalf("push_room reply %+v", pushed)
	}
	conv := topics.RoomConversation("lobby")
	var seq uint64
	for _, conn := range []*client.Conn{alice, bob} {
		m := nextMessages(t, conn, conv, 1)[0]
		if string(m.GetBody()) != "announcement" || m.GetSender() != topics.SystemSender || m.GetContentType() != "text/plain" {
			t.Fatalf("room push: got %v", m)
		}
		seq = m.GetSeq()
	}
	a.ok("push_users", `{"from":"support","users":["bob"],"content":{"body":"`+b64("ticket 7")+`"}}`, nil)
	if m := nextMessages(t, bob, topics.DirectConversation("support", "bob"), 1)[0]; string(m.GetBody()) != "ticket 7" {
		t.Fatalf("user push: got %v", m)
	}

	// Online status.
	var online struct {
		Online map[string]bool `json:"online"`
	}
	a.ok("online_status", `{"users":["alice","carol"]}`, &online)
	if !online.Online["alice"] || online.Online["carol"] || len(online.Online) != 2 {
		t.Errorf("online_status = %v, want alice only", online.Online)
	}
	var ro struct {
		OnlineUsers int `json:"online_users"`
	}
	a.ok("room_online", `{"room":"lobby"}`, &ro)
	if ro.OnlineUsers != 2 {
		t.Errorf("room_online = %+v, want 2 users", ro)
	}

	// History has the push once persist stored it.
	type historyMessage struct {
		Seq    string `json:"seq"` // 64-bit integers are JSON strings
		Sender string `json:"sender"`
		Body   []byte `json:"body"`
	}
	testinfra.Eventually(t, 10*time.Second, func() bool {
		var h struct {
			Messages []historyMessage `json:"messages"`
		}
		a.ok("history", `{"conversation":"room:lobby","limit":10}`, &h)
		for _, m := range h.Messages {
			if string(m.Body) == "announcement" && m.Seq == strconv.FormatUint(seq, 10) && m.Sender == topics.SystemSender {
				return true
			}
		}
		return false
	}, "history never had the announcement")

	// A room and a user made over HTTP work at once: dave joins and
	// receives.
	a.ok("put_user", `{"user":"dave","name":"Dave"}`, nil)
	a.ok("put_room", `{"room":"ops","name":"Operations"}`, nil)
	a.ok("add_member", `{"room":"ops","user":"dave"}`, nil)
	dave := c.login("dave")
	c.join(dave, "ops")
	a.ok("push_room", `{"room":"ops","content":{"body":"`+b64("deploy at 5")+`"}}`, nil)
	if m := nextMessages(t, dave, topics.RoomConversation("ops"), 1)[0]; string(m.GetBody()) != "deploy at 5" {
		t.Fatalf("ops push: got %v", m)
	}
	if _, err := dave.SendRoom(ctx, "ops", []byte("on it")); err != nil {
		t.Fatalf("dave sends to ops: %v", err)
	}

	// Unknown rooms and users are 404.
	if st := a.call("add_member", a.token, `{"room":"nowhere","user":"dave"}`, &e); st != http.StatusNotFound || e.Error.Code != "NOT_FOUND" {
		t.Errorf("add to an unknown room: %d %+v", st, e)
	}
	if st := a.call("add_member", a.token, `{"room":"ops","user":"nobody"}`, &e); st != http.StatusNotFound || e.Error.Code != "NOT_FOUND" {
		t.Errorf("add an unknown user: %d %+v", st, e)
	}

	// Membership removed: dave can no longer send to nor join ops.
	a.ok("remove_member", `{"room":"ops","user":"dave"}`, nil)
	testinfra.Eventually(t, 10*time.Second, func() bool {
		_, err := dave.SendRoom(ctx, "ops", []byte("still in?"))
		return errCode(err) == clientpb.Error_NOT_MEMBER
	}, "dave could still send to ops")
	if _, err := dave.Join(ctx, "ops"); errCode(err) != clientpb.Error_NOT_MEMBER {
		t.Errorf("dave joins ops after removal: %v, want NOT_MEMBER", err)
	}

	// Disabled: dave's connection closes and his logins are refused.
	a.ok("put_user", `{"user":"dave","disabled":true}`, nil)
	select {
	case <-dave.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("disabled dave's connection still open after 10 s")
	}
	conn := c.dial(false)
	if _, err := conn.Login(ctx, c.token("dave", time.Hour), "test"); err == nil {
		t.Error("disabled dave could log in")
	}

	// A deleted room is unknown to joins.
	a.ok("delete_room", `{"room":"ops"}`, nil)
	if _, err := alice.Join(ctx, "ops"); errCode(err) != clientpb.Error_UNKNOWN_ROOM {
		t.Errorf("join a deleted room: %v, want UNKNOWN_ROOM", err)
	}
}

// TestE2EHTTPDirectoryWritesMySQL: where MySQL is the system of record, a
// gateway with --api-mysql writes the tables and binlog sync brings the
// changes to the directory; without it the Directory methods are refused.
func TestE2EHTTPDirectoryWritesMySQL(t *testing.T) {
	t.Parallel()
	db := testinfra.StartMariaDB(t, "laneim", binlogsync.Statements())
	sql := db.Admin(t)
	db.Exec(t, sql,
		"INSERT INTO users (id, name) VALUES ('alice', 'Alice')",
		"INSERT INTO rooms (id, name) VALUES ('lobby', 'Lobby')",
		"INSERT INTO room_members (room_id, user_id) VALUES ('lobby', 'alice')",
	)
	readOnly := testinfra.FreeAddr(t)
	c := startCluster(t, func(s *Settings) {
		s.MySQL = fmt.Sprintf("mariadb://%s:%s@%s/%s", db.SyncUser, db.SyncPassword, db.Addr, db.Database)
		s.APIMySQL = fmt.Sprintf("mariadb://%s:%s@%s/%s", db.AdminUser, db.AdminPassword, db.Addr, db.Database)
		s.APIHTTPAddr = testinfra.FreeAddr(t)
	})
	a := c.httpAPI()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Existence is checked in MySQL, at once.
	var e apiError
	if st := a.call("add_member", a.token, `{"room":"ops","user":"alice"}`, &e); st != http.StatusNotFound || e.Error.Code != "NOT_FOUND" {
		t.Errorf("add to a room not in MySQL: %d %+v", st, e)
	}
	a.ok("put_user", `{"user":"dave","name":"Dave"}`, nil)
	a.ok("put_room", `{"room":"ops","name":"Operations"}`, nil)
	a.ok("add_member", `{"room":"ops","user":"dave"}`, nil)
	res, err := sql.Execute("SELECT COUNT(*) FROM room_members WHERE room_id = 'ops' AND user_id = 'dave'")
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.GetInt(0, 0); n != 1 {
		t.Fatalf("membership rows in MySQL: %d", n)
	}

	// Binlog sync brings them to the directory: dave logs in and joins.
	var dave *client.Conn
	testinfra.Eventually(t, 20*time.Second, func() bool {
		conn := c.dial(false)
		if _, err := conn.Login(ctx, c.token("dave", time.Hour), "test"); err != nil {
			conn.Close()
			return false
		}
		if _, err := conn.Join(ctx, "ops"); err != nil {
			conn.Close()
			return false
		}
		dave = conn
		return true
	}, "dave, written to MySQL over HTTP, never could log in and join ops")

	// Removal goes the same way, and binlog sync revokes it.
	a.ok("remove_member", `{"room":"ops","user":"dave"}`, nil)
	testinfra.Eventually(t, 10*time.Second, func() bool {
		_, err := dave.SendRoom(ctx, "ops", []byte("still in?"))
		return errCode(err) == clientpb.Error_NOT_MEMBER
	}, "dave could still send to ops")

	// A gateway with --mysql but no --api-mysql refuses.
	s := c.settings
	s.APIMySQL, s.APIHTTPAddr, s.History, s.AdminAddr = "", readOnly, "", ""
	s.APIAddr = testinfra.FreeAddr(t)
	if err := s.Validate(API); err != nil {
		t.Fatal(err)
	}
	app := fx.New(s.Options(slog.New(slog.DiscardHandler), API))
	if err := app.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := app.Stop(context.Background()); err != nil {
			t.Error(err)
		}
	}()
	ro := &httpAPI{t: t, base: "http://" + readOnly + "/v1/", token: s.APIToken, hc: a.hc}
	if st := ro.call("put_room", ro.token, `{"room":"more"}`, &e); st != http.StatusBadRequest || e.Error.Code != "FAILED_PRECONDITION" {
		t.Errorf("put_room without --api-mysql: %d %+v, want 400 FAILED_PRECONDITION", st, e)
	}
}
