package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/fx"

	"github.com/laneim/laneim/internal/testinfra"
)

// TestSDK runs the TypeScript SDK's tests (gateways/comet/sdk/test, with
// Node's test runner): the SDK in Node and in headless Chromium, and the
// comet's web page built on it, against a cluster of three comets. The
// tests reach the second comet, which they stop and start again through a
// control endpoint, and use the first to send while it is down; the third
// serves https.
// deploy/test.sh installs what it needs (npm ci there, Debian's chromium).
func TestSDK(t *testing.T) {
	t.Parallel()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: the TypeScript SDK's tests (gateways/comet/sdk) need Node.js >= 20; deploy/test.sh runs npm ci there")
	}
	dir, err := filepath.Abs("../../gateways/comet/sdk")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"typescript", "playwright-core"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", m)); err != nil {
			t.Fatalf("%s is not installed in gateways/comet/sdk: run deploy/test.sh (or npm ci there)", m)
		}
	}
	chromium := os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		t.Fatal("chromium not found: run deploy/test.sh (it installs Debian's chromium)")
	}

	c := startCluster(t, nil)
	second := c.settings
	second.CometID = "c2"
	second.CometAddr = testinfra.FreeAddr(t)
	second.AdminAddr = ""
	second.History = ""
	comet2 := &restartable{t: t, opts: second.Options(slog.New(testWriter{t}.handler()), Comet)}
	comet2.start()
	t.Cleanup(comet2.stop)

	// A third comet serves https (and wss) with a certificate for
	// laneim.test, the name the browser tests open pages under.
	ca := testinfra.NewCA(t, "sdk")
	third := c.settings
	third.CometID = "c3"
	third.CometAddr = testinfra.FreeAddr(t)
	third.AdminAddr = ""
	third.History = ""
	third.CometTLSCert, third.CometTLSKey = ca.Issue("comet3", "laneim.test", "127.0.0.1")
	comet3 := &restartable{t: t, opts: third.Options(slog.New(testWriter{t}.handler()), Comet)}
	comet3.start()
	t.Cleanup(comet3.stop)

	for _, p := range []string{"/favicon.ico", "/sdk/index.js", "/"} {
		resp, err := http.Get("http://" + second.CometAddr + p)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s = %d, want 200", p, resp.StatusCode)
		}
	}

	control := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/token":
			fmt.Fprint(w, c.token(r.URL.Query().Get("user"), time.Hour))
		case "/comet/stop":
			comet2.stop()
		case "/comet/start":
			comet2.start()
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(control.Close)

	shots := os.Getenv("LANEIM_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	args := []string{"--test", "--test-concurrency=1"}
	if major, _ := nodeMajor(ctx, node); major < 22 {
		args = append(args, "--experimental-websocket") // global WebSocket, unflagged since Node 22
	}
	files, _ := filepath.Glob(filepath.Join(dir, "test", "*.test.mjs"))
	if len(files) == 0 {
		t.Fatal("no tests in gateways/comet/sdk/test")
	}
	cmd := exec.CommandContext(ctx, node, append(args, files...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"LANEIM_WS=ws://"+second.CometAddr+"/ws",
		"LANEIM_WS_OTHER="+c.ws,
		"LANEIM_URL=http://"+second.CometAddr+"/",
		"LANEIM_CONTROL="+control.URL,
		"LANEIM_HTTPS_URL=https://"+third.CometAddr+"/",
		"CHROMIUM="+chromium,
		"SCREENSHOTS="+shots,
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test: %v\n%s", err, out)
	}
	t.Logf("%s\nscreenshots in %s", out, shots)
}

// restartable is one fx app the test stops and starts again.
type restartable struct {
	t    *testing.T
	opts fx.Option
	mu   sync.Mutex
	app  *fx.App
}

func (r *restartable) start() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.app != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := fx.New(r.opts)
	if err := a.Start(ctx); err != nil {
		r.t.Errorf("start: %v", err)
		return
	}
	r.app = a
}

func (r *restartable) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.app == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.app.Stop(ctx); err != nil {
		r.t.Errorf("stop: %v", err)
	}
	r.app = nil
}

func (w testWriter) handler() slog.Handler {
	return slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn})
}

// nodeMajor returns the major version of node.
func nodeMajor(ctx context.Context, node string) (int, error) {
	out, err := exec.CommandContext(ctx, node, "--version").Output()
	if err != nil {
		return 0, fmt.Errorf("node --version: %w", err)
	}
	v := strings.TrimPrefix(strings.TrimSpace(string(out)), "v")
	major, _, _ := strings.Cut(v, ".")
	return strconv.Atoi(major)
}
