package comet

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/wiring"
)

// The comet's latency histograms split a live message's way to its
// members into the parts the cluster can see (issue 9):
//
//   - its age when its Delivery reaches the comet: from the server time
//     routing gave it to now, the pipeline's part (routing, fan-out,
//     and the Kafka hops between them and the comet);
//   - a room message's wait: from its arrival at the room to its flush
//     to a stripe (see room), observed per stripe flushed: the window's
//     part, up to one window while the room is busy, none when quiet;
//   - a room frame's write lag: from the room's flush of the frame to
//     its write to a member's socket, the ready list's and the kernel's
//     part, observed per member.
//
// The way from the sender to routing is routing's own histogram
// (laneim_routing_submission_age_seconds); what is left of a delivery's
// latency is the client's read. `laneim bench` reports the four
// histograms' p50 and p99 beside the latency its members measured.

// latency holds a comet's latency histograms.
type latency struct {
	age      prometheus.Histogram // a live message's age at the comet
	roomWait prometheus.Histogram // a room message's arrival to its flush
	writeLag prometheus.Histogram // a room frame's flush to its write
}

func newLatency(cometID string) latency {
	labels := prometheus.Labels{"comet": cometID}
	return latency{
		age: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:        "laneim_comet_message_age_seconds",
			Help:        "Age of a live message when its Delivery reaches the comet: from the server time routing gave it (Message.server_time_unix_ms, millisecond resolution; another machine's clock skew adds to it) to its arrival.",
			ConstLabels: labels, Buckets: wiring.LatencyBuckets,
		}),
		roomWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:        "laneim_comet_room_wait_seconds",
			Help:        "Time from a room message's arrival at its room to the flush of a stripe of the room's members that sends it, per stripe flushed: up to one window (members / --frame-budget) while the room is busy, none when it is quiet.",
			ConstLabels: labels, Buckets: wiring.LatencyBuckets,
		}),
		writeLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:        "laneim_comet_room_write_lag_seconds",
			Help:        "Time from a room's flush of a frame to its write to a member's socket from the ready list, per member written (a connection the kernel cannot take at once is finished by its writer goroutine, not counted).",
			ConstLabels: labels, Buckets: wiring.LatencyBuckets,
		}),
	}
}

// collectors are the histograms, for a registry.
func (l latency) collectors() []prometheus.Collector {
	return []prometheus.Collector{l.age, l.roomWait, l.writeLag}
}

// observeAge records the age at now of live messages that carry a server
// time.
func (l latency) observeAge(msgs []*clientpb.Message, now time.Time) {
	ms := now.UnixMilli()
	for _, m := range msgs {
		if t := m.GetServerTimeUnixMs(); t > 0 {
			wiring.ObserveAge(l.age, ms, t)
		}
	}
}
