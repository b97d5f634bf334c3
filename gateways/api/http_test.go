package api_test

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/laneim/laneim/gateways/api"
	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/apipb"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/directory"
	"github.com/laneim/laneim/wiring/msgstore"
	"github.com/laneim/laneim/wiring/secure"
)

// httpGateway is a gateway serving HTTP (and gRPC) on loopback.
type httpGateway struct {
	t    *testing.T
	url  string // http://host:port
	grpc apipb.DirectoryClient
	rec  *testinfra.Recorder
	dir  *directory.Store
	hc   *http.Client
}

// serveHTTP runs a gateway on a real Redis directory with cfg's TLS and
// directory settings; Token and MaxBodyBytes are the tests'.
func serveHTTP(t *testing.T, cfg api.Config) *httpGateway {
	t.Helper()
	return serveHTTPWith(t, cfg, nil)
}

// serveHTTPWith is serveHTTP with a history store (nil: none).
func serveHTTPWith(t *testing.T, cfg api.Config, history api.History) *httpGateway {
	t.Helper()
	cfg.Token, cfg.MaxBodyBytes = "secret-token", 10
	rec := &testinfra.Recorder{}
	dir := directory.New(testinfra.RedisClient(t))
	s, err := api.New(cfg, rec, fakePresence{}, api.Optional{Directory: dir, History: history}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := s.HTTPServer()
	done := make(chan error, 1)
	go func() {
		if hs.TLSConfig != nil {
			done <- hs.ServeTLS(hl, "", "")
		} else {
			done <- hs.Serve(hl)
		}
	}()
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := s.GRPCServer()
	gdone := make(chan error, 1)
	go func() { gdone <- g.Serve(gl) }()
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
	t.Cleanup(func() {
		hc.CloseIdleConnections()
		// Shutdown, unlike Close, waits for every connection's goroutine,
		// among them one that lingers (up to 500 ms) after an error answer
		// before it closes its connection.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = hs.Shutdown(ctx)
		_ = hs.Close()
		<-done
		g.Stop()
		<-gdone
	})
	gw := &httpGateway{t: t, url: "http://" + hl.Addr().String(), rec: rec, dir: dir, hc: hc}
	if cfg.TLSCert != "" {
		gw.url = "https://" + hl.Addr().String()
		return gw
	}
	dc, dcloser, err := api.DialDirectory(context.Background(), gl.Addr().String(), "secret-token")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dcloser.Close() })
	gw.grpc = dc
	return gw
}

// reply is an HTTP answer.
type reply struct {
	status int
	body   map[string]any
	raw    string
}

// errorCode returns the error body's code ("" without one).
func (r reply) errorCode() string {
	e, _ := r.body["error"].(map[string]any)
	code, _ := e["code"].(string)
	return code
}

// do sends method with body and the token, and decodes the JSON answer.
func (g *httpGateway) do(method, path, token, body string) reply {
	g.t.Helper()
	authorization := ""
	if token != "" {
		authorization = "Bearer " + token
	}
	return g.doAuthorized(method, path, authorization, body)
}

// doAuthorized is do with an Authorization header as given (none if
// empty).
func (g *httpGateway) doAuthorized(method, path, authorization, body string) reply {
	g.t.Helper()
	req, err := http.NewRequest(method, g.url+path, strings.NewReader(body))
	if err != nil {
		g.t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := g.hc.Do(req)
	if err != nil {
		g.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		g.t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		g.t.Errorf("%s %s: Content-Type %q", method, path, ct)
	}
	r := reply{status: resp.StatusCode, raw: string(raw)}
	if err := json.Unmarshal(raw, &r.body); err != nil {
		g.t.Fatalf("%s %s: answer is not JSON: %v: %s", method, path, err, raw)
	}
	return r
}

// post calls a method with the right token.
func (g *httpGateway) post(method, body string) reply {
	g.t.Helper()
	return g.do(http.MethodPost, "/v1/"+method, "secret-token", body)
}

func TestHTTPTokenRequired(t *testing.T) {
	t.Parallel()
	g := serveHTTP(t, api.Config{})
	for _, tok := range []string{"", "wrong"} {
		r := g.do(http.MethodPost, "/v1/room_online", tok, `{"room":"r"}`)
		if r.status != http.StatusUnauthorized || r.errorCode() != "UNAUTHENTICATED" {
			t.Errorf("token %q: %d %s, want 401 UNAUTHENTICATED", tok, r.status, r.raw)
		}
	}
	if out := g.rec.Take(); len(out) != 0 {
		t.Errorf("refused calls published %d messages", len(out))
	}
	// The scheme's name is case-insensitive (RFC 9110), the token is not.
	for authorization, want := range map[string]int{
		"bearer secret-token": http.StatusOK,
		"BEARER secret-token": http.StatusOK,
		"Bearer Secret-token": http.StatusUnauthorized,
		"Basic secret-token":  http.StatusUnauthorized,
		"Bearersecret-token":  http.StatusUnauthorized,
	} {
		if r := g.doAuthorized(http.MethodPost, "/v1/room_online", authorization, `{"room":"r"}`); r.status != want {
			t.Errorf("Authorization: %s: %d %s, want %d", authorization, r.status, r.raw, want)
		}
	}
}

func TestHTTPPushes(t *testing.T) {
	t.Parallel()
	g := serveHTTP(t, api.Config{})
	// "aGk=" is "hi" in base64 (protobuf's JSON mapping of bytes).
	r := g.post("push_users", `{"from":"shop","users":["a","b"],"content":{"body":"aGk=","client_msg_id":"order-1"}}`)
	if r.status != http.StatusOK || r.body["accepted"] != 2.0 {
		t.Fatalf("push_users: %d %s", r.status, r.raw)
	}
	if ids, _ := r.body["client_msg_ids"].([]any); len(ids) != 2 || ids[0] != "order-1:a" {
		t.Errorf("push_users client_msg_ids: %s", r.raw)
	}
	subs := submitted(t, g.rec)
	if len(subs) != 2 || subs[1].GetUser() != "b" || string(subs[1].GetBody()) != "hi" || subs[1].GetSender() != "shop" || !subs[1].GetTrusted() {
		t.Fatalf("submitted %v", subs)
	}
	// lowerCamelCase field names are accepted too.
	if r := g.post("push_room", `{"room":"lobby","content":{"body":"eA==","contentType":"text/plain"}}`); r.status != http.StatusOK || r.body["accepted"] != 1.0 {
		t.Fatalf("push_room: %d %s", r.status, r.raw)
	}
	if subs := submitted(t, g.rec); len(subs) != 1 || subs[0].GetRoom() != "lobby" || subs[0].GetContentType() != "text/plain" || subs[0].GetSender() != topics.SystemSender {
		t.Fatalf("room push %v", subs)
	}
	if r := g.post("broadcast", `{"content":{"body":"eA=="}}`); r.status != http.StatusOK {
		t.Fatalf("broadcast: %d %s", r.status, r.raw)
	}
	if subs := submitted(t, g.rec); len(subs) != 1 || !subs[0].GetBroadcast() {
		t.Fatalf("broadcast %v", subs)
	}
}

func TestHTTPQueries(t *testing.T) {
	t.Parallel()
	g := serveHTTP(t, api.Config{})
	r := g.post("online_status", `{"users":["alice","bob"]}`)
	online, _ := r.body["online"].(map[string]any)
	if r.status != http.StatusOK || online["alice"] != true || online["bob"] != false {
		t.Fatalf("online_status: %d %s", r.status, r.raw)
	}
	r = g.post("room_online", `{"room":"abc"}`)
	if r.status != http.StatusOK || r.body["online_users"] != 3.0 || r.body["connections"] != 6.0 || r.body["room"] != "abc" {
		t.Fatalf("room_online: %d %s", r.status, r.raw)
	}
	// Without a history store or etcd, those methods are unavailable.
	if r := g.post("history", `{"conversation":"room:abc"}`); r.status != http.StatusServiceUnavailable || r.errorCode() != "UNAVAILABLE" {
		t.Errorf("history without a store: %d %s", r.status, r.raw)
	}
	// An empty body is the empty request.
	if r := g.post("pick_comet", ``); r.status != http.StatusServiceUnavailable {
		t.Errorf("pick_comet without etcd: %d %s", r.status, r.raw)
	}
}

func TestHTTPRefusals(t *testing.T) {
	t.Parallel()
	g := serveHTTP(t, api.Config{})
	for _, c := range []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"bad JSON", "POST", "/v1/push_room", `{"room":`, 400, "INVALID_ARGUMENT"},
		{"unknown field", "POST", "/v1/push_room", `{"rooom":"r"}`, 400, "INVALID_ARGUMENT"},
		{"wrong type", "POST", "/v1/online_status", `{"users":"alice"}`, 400, "INVALID_ARGUMENT"},
		{"body not base64", "POST", "/v1/push_room", `{"room":"r","content":{"body":"not base64!"}}`, 400, "INVALID_ARGUMENT"},
		{"body too large", "POST", "/v1/broadcast", `{"content":{"body":"MDEyMzQ1Njc4OTA="}}`, 400, "INVALID_ARGUMENT"},
		{"invalid room id", "POST", "/v1/push_room", `{"room":"a:b","content":{"body":"eA=="}}`, 400, "INVALID_ARGUMENT"},
		{"request too large", "POST", "/v1/push_room", `{"room":"` + strings.Repeat("x", 1<<20) + `"}`, 413, "INVALID_ARGUMENT"},
		{"GET", "GET", "/v1/room_online", ``, 405, "METHOD_NOT_ALLOWED"},
		{"unknown method", "POST", "/v1/publish", `{}`, 404, "NOT_FOUND"},
		{"outside /v1/", "POST", "/", `{}`, 404, "NOT_FOUND"},
	} {
		r := g.do(c.method, c.path, "secret-token", c.body)
		if r.status != c.status || r.errorCode() != c.code {
			t.Errorf("%s: %d %s, want %d %s", c.name, r.status, r.raw, c.status, c.code)
		}
		if msg, _ := r.body["error"].(map[string]any)["message"].(string); msg == "" {
			t.Errorf("%s: no error message: %s", c.name, r.raw)
		}
	}
	if out := g.rec.Take(); len(out) != 0 {
		t.Errorf("refused calls published %d messages", len(out))
	}
}

// revocations returns the session events published since the last call.
func revocations(t *testing.T, rec *testinfra.Recorder) []*topicpb.SessionEvent {
	t.Helper()
	var out []*topicpb.SessionEvent
	for _, p := range rec.Take() {
		if p.Topic != topics.SessionEvents.Name {
			t.Fatalf("published to %s", p.Topic)
		}
		ev, err := topics.SessionEvents.Decode(p.Msg)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

func TestHTTPDirectory(t *testing.T) {
	t.Parallel()
	g := serveHTTP(t, api.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	steps := []struct {
		method, body string
		status       int
		code         string
	}{
		{"add_member", `{"room":"lobby","user":"alice"}`, 404, "NOT_FOUND"}, // no room yet
		{"put_room", `{"room":"lobby","name":"Lobby"}`, 200, ""},
		{"add_member", `{"room":"lobby","user":"alice"}`, 404, "NOT_FOUND"}, // no user yet
		{"put_user", `{"user":"alice","name":"Alice"}`, 200, ""},
		{"put_user", `{"user":"bob"}`, 200, ""},
		{"add_member", `{"room":"lobby","user":"alice"}`, 200, ""},
		{"add_member", `{"room":"lobby","user":"alice"}`, 200, ""}, // idempotent
		{"add_member", `{"room":"lobby","user":"bob"}`, 200, ""},
		{"add_member", `{"room":"lobby","user":"a b"}`, 400, "INVALID_ARGUMENT"},
		{"put_room", `{"room":"lobby:1"}`, 400, "INVALID_ARGUMENT"},
		{"put_room", `{}`, 400, "INVALID_ARGUMENT"},
		{"put_room", `{"room":"lobby","kind":"a b"}`, 400, "INVALID_ARGUMENT"},
		{"put_room", `{"room":"lobby","name":"` + strings.Repeat("n", api.MaxNameBytes+1) + `"}`, 400, "INVALID_ARGUMENT"},
		{"put_user", `{"user":"bob","name":"` + strings.Repeat("n", api.MaxNameBytes+1) + `"}`, 400, "INVALID_ARGUMENT"},
		{"put_user", `{"user":"bob","name":"` + strings.Repeat("n", api.MaxNameBytes) + `"}`, 200, ""},
		{"block", `{"user":"alice","blocked":"bob"}`, 200, ""},
		{"block", `{"user":"nobody","blocked":"bob"}`, 404, "NOT_FOUND"},
		{"block", `{"user":"alice","blocked":"nobody"}`, 404, "NOT_FOUND"},
		{"block", `{"user":"alice","blocked":"alice"}`, 400, "INVALID_ARGUMENT"}, // oneself
		{"unblock", `{"user":"alice","blocked":"alice"}`, 200, ""},               // idempotent, oneself too
		{"delete_room", `{"room":"nowhere"}`, 404, "NOT_FOUND"},
		{"delete_user", `{"user":"nobody"}`, 404, "NOT_FOUND"},
		{"remove_member", `{"room":"nowhere","user":"alice"}`, 404, "NOT_FOUND"},
	}
	for _, s := range steps {
		r := g.post(s.method, s.body)
		if r.status != s.status || r.errorCode() != s.code {
			t.Fatalf("%s %s: %d %s, want %d %s", s.method, s.body, r.status, r.raw, s.status, s.code)
		}
	}
	if room, ok, err := g.dir.Room(ctx, "lobby"); err != nil || !ok || room.Name != "Lobby" || room.Kind != api.DefaultRoomKind {
		t.Fatalf("room lobby = %v %v %v", room, ok, err)
	}
	if ok, err := g.dir.IsMember(ctx, "lobby", "alice"); err != nil || !ok {
		t.Fatalf("alice member = %v %v", ok, err)
	}
	if ok, err := g.dir.Blocks(ctx, "alice", "bob"); err != nil || !ok {
		t.Fatalf("alice blocks bob = %v %v", ok, err)
	}
	if evs := revocations(t, g.rec); len(evs) != 0 {
		t.Fatalf("additions revoked %v", evs)
	}

	// Taking things away tells presence (after the directory has it).
	if r := g.post("remove_member", `{"room":"lobby","user":"alice"}`); r.status != 200 {
		t.Fatalf("remove_member: %d %s", r.status, r.raw)
	}
	if ok, _ := g.dir.IsMember(ctx, "lobby", "alice"); ok {
		t.Error("alice still a member")
	}
	if evs := revocations(t, g.rec); len(evs) != 1 || evs[0].GetKind() != topicpb.SessionEvent_MEMBERSHIP_REVOKED || evs[0].GetUser() != "alice" || evs[0].GetRoom() != "lobby" {
		t.Errorf("remove_member revocations %v", evs)
	}
	if r := g.post("unblock", `{"user":"alice","blocked":"bob"}`); r.status != 200 {
		t.Fatalf("unblock: %d %s", r.status, r.raw)
	}
	if ok, _ := g.dir.Blocks(ctx, "alice", "bob"); ok {
		t.Error("alice still blocks bob")
	}
	if r := g.post("put_user", `{"user":"alice","disabled":true}`); r.status != 200 {
		t.Fatalf("disable: %d %s", r.status, r.raw)
	}
	if u, _, _ := g.dir.User(ctx, "alice"); !u.Disabled {
		t.Error("alice not disabled")
	}
	if evs := revocations(t, g.rec); len(evs) != 1 || evs[0].GetKind() != topicpb.SessionEvent_USER_REVOKED || evs[0].GetUser() != "alice" {
		t.Errorf("disable revocations %v", evs)
	}
	if r := g.post("delete_room", `{"room":"lobby"}`); r.status != 200 {
		t.Fatalf("delete_room: %d %s", r.status, r.raw)
	}
	if _, ok, _ := g.dir.Room(ctx, "lobby"); ok {
		t.Error("lobby still exists")
	}
	if evs := revocations(t, g.rec); len(evs) != 1 || evs[0].GetUser() != "bob" || evs[0].GetRoom() != "lobby" {
		t.Errorf("delete_room revocations %v", evs)
	}
	if r := g.post("delete_user", `{"user":"bob"}`); r.status != 200 {
		t.Fatalf("delete_user: %d %s", r.status, r.raw)
	}
	if _, ok, _ := g.dir.User(ctx, "bob"); ok {
		t.Error("bob still exists")
	}
	// A deleted user's id is not given again (outside abuse check: a new
	// account under it saw the old one's conversations and logged in
	// with its tokens).
	if r := g.post("put_user", `{"user":"bob","name":"New Bob"}`); r.status != 400 || r.errorCode() != "FAILED_PRECONDITION" || !strings.Contains(r.raw, "deleted") {
		t.Fatalf("put_user of a deleted id: %d %s, want 400 FAILED_PRECONDITION", r.status, r.raw)
	}
	if _, ok, _ := g.dir.User(ctx, "bob"); ok {
		t.Error("bob was created again")
	}

	// The gRPC service answers the same, with the same codes.
	if _, err := g.grpc.AddMember(ctx, &apipb.MemberRequest{Room: "nowhere", User: "alice"}); status.Code(err) != codes.NotFound {
		t.Errorf("gRPC add to an unknown room: %v, want NotFound", err)
	}
	if _, err := g.grpc.PutRoom(ctx, &apipb.PutRoomRequest{Room: "dev", Kind: "channel"}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.grpc.AddMember(ctx, &apipb.MemberRequest{Room: "dev", User: "alice"}); err != nil {
		t.Fatal(err)
	}
	if ok, _ := g.dir.IsMember(ctx, "dev", "alice"); !ok {
		t.Error("gRPC AddMember: alice not a member of dev")
	}
}

func TestDirectoryRefusedWhenMySQLIsTheSystemOfRecord(t *testing.T) {
	t.Parallel()
	g := serveHTTP(t, api.Config{DirectoryFollowsMySQL: true})
	if r := g.post("put_room", `{"room":"lobby"}`); r.status != http.StatusBadRequest || r.errorCode() != "FAILED_PRECONDITION" {
		t.Errorf("put_room: %d %s, want 400 FAILED_PRECONDITION", r.status, r.raw)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := g.grpc.PutRoom(ctx, &apipb.PutRoomRequest{Room: "lobby"}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("gRPC PutRoom: %v, want FailedPrecondition", err)
	}
	if _, ok, _ := g.dir.Room(ctx, "lobby"); ok {
		t.Error("lobby written despite MySQL")
	}
}

func TestHTTPMutualTLS(t *testing.T) {
	t.Parallel()
	serverCA, clientCA := testinfra.NewCA(t, "api"), testinfra.NewCA(t, "api-clients")
	cert, key := serverCA.Issue("api", "127.0.0.1")
	g := serveHTTP(t, api.Config{TLSCert: cert, TLSKey: key, ClientCA: clientCA.File})

	clientCert, clientKey := clientCA.Issue("backend")
	withCert, err := secure.TLS{CA: serverCA.File, Cert: clientCert, Key: clientKey}.Client()
	if err != nil {
		t.Fatal(err)
	}
	g.hc.Transport = &http.Transport{TLSClientConfig: withCert}
	if r := g.post("room_online", `{"room":"abc"}`); r.status != http.StatusOK {
		t.Fatalf("client with a certificate: %d %s", r.status, r.raw)
	}
	without, err := secure.TLS{CA: serverCA.File}.Client()
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]*tls.Config{"no client certificate": without, "plain HTTP": nil} {
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
		url := g.url
		if tc == nil {
			url = "http" + strings.TrimPrefix(url, "https")
		}
		req, _ := http.NewRequest(http.MethodPost, url+"/v1/room_online", strings.NewReader(`{"room":"abc"}`))
		req.Header.Set("Authorization", "Bearer secret-token")
		resp, err := hc.Do(req)
		hc.CloseIdleConnections()
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Errorf("%s: answered 200", name)
			}
		} else if errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// snake turns a gRPC method name into its HTTP name: PushUsers → push_users.
func snake(name string) string {
	var b strings.Builder
	for i, r := range name {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// TestHTTPServesEveryGRPCMethod: each method of the Push and Directory
// services is at /v1/<snake_case name>, behind the token.
func TestHTTPServesEveryGRPCMethod(t *testing.T) {
	t.Parallel()
	g := serveHTTP(t, api.Config{})
	services := apipb.File_api_proto.Services()
	if services.Len() != 2 {
		t.Fatalf("%d services in api.proto; serve the new one over HTTP", services.Len())
	}
	for i := range services.Len() {
		methods := services.Get(i).Methods()
		for j := range methods.Len() {
			path := "/v1/" + snake(string(methods.Get(j).Name()))
			if r := g.do(http.MethodPost, path, "", `{}`); r.status != http.StatusUnauthorized {
				t.Errorf("%s without a token: %d %s, want 401", path, r.status, r.raw)
			}
		}
	}
}

// TestHTTPHistoryCurrentState: history with current_state answers each
// message as it is now, even when its edit or recall is after the page;
// without it, as stored.
func TestHTTPHistoryCurrentState(t *testing.T) {
	t.Parallel()
	store, err := msgstore.OpenBolt(filepath.Join(t.TempDir(), "h.db"), msgstore.Retention{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	conv := "room:lobby"
	err = store.Append(context.Background(), []*clientpb.Message{
		{Id: "1", Conversation: conv, Seq: 1, Sender: "alice", Body: []byte("helo"), ContentType: "text/plain", ClientMsgId: "m1"},
		{Id: "2", Conversation: conv, Seq: 2, Sender: "alice", Body: []byte("oops"), ClientMsgId: "m2"},
		{Id: "3", Conversation: conv, Seq: 3, Sender: "alice", Body: []byte("hello"), ContentType: "text/plain", ClientMsgId: "m1-e", Edits: 1},
		{Id: "4", Conversation: conv, Seq: 4, Sender: "alice", ClientMsgId: "m2-r", Recalls: 2},
	})
	if err != nil {
		t.Fatal(err)
	}
	g := serveHTTPWith(t, api.Config{}, store)
	type view struct {
		Seq, EditedSeq, RecalledSeq, Edits, Recalls string
		Body                                        string
	}
	page := func(body string) []view {
		t.Helper()
		r := g.post("history", body)
		if r.status != http.StatusOK {
			t.Fatalf("history %s: %d %s", body, r.status, r.raw)
		}
		var out struct {
			Messages []struct {
				Seq         string `json:"seq"`
				Body        string `json:"body"`
				EditedSeq   string `json:"edited_seq"`
				RecalledSeq string `json:"recalled_seq"`
				Edits       string `json:"edits"`
				Recalls     string `json:"recalls"`
			} `json:"messages"`
		}
		if err := json.Unmarshal([]byte(r.raw), &out); err != nil {
			t.Fatal(err)
		}
		var vs []view
		for _, m := range out.Messages {
			vs = append(vs, view{m.Seq, m.EditedSeq, m.RecalledSeq, m.Edits, m.Recalls, m.Body})
		}
		return vs
	}
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		body string
		want []view
	}{
		{`{"conversation":"room:lobby","after_seq":0,"before_seq":3,"current_state":true}`,
			[]view{{"1", "3", "0", "0", "0", b64("hello")}, {"2", "0", "4", "0", "0", ""}}},
		{`{"conversation":"room:lobby","before_seq":3}`,
			[]view{{"1", "0", "0", "0", "0", b64("helo")}, {"2", "0", "0", "0", "0", b64("oops")}}},
		{`{"conversation":"room:lobby","after_seq":2,"currentState":true}`,
			[]view{{"3", "0", "0", "1", "0", b64("hello")}, {"4", "0", "0", "0", "2", ""}}},
	}
	for _, tt := range tests {
		got := page(tt.body)
		if len(got) != len(tt.want) {
			t.Errorf("%s: %v, want %v", tt.body, got, tt.want)
			continue
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("%s: message %d = %+v, want %+v", tt.body, i, got[i], tt.want[i])
			}
		}
	}
}
