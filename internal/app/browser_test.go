package app

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestBrowserChat serves the web client from a comet and has two headless
// Chromium pages (Debian's chromium, driven by playwright-core from npm;
// deploy/test.sh installs both) log in, join the lobby and chat.
func TestBrowserChat(t *testing.T) {
	t.Parallel()
	dir, err := filepath.Abs("../../testdata/browser")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "playwright-core")); err != nil {
		t.Fatal("playwright-core is not installed in testdata/browser: run deploy/test.sh (it runs npm install there)")
	}
	chromium := os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		t.Fatal("chromium not found: run deploy/test.sh (it installs Debian's chromium)")
	}
	c := startCluster(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "chat.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"LANEIM_URL=http://"+c.settings.CometAddr+"/",
		"TOKEN_A="+c.token("alice", time.Hour),
		"TOKEN_B="+c.token("bob", time.Hour),
		"CHROMIUM="+chromium,
		"SCREENSHOT="+filepath.Join(t.TempDir(), "chat.png"),
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("browser chat: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
