package bench

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The cluster's own latency histograms split the latency the members
// measure into where it went (gateways/comet/latency.go): a message's
// age when routing takes it, its age when its Delivery reaches the
// comet, its wait in the room for its flush, and a room frame's lag from
// its flush to its write to a member. The rest is the members' reads.
const (
	routingAgeMetric = "laneim_routing_submission_age_seconds"
	cometAgeMetric   = "laneim_comet_message_age_seconds"
	roomWaitMetric   = "laneim_comet_room_wait_seconds"
	writeLagMetric   = "laneim_comet_room_write_lag_seconds"
)

var stageMetrics = []string{routingAgeMetric, cometAgeMetric, roomWaitMetric, writeLagMetric}

// buckets is a Prometheus histogram's cumulative counts by upper bound
// (+Inf included), summed over the processes that export it.
type buckets map[float64]float64

// addStages adds the stage histograms of one process's metrics to out;
// a histogram the process lacks adds nothing.
func addStages(out map[string]buckets, fams map[string]*dto.MetricFamily) {
	for _, name := range stageMetrics {
		for _, m := range fams[name].GetMetric() {
			for _, b := range m.GetHistogram().GetBucket() {
				if le := b.GetUpperBound(); !math.IsInf(le, 1) { // +Inf: the count, below
					out[name][le] += float64(b.GetCumulativeCount())
				}
			}
			out[name][math.Inf(1)] += float64(m.GetHistogram().GetSampleCount())
		}
	}
}

// scrapeFamilies reads and parses http://addr/metrics.
func scrapeFamilies(ctx context.Context, addr string) (map[string]*dto.MetricFamily, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("bench: metrics of %s: %w", addr, err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("bench: metrics of %s: %w", addr, err)
	}
	return fams, nil
}

// minus returns b's counts less a's: what was recorded between two scrapes.
func (b buckets) minus(a buckets) buckets {
	out := make(buckets, len(b))
	for le, n := range b {
		out[le] = n - a[le]
	}
	return out
}

// quantile returns the q-quantile (0 < q <= 1) of the recorded values,
// interpolated linearly within its bucket as Prometheus's
// histogram_quantile does; 0 when nothing was recorded. A quantile in the
// +Inf bucket is the largest finite bound.
func (b buckets) quantile(q float64) time.Duration {
	bounds := make([]float64, 0, len(b))
	for le := range b {
		bounds = append(bounds, le)
	}
	slices.Sort(bounds)
	if len(bounds) == 0 || b[bounds[len(bounds)-1]] <= 0 {
		return 0
	}
	rank := q * b[bounds[len(bounds)-1]]
	lower, below := 0.0, 0.0
	for _, le := range bounds {
		n := b[le]
		if n >= rank {
			if math.IsInf(le, 1) {
				return seconds(lower)
			}
			if n == below {
				return seconds(le)
			}
			return seconds(lower + (le-lower)*(rank-below)/(n-below))
		}
		lower, below = le, n
	}
	return seconds(lower)
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
