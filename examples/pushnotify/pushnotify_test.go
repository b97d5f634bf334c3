package pushnotify_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"

	"github.com/laneim/laneim/examples/pushnotify"
	"github.com/laneim/laneim/internal/testinfra"
	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring"
)

// backend records the notifications posted to it, answering 503 to
// the first fail of them.
type backend struct {
	mu   sync.Mutex
	got  []string // "user conversation seq"
	fail int
	srv  *httptest.Server
}

func newBackend(t *testing.T, fail int) *backend {
	b := &backend{fail: fail}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.fail > 0 {
			b.fail--
			http.Error(w, "not now", http.StatusServiceUnavailable)
			return
		}
		body, _ := io.ReadAll(r.Body)
		var n pushnotify.Notification
		if err := json.Unmarshal(body, &n); err != nil {
			http.Error(w, "bad", http.StatusBadRequest)
			return
		}
		s := n.User + " " + n.Conversation + " " + n.Seq
		if n.Mention {
			s += " mention"
		}
		b.got = append(b.got, s)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *backend) take() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := b.got
	b.got = nil
	slices.Sort(out)
	return out
}

func notice(conv string, seq uint64, users ...string) *topicpb.OfflineNotice {
	return &topicpb.OfflineNotice{Message: &clientpb.Message{Conversation: conv, Seq: seq, Sender: "alice"}, Users: users}
}

func mention(n *topicpb.OfflineNotice, users ...string) *topicpb.OfflineNotice {
	n.Mentioned = users
	return n
}

// TestCoalescing: one notification per user and conversation per
// window, and one more for mentions; a failed post is retried without
// notifying twice.
func TestCoalescing(t *testing.T) {
	b := newBackend(t, 0)
	now := time.Unix(1000, 0)
	h, err := pushnotify.New(pushnotify.Config{URL: b.srv.URL, Window: time.Minute, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	handle := func(n *topicpb.OfflineNotice) error {
		msg, err := topics.OfflineNotices.Encode(n)
		if err != nil {
			t.Fatal(err)
		}
		return h.Pipeline().Handle(msg)
	}
	steps := []struct {
		notices []*topicpb.OfflineNotice
		advance time.Duration
		want    []string
	}{
		{[]*topicpb.OfflineNotice{
			notice("room:lobby", 1, "carol", "dave"),
			notice("room:lobby", 2, "carol", "dave"),
			notice("room:lobby", 3, "carol", "erin"),
			notice("dm:alice:carol", 1, "carol"),
		}, 0, []string{"carol dm:alice:carol 1", "carol room:lobby 1", "dave room:lobby 1", "erin room:lobby 3"}},
		{[]*topicpb.OfflineNotice{notice("room:lobby", 4, "carol")}, 59 * time.Second, nil},
		{[]*topicpb.OfflineNotice{mention(notice("room:lobby", 6, "carol", "dave"), "carol"), mention(notice("room:lobby", 7, "carol"), "carol")}, 0, []string{"carol room:lobby 6 mention"}},
		{[]*topicpb.OfflineNotice{notice("room:lobby", 8, "carol", "dave")}, time.Second, []string{"carol room:lobby 8", "dave room:lobby 8"}},
	}
	for i, st := range steps {
		now = now.Add(st.advance)
		for _, n := range st.notices {
			if err := handle(n); err != nil {
				t.Fatal(err)
			}
		}
		if got := b.take(); !slices.Equal(got, st.want) {
			t.Errorf("step %d: posted %q, want %q", i, got, st.want)
		}
	}

	// The backend fails the second post: the retry posts only what is left.
	now = now.Add(time.Hour)
	b.mu.Lock()
	b.fail = 1
	b.mu.Unlock()
	if err := handle(notice("room:dev", 1, "bob")); err == nil {
		t.Fatal("failed post not reported")
	}
	if err := handle(notice("room:dev", 1, "bob")); err != nil {
		t.Fatal(err)
	}
	if got := b.take(); !slices.Equal(got, []string{"bob room:dev 1"}) {
		t.Errorf("after a failure: posted %q", got)
	}
}

// TestDeployedAlone runs the example as its own process would (its own
// fx app on wiring.Module) against the Kafka protocol: a notice
// published on notifications.offline reaches the backend.
func TestDeployedAlone(t *testing.T) {
	kcfg := testinfra.Kafka(t)
	b := newBackend(t, 0)
	pub, err := wiring.NewPublisher(kcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	app := fxtest.New(t,
		fx.Supply(wiring.Config{Kafka: kcfg, Router: wiring.RouterConfig{RetryInitial: 10 * time.Millisecond}}, slog.New(slog.DiscardHandler), pushnotify.Config{URL: b.srv.URL}),
		wiring.Module,
		pushnotify.Module,
	)
	app.RequireStart()
	defer app.RequireStop()
	m, err := topics.OfflineNotices.Encode(notice("room:lobby", 7, "carol"))
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(topics.OfflineNotices.Name, m); err != nil {
		t.Fatal(err)
	}
	var got []string
	testinfra.Eventually(t, 30*time.Second, func() error {
		got = append(got, b.take()...)
		if len(got) == 0 {
			return fmt.Errorf("nothing posted")
		}
		return nil
	}, "the notice posted")
	if !slices.Equal(got, []string{"carol room:lobby 7"}) {
		t.Fatalf("posted %q", got)
	}
}
