package soak

import (
	"context"
	"fmt"
	"golang.org/x/sync/errgroup"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/laneim/laneim/proto/clientpb"
)

// stallAfter is how long verify waits for a conversation's history to
// reach its highest acknowledged seq without any progress before it
// settles for what it has.
const stallAfter = 15 * time.Second

// verify Syncs the history of every conversation holding acknowledged
// messages, through a member that sent in it, and returns how many
// acknowledged messages it does not hold (plus seq collisions), how many
// it could not look for (beyond where a conversation that could not be
// read to the end was read) and how many conversations could not be read
// to the end.
func verify(ctx context.Context, r *run, members []*member) (lost, unverified, failed int64) {
	byReader := map[int][]Conversation{}
	for _, c := range r.ledger.Conversations() {
		byReader[c.Reader] = append(byReader[c.Reader], c)
	}
	var nLost, nUnverified, nFailed atomic.Int64
	var g errgroup.Group
	g.SetLimit(8)
	for reader, convs := range byReader {
		m := members[reader]
		g.Go(func() error {
			rng := rand.New(rand.NewPCG(r.cfg.Seed, uint64(reader)+2<<32))
			for _, c := range convs {
				history, err := m.history(ctx, c, rng)
				missing := r.ledger.Check(c.ID, history)
				if err != nil {
					nFailed.Add(1)
					var unread []Missing
					missing, unread = splitUnread(missing, readTo(c, history))
					nUnverified.Add(int64(len(unread)))
					r.progress.limited("verify", "soak: verify %s: %v (%d acknowledged messages beyond what was read, not looked for)", c.ID, err, len(unread))
				}
				for _, miss := range missing {
					nLost.Add(1)
					found := "nothing"
					if miss.Found != nil {
						found = fmt.Sprintf("message %s (%s)", miss.Found.MessageID, miss.Found.ClientMsgID)
					}
					r.progress.limited("lost", "soak: LOST %s seq %d: acknowledged message %s (%s), history holds %s",
						c.ID, miss.Ack.Seq, miss.Ack.MessageID, miss.Ack.ClientMsgID, found)
				}
			}
			return nil
		})
	}
	_ = g.Wait()
	return nLost.Load() + r.ledger.Collisions(), nUnverified.Load(), nFailed.Load()
}

// readTo is the highest seq of c that history, read from c.Min on,
// reaches (c.Min-1 if none).
func readTo(c Conversation, history []Stored) uint64 {
	to := c.Min - 1
	for _, s := range history {
		to = max(to, s.Seq)
	}
	return to
}

// splitUnread splits missing into those at or below to, which the read
// covered (lost), and those above it, which it did not reach.
func splitUnread(missing []Missing, to uint64) (lost, unread []Missing) {
	for _, m := range missing {
		if m.Ack.Seq <= to {
			lost = append(lost, m)
		} else {
			unread = append(unread, m)
		}
	}
	return lost, unread
}

// history Syncs c's messages from its lowest acknowledged seq until its
// highest, page after page, retrying on UNAVAILABLE, after a dropped
// connection, and while the store lags (until no progress for
// stallAfter). It returns what it read, and an error if it could not read
// to the end.
func (m *member) history(ctx context.Context, c Conversation, rng *rand.Rand) ([]Stored, error) {
	after := c.Min - 1
	var got []Stored
	progressAt := time.Now()
	backoff := 200 * time.Millisecond
	for range 10_000 {
		if ctx.Err() != nil {
			return got, fmt.Errorf("read to seq %d of %d: %w", after, c.Max, ctx.Err())
		}
		if time.Since(progressAt) > stallAfter {
			// The store holds nothing beyond after: what is missing is lost.
			return got, nil
		}
		if m.conn == nil {
			if err := m.connect(ctx, rng); err != nil {
				return got, err
			}
		}
		conn := m.conn
		var res *clientpb.SyncResult
		o, err := m.do(ctx, conn, KindSync, func(rctx context.Context) error {
			f, err := conn.Do(rctx, &clientpb.ClientFrame{Body: &clientpb.ClientFrame_Sync{Sync: &clientpb.Sync{Conversation: c.ID, AfterSeq: after, Limit: 500}}})
			res = f.GetSyncResult()
			return err
		})
		switch o {
		case Answered:
			before := after
			for _, msg := range res.GetMessages() {
				got = append(got, Stored{Seq: msg.GetSeq(), MessageID: msg.GetId(), ClientMsgID: msg.GetClientMsgId()})
				after = max(after, msg.GetSeq())
			}
			if after > before {
				progressAt = time.Now()
			}
			if after >= c.Max {
				return got, nil
			}
			if res.GetHasMore() && after > before {
				continue
			}
			sleep(ctx, 500*time.Millisecond) // the store lags: ask again
		case Refused:
			return got, err
		case Aborted:
			return got, err
		case Dropped:
			m.dropConn()
		case Unavailable, Unanswered:
			sleep(ctx, jitter(rng, backoff))
			backoff = min(2*backoff, 2*time.Second)
		}
	}
	return got, fmt.Errorf("read to seq %d of %d: too many pages", after, c.Max)
}
