package comet

import (
	"errors"

	"golang.org/x/time/rate"

	"github.com/laneim/laneim/internal/wsframe"
)

// frameScan follows the WebSocket frames of a client's byte stream, as
// the socket hands it to the WebSocket library, and counts them: the
// library reads a message's fragments, and any control frames among
// them, without returning, so a message that never ends, of empty
// fragments, cost the comet a core while spending no budget (outside
// abuse check: 40 sockets sent 22,000 fragments a second, never closed).
// It reads only the headers (wsframe.ParseHeader); payloads are skipped
// by their length.
type frameScan struct {
	hdr  [14]byte // the header being read
	have int      // its bytes read so far
	skip uint64   // payload bytes of the current frame not yet passed
}

// feed scans b, the next bytes of the stream, and returns how many
// fragments' headers it completed: frames of a message in several
// (continuation frames, or a first frame without FIN). Whole messages
// and control frames are counted by the request budget already (allow,
// allowPing).
func (f *frameScan) feed(b []byte) int {
	frames := 0
	for len(b) > 0 {
		if f.skip > 0 {
			n := min(uint64(len(b)), f.skip)
			f.skip -= n
			b = b[n:]
			continue
		}
		f.hdr[f.have] = b[0]
		f.have++
		b = b[1:]
		h, n := wsframe.ParseHeader(f.hdr[:f.have])
		if n == 0 {
			continue
		}
		f.skip, f.have = h.Len, 0
		if h.Op == wsframe.Cont || !h.Fin && h.Op < wsframe.Close {
			frames++
		}
	}
	return frames
}

// framesPerRequest is how many fragments of messages a connection may
// send for each request of its budget (Config.RequestRate,
// RequestBurst). A client that fragments a 64 KiB message into 1 KiB
// frames stays well within it.
const framesPerRequest = 10

// newFrameLimiter returns a connection's budget of fragments, nil when
// requests are not limited.
func newFrameLimiter(cfg Config) *rate.Limiter {
	if cfg.RequestRate <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(cfg.RequestRate*framesPerRequest), max(cfg.RequestBurst, 1)*framesPerRequest)
}

// errFrameFlood is the socket's read error when a client sends fragments
// faster than its budget.
var errFrameFlood = errors.New("comet: client frames over the budget")
