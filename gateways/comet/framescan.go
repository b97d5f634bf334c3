package comet

import (
	"encoding/binary"
	"errors"

	"golang.org/x/time/rate"
)

// frameScan follows the WebSocket frames of a client's byte stream, as
// the socket hands it to the WebSocket library, and counts them: the
// library reads a message's fragments, and any control frames among
// them, without returning, so a message that never ends, of empty
// fragments, cost the comet a core while spending no budget (outside
// abuse check: 40 sockets sent 22,000 fragments a second, never closed).
// It reads only the headers; payloads are skipped by their length.
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
		if f.have < 2 {
			continue
		}
		need := 2
		switch f.hdr[1] & 0x7f {
		case 126:
			need += 2
		case 127:
			need += 8
		}
		if f.hdr[1]&0x80 != 0 { // masked, as a client's frames are
			need += 4
		}
		if f.have < need {
			continue
		}
		switch n := f.hdr[1] & 0x7f; n {
		case 126:
			f.skip = uint64(binary.BigEndian.Uint16(f.hdr[2:4]))
		case 127:
			f.skip = binary.BigEndian.Uint64(f.hdr[2:10])
		default:
			f.skip = uint64(n)
		}
		f.have = 0
		if fin, op := f.hdr[0]&0x80 != 0, f.hdr[0]&0x0f; op == 0 || !fin && op < 8 {
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
