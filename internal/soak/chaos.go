package soak

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// killable are the processes of deploy/local/cluster.sh a fault may
// SIGKILL and restart: the workers, the comets, the api and the broker.
var killable = []string{"login-presence", "routing", "fanout", "history", "comet-1", "comet-2", "api", "broker"}

// Fault kinds as counted: "kill:NAME" and this one.
const faultFreezeRedis = "freeze:redis-master"

// chaos injects one fault at a time, at random intervals.
type chaos struct {
	cfg   *Config
	log   *logger
	start time.Time
	rng   *rand.Rand

	mu     sync.Mutex
	faults map[string]int
}

func newChaos(cfg *Config, log *logger, start time.Time) *chaos {
	return &chaos{cfg: cfg, log: log, start: start, rng: rand.New(rand.NewPCG(cfg.Seed, 0)), faults: map[string]int{}}
}

// checkChaos makes sure the cluster of deploy/local/cluster.sh is there
// to be hurt: the script and a pid file per killable process.
func checkChaos(cfg *Config) error {
	if _, err := os.Stat(cfg.ClusterScript); err != nil {
		return fmt.Errorf("soak: --chaos needs %s: %w", cfg.ClusterScript, err)
	}
	for _, name := range killable {
		if _, err := os.Stat(filepath.Join(cfg.RunDir, name+".pid")); err != nil {
			return fmt.Errorf("soak: --chaos needs the cluster of %s running (no %s.pid in %s): start it, or give --chaos=false", cfg.ClusterScript, name, cfg.RunDir)
		}
	}
	return nil
}

// between is a random wait between faults.
func (c *chaos) between() time.Duration {
	return c.cfg.ChaosMin + time.Duration(c.rng.Int64N(int64(c.cfg.ChaosMax-c.cfg.ChaosMin)+1))
}

// run injects faults until ctx ends; each starts ChaosMin..ChaosMax after
// the one before started. A fault in progress when ctx ends is undone
// (the process restarted, the Redis node resumed) before run returns.
func (c *chaos) run(ctx context.Context) {
	next := c.start.Add(c.between())
	for range 100_000 {
		if !sleep(ctx, time.Until(next)) {
			return
		}
		at := time.Now()
		c.inject(ctx)
		next = at.Add(c.between())
	}
}

// inject picks one fault at random and injects it.
func (c *chaos) inject(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	k := c.rng.IntN(len(killable) + 1)
	var kind string
	var err error
	if k < len(killable) {
		kind = "kill:" + killable[k]
		err = c.killRestart(ctx, killable[k])
	} else {
		kind = faultFreezeRedis
		err = c.freezeRedis(ctx)
	}
	if err != nil {
		c.log.printf("soak: chaos: %s failed: %v", kind, err)
		return
	}
	c.mu.Lock()
	c.faults[kind]++
	c.mu.Unlock()
}

// killRestart SIGKILLs a process with `cluster.sh kill`, leaves it down
// 1–5s (less if ctx ends) and restarts it with `cluster.sh restart`.
func (c *chaos) killRestart(ctx context.Context, name string) error {
	// Neither the kill nor the restart is cut short by the end of the
	// run: a half-done kill would leave the process down.
	if err := c.script(context.WithoutCancel(ctx), "kill", name); err != nil {
		return err
	}
	down := time.Second + time.Duration(c.rng.Int64N(int64(4*time.Second)))
	c.log.printf("soak: chaos: SIGKILLed %s at +%.1fs; down for %.1fs", name, c.since(), down.Seconds())
	sleep(ctx, down)
	var err error
	for attempt := range 3 {
		if err = c.script(context.WithoutCancel(ctx), "restart", name); err == nil {
			c.log.printf("soak: chaos: restarted %s at +%.1fs", name, c.since())
			return nil
		}
		c.log.printf("soak: chaos: restart %s (attempt %d): %v", name, attempt+1, err)
		time.Sleep(time.Second)
	}
	return err
}

// freezeRedis stops one Redis master with SIGSTOP for 5–10s (less if ctx
// ends), then resumes it with SIGCONT.
func (c *chaos) freezeRedis(ctx context.Context) error {
	masters, err := c.masters(ctx)
	if err != nil {
		return err
	}
	addr := masters[c.rng.IntN(len(masters))]
	_, port, _ := net.SplitHostPort(addr)
	pid, err := readPid(filepath.Join(c.cfg.RunDir, "redis-"+port+".pid"))
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return fmt.Errorf("SIGSTOP redis %s (pid %d): %w", addr, pid, err)
	}
	d := 5*time.Second + time.Duration(c.rng.Int64N(int64(5*time.Second)))
	c.log.printf("soak: chaos: froze Redis master %s (pid %d) at +%.1fs for %.1fs", addr, pid, c.since(), d.Seconds())
	sleep(ctx, d)
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		return fmt.Errorf("SIGCONT redis %s (pid %d): %w", addr, pid, err)
	}
	c.log.printf("soak: chaos: resumed Redis master %s at +%.1fs", addr, c.since())
	return nil
}

// masters asks each Redis node of Config.Redis for its role.
func (c *chaos) masters(ctx context.Context) ([]string, error) {
	var out []string
	for _, a := range strings.Split(c.cfg.Redis, ",") {
		rdb := redis.NewClient(&redis.Options{Addr: a, DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: -1})
		role, err := rdb.Do(ctx, "ROLE").Slice()
		rdb.Close()
		if err == nil && len(role) > 0 && role[0] == "master" {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no Redis master answers ROLE")
	}
	return out, nil
}

// script runs the cluster script with args, within 60s, in its own
// process group (the processes it restarts must not get the soak's
// Ctrl-C).
func (c *chaos) script(ctx context.Context, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.cfg.ClusterScript, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", c.cfg.ClusterScript, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (c *chaos) since() float64 { return time.Since(c.start).Seconds() }

// counts returns the faults injected by kind, and their total.
func (c *chaos) counts() (map[string]int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.faults))
	n := 0
	for k, v := range c.faults {
		out[k] = v
		n += v
	}
	return out, n
}

func readPid(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("pid: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("pid file %s: %q is not a pid", path, b)
	}
	return pid, nil
}
