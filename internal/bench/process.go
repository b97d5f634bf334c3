package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// devProcess is a `laneim dev` child process.
type devProcess struct {
	cmd  *exec.Cmd
	done chan error
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// errDevExited: the dev child ended before its gateways listened.
var errDevExited = errors.New("bench: dev cluster exited during start")

// devStartAttempts bounds the dev children startDevProcess starts.
const devStartAttempts = 3

// startDevProcess runs `laneim dev` on free loopback ports and fills cfg
// with its addresses. It returns once the gateways accept connections.
// A port found free may be taken before the child binds it (by an
// outgoing connection's ephemeral port, say): a child that exits during
// its start is started again, on other ports, up to devStartAttempts
// times.
func startDevProcess(ctx context.Context, cfg *Config) (*devProcess, error) {
	var err error
	for range devStartAttempts {
		var p *devProcess
		if p, err = startDevOnce(ctx, cfg); !errors.Is(err, errDevExited) {
			return p, err
		}
	}
	return nil, err
}

// startDevOnce is one attempt of startDevProcess.
func startDevOnce(ctx context.Context, cfg *Config) (*devProcess, error) {
	exe := cfg.Executable
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("bench: find laneim binary: %w", err)
		}
	}
	var addrs [4]string
	for i := range addrs {
		a, err := freeAddr()
		if err != nil {
			return nil, fmt.Errorf("bench: free port: %w", err)
		}
		addrs[i] = a
	}
	comet, apiAddr, redisAddr, admin := addrs[0], addrs[1], addrs[2], addrs[3]
	cfg.Admin = []string{admin}
	cfg.Target = "ws://" + comet + "/ws"
	cfg.API, cfg.Redis = apiAddr, redisAddr
	if cfg.Secret == "" {
		cfg.Secret = "laneim-bench-secret-public-do-not-deploy"
	}
	if cfg.APIToken == "" {
		cfg.APIToken = "laneim-bench-token"
	}
	args := []string{"dev",
		"--kafka-addr", "127.0.0.1:0", "--redis-addr", redisAddr, "--etcd-addr", "",
		"--comet-addr", comet, "--api-addr", apiAddr, "--api-http-addr", "", // the HTTP/JSON api is not used: no fixed port
		"--secret", cfg.Secret, "--api-token", cfg.APIToken,
		"--seed", "", "--log-level", "warn", "--data", "", "--admin-addr", admin,
	}
	if cfg.FrameBudget > 0 {
		args = append(args, "--frame-budget", strconv.Itoa(cfg.FrameBudget))
	}
	if cfg.Pprof {
		args = append(args, "--pprof")
	}
	if cfg.BatchWindow > 0 {
		args = append(args, "--batch-window", cfg.BatchWindow.String())
	}
	cmd := exec.Command(exe, args...)
	dieWithParent(cmd)
	cmd.Stdout = nil
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start dev cluster: %w", err)
	}
	p := &devProcess{cmd: cmd, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	deadline := time.Now().Add(90 * time.Second)
	for _, a := range []string{comet, apiAddr} {
		for {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case err := <-p.done:
				return nil, fmt.Errorf("%w: %v", errDevExited, err)
			case <-ctx.Done():
				p.stop()
				return nil, ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				p.stop()
				return nil, errors.New("bench: dev cluster not listening after 90s")
			}
		}
	}
	return p, nil
}

// stop interrupts the child and waits for it (killing it after 30s).
func (p *devProcess) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

type cpuSample struct{ self, cluster time.Duration }

// clusterSample is what the bench reads of the cluster at one moment:
// the CPU time used by this process and by the cluster, the cluster's
// resident memory, and its stage histograms (stages.go).
type clusterSample struct {
	cpu    cpuSample
	rss    int64
	stages map[string]buckets
	// conns is the comets' WebSocket connections (laneim_comet_connections).
	conns int64
}

// sampleCluster reads the cluster once. A dev child's CPU and memory
// come from /proc; a target cluster's are the sums of
// process_cpu_seconds_total and process_resident_memory_bytes over its
// admin addresses. Each admin address's /metrics is fetched once, for
// all of them and the comets' connections; one that cannot be read adds
// nothing.
func sampleCluster(ctx context.Context, p *devProcess, admin []string) clusterSample {
	s := clusterSample{stages: map[string]buckets{}}
	for _, name := range stageMetrics {
		s.stages[name] = buckets{}
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.cpu.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if p != nil {
		s.cpu.cluster = procCPU(p.cmd.Process.Pid)
		s.rss = procRSS(p.cmd.Process.Pid)
	}
	for _, a := range admin {
		fams, err := scrapeFamilies(ctx, a)
		if err != nil {
			continue
		}
		if p == nil {
			cpu, rss := processUsage(fams)
			s.cpu.cluster += cpu
			s.rss += rss
		}
		addStages(s.stages, fams)
		s.conns += int64(value(fams, "laneim_comet_connections"))
	}
	return s
}

// procRSS reads the resident set of pid from /proc (Linux).
func procRSS(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// value is an unlabelled counter's or gauge's value in fams; 0 if
// there is none.
func value(fams map[string]*dto.MetricFamily, name string) float64 {
	ms := fams[name].GetMetric()
	if len(ms) == 0 {
		return 0
	}
	if c := ms[0].GetCounter(); c != nil {
		return c.GetValue()
	}
	return ms[0].GetGauge().GetValue()
}

// procCPU reads utime+stime of pid from /proc (Linux, 100 ticks/s).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// Machine describes this machine for a report: OS, architecture, cores
// and CPU model. The other load tools (soak, abuse) report it too.
func Machine() string {
	model := "unknown cpu"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	return fmt.Sprintf("%s/%s, %d cores, %s", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), model)
}

// StartDevCluster runs `laneim dev` (cfg.Executable, or this program) as a
// child process on free loopback ports, fills cfg's Target, API, Redis,
// Admin, Secret and APIToken, and returns a function that stops it. Other
// load tools (laneim abuse) start their cluster with it.
func StartDevCluster(ctx context.Context, cfg *Config) (stop func(), err error) {
	p, err := startDevProcess(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return p.stop, nil
}

// Usage returns the CPU time and the resident memory of a cluster's
// processes, summed over the /metrics of their admin addresses
// (process_cpu_seconds_total, process_resident_memory_bytes); an address
// that cannot be read adds nothing. Other load tools (laneim abuse)
// report what an attack cost the cluster with it.
func Usage(ctx context.Context, admin []string) (cpu time.Duration, rss int64) {
	for _, a := range admin {
		fams, err := scrapeFamilies(ctx, a)
		if err != nil {
			continue
		}
		c, r := processUsage(fams)
		cpu += c
		rss += r
	}
	return cpu, rss
}

// processUsage is the CPU time and resident memory one process's
// metrics report.
func processUsage(fams map[string]*dto.MetricFamily) (cpu time.Duration, rss int64) {
	return time.Duration(value(fams, "process_cpu_seconds_total") * float64(time.Second)), int64(value(fams, "process_resident_memory_bytes"))
}
