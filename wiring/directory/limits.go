package directory

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/go-redis/redis_rate/v10"
)

// Rate is a budget shared by every process of the cluster: PerSecond
// on average, Burst at once.
type Rate struct {
	PerSecond float64
	Burst     int
}

// limit converts r to redis_rate's integer form: thousandths of an event
// per second, so that fractional rates keep their value.
func (r Rate) limit() (redis_rate.Limit, error) {
	n := math.Round(r.PerSecond * 1000)
	if n < 1 || n > math.MaxInt32 || r.Burst < 1 {
		return redis_rate.Limit{}, fmt.Errorf("directory: rate of %g a second, bursts of %d, is not a budget", r.PerSecond, r.Burst)
	}
	return redis_rate.Limit{Rate: int(n), Burst: r.Burst, Period: 1000 * time.Second}, nil
}

// TakeSend takes one message from user's send budget r, which every
// routing worker shares: it returns 0 if the message may go, or how long
// until one may. A refused message takes nothing.
//
// The budget is a GCRA (generic cell rate algorithm) kept in one Redis
// key per user, in the user's slot ("rate:{u:<user>}:sends"), read and
// written by one Lua script with the server's clock: the routing workers'
// clocks do not matter, and concurrent messages of a user never share
// one place. The key expires once the budget is full again.
func (s *Store) TakeSend(ctx context.Context, user string, r Rate) (time.Duration, error) {
	l, err := r.limit()
	if err != nil {
		return 0, err
	}
	res, err := s.limiter.Allow(ctx, userSendsKey(user), l)
	if err != nil {
		return 0, fmt.Errorf("directory: send budget of %s: %w", user, err)
	}
	if res.Allowed > 0 {
		return 0, nil
	}
	return max(res.RetryAfter, time.Millisecond), nil
}
