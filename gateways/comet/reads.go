package comet

import (
	"math/rand/v2"
	"time"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/topics"
)

// defaultMaxReadsInFlight is Config.MaxReadsInFlight's default: on the
// 2-core machine of issue 9 the history worker answers a few hundred
// pages a second, so 256 waiting reads are answered within a second or
// so, well inside RequestTimeout.
const defaultMaxReadsInFlight = 256

// readRetryAfterMs is about how long a read refused for MaxReadsInFlight
// should wait before it is asked again; each refusal gets it spread by
// half either way, so that refused clients do not come back together.
const readRetryAfterMs = 1000

// readBytesInFlight bounds the bytes the comet's waiting reads will be
// answered with, as estimated from the answers of the reads before them
// (observeRead). When answers came through the comet's delivery topic in
// order with every live message, the answers waiting ahead of a live
// message delayed it: at the pages' 512 KiB, 256 waiting reads put 128
// MiB ahead of it, and an outside abuse check had 49 room members read
// old 500-message pages at their budget and every live message on that
// server arrive 1.4–2.4 s late (10 members: 0.7 s). Answers now take the
// topic's bulk lane (topics.Deliveries), beside live messages; the bound
// still keeps what they hold in memory, in the broker and the comet, and
// the wait of an honest client's read behind a flood's, in check. 16 MiB
// is about 30 such pages, or all 256 reads of pages of small messages.
const readBytesInFlight = 16 << 20

// minReadsInFlight is the fewest reads the comet lets wait whatever
// their answers' sizes.
const minReadsInFlight = 8

// readLimit is how many reads may wait: maxReads (MaxReadsInFlight),
// fewer when answers of avg bytes would come to more than
// readBytesInFlight, but not fewer than minReadsInFlight.
func readLimit(maxReads, avg int64) int64 {
	if avg <= 0 {
		return maxReads
	}
	return min(maxReads, max(minReadsInFlight, readBytesInFlight/avg))
}

// observeRead adds the size of a read's answer, n bytes, to the comet's
// moving average (one eighth of the way to it). Only the delivery
// consumer calls it.
func (c *Comet) observeRead(n int) {
	avg := c.readBytes.Load()
	if avg == 0 {
		avg = int64(n)
	} else {
		avg += (int64(n) - avg) / 8
	}
	c.readBytes.Store(max(avg, 1))
}

// readReserve is how many reads the comet lets wait beyond limit for
// catch-ups under way that have no other read waiting: a few, so that
// connections keeping many reads waiting (a flood of catch-up reads, as
// an outside abuse check ran, 49 members 8 reads each) cannot shut out
// one reading a page at a time; those always have a read waiting, so
// they never take these.
func readReserve(limit int64) int64 { return max(1, limit/8) }

// catchingUp is how recently a connection's read must have taken or
// given back a slot for its next read to count as part of a catch-up
// under way.
const catchingUp = 3 * time.Second

// startRead takes one of the comet's read slots for the history read
// req, which expect has recorded as pending; it is given back when req is
// answered, overdue or its connection ends. It reports false, having
// answered UNAVAILABLE with a retry_after_ms and forgotten req, when
// MaxReadsInFlight reads wait already, or fewer whose answers would be
// large (readLimit). A read without an id (0) cannot be
// told apart from the others' answers and takes no slot.
//
// A connection whose catch-up is under way (a read of it took or gave
// back a slot within catchingUp) may take any slot, and, when it has no
// other read waiting, one of readReserve slots beyond them; one starting
// a catch-up only while half of them are free. When thousands of members
// catch up at once, those that started go on to the end before others
// start, so members finish one cohort after another, instead of all
// sharing the slots and none finishing for minutes.
func (cn *conn) startRead(req uint64) bool {
	c := cn.comet
	if req == 0 || c.cfg.MaxReadsInFlight < 0 {
		return true
	}
	cn.pmu.Lock()
	if _, again := cn.reads[req]; again {
		cn.pmu.Unlock()
		return true // a repeated id: its slot is taken already
	}
	now := time.Now()
	limit := readLimit(int64(c.cfg.MaxReadsInFlight), c.readBytes.Load())
	switch {
	case cn.readAt.IsZero() || now.Sub(cn.readAt) > catchingUp:
		limit = max(limit/2, 1) // a catch-up starting
	case len(cn.reads) == 0:
		limit += readReserve(limit) // a catch-up under way with no read waiting
	}
	if c.readsNow.Add(1) > limit {
		c.readsNow.Add(-1)
		cn.pmu.Unlock()
		cn.answered(req) // forgets it: answered here
		c.readsShed.Add(1)
		f := topics.ErrorFrame(req, clientpb.Error_UNAVAILABLE, "this server has too many catch-up reads waiting; retry after retry_after_ms")
		f.GetError().RetryAfterMs = uint32(readRetryAfterMs/2 + rand.IntN(readRetryAfterMs))
		cn.reply(f)
		return false
	}
	if cn.reads == nil {
		cn.reads = make(map[uint64]struct{}, 1)
	}
	cn.reads[req] = struct{}{}
	cn.readAt = now
	cn.pmu.Unlock()
	return true
}

// releaseReadLocked gives back req's read slot, if it holds one; cn.pmu
// is held.
func (cn *conn) releaseReadLocked(req uint64) {
	if _, ok := cn.reads[req]; !ok {
		return
	}
	delete(cn.reads, req)
	if len(cn.reads) == 0 {
		cn.reads = nil
	}
	cn.readAt = time.Now()
	cn.comet.readsNow.Add(-1)
}

// releaseReads gives back every read slot of a connection that ended.
func (cn *conn) releaseReads() {
	cn.pmu.Lock()
	defer cn.pmu.Unlock()
	if n := len(cn.reads); n > 0 {
		cn.comet.readsNow.Add(-int64(n))
		cn.reads = nil
	}
}
