package comet

import (
	"cmp"
	"math"
	"slices"

	"github.com/coder/websocket"
)

// The comet's byte budget (issue 11): the bytes queued to all its
// connections, counting what each writer holds until it is written, are
// bounded by MaxQueuedBytes. Past it, the connections with the largest
// queues are closed as slow consumers (1008 "slow consumer") until the
// total is back within the budget. A frame shared by a room's members is
// counted once per member, so the count is an upper bound of the memory
// held. A connection that is closed stops counting at once, though its
// writer may hold its last batch until the write fails (WriteTimeout).

// defaultMaxQueuedBytes is the default budget: the memory the Kubernetes
// manifest requests for a comet (deploy/k8s/comet.yaml).
const defaultMaxQueuedBytes = 512 << 20

// maxQueuedBytes is the budget of cfg: none (math.MaxInt64) when negative.
func (c Config) maxQueuedBytes() int64 {
	if c.MaxQueuedBytes < 0 {
		return math.MaxInt64
	}
	return c.MaxQueuedBytes
}

// askShed asks the deadline sweep (the one goroutine that sheds) to
// shed, without waiting: enqueue calls it with a room's or a
// connection's locks held, which shed must not wait for.
func (c *Comet) askShed() {
	select {
	case c.shedNow <- struct{}{}:
	default: // asked already
	}
}

// shed closes the connections with the largest queues until the comet's
// queued bytes are within its budget. Only the deadline sweep runs it.
func (c *Comet) shed() {
	budget := c.cfg.maxQueuedBytes()
	if c.queued.Load() <= budget {
		return
	}
	type held struct {
		cn    *conn
		bytes int
	}
	c.mu.RLock()
	all := make([]held, 0, len(c.conns))
	for _, cn := range c.conns {
		all = append(all, held{cn: cn})
	}
	c.mu.RUnlock()
	for i := range all {
		cn := all[i].cn
		cn.qmu.Lock()
		all[i].bytes = cn.qbytes + cn.wbytes
		cn.qmu.Unlock()
	}
	slices.SortFunc(all, func(a, b held) int { return cmp.Compare(b.bytes, a.bytes) })
	for _, h := range all {
		if c.queued.Load() <= budget || h.bytes == 0 {
			return
		}
		if h.cn.kick(websocket.StatusPolicyViolation, "slow consumer", false) {
			c.slow.Add(1)
			c.overBudget.Add(1)
			c.logger.Info("slow consumer disconnected", "conn", h.cn.id, "reason", "comet byte budget", "queued", h.bytes)
		}
	}
}
