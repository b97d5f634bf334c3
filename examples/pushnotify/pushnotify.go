// Package pushnotify is an example push-notification handler: it
// subscribes to notifications.offline (topics.OfflineNotices) under its
// own consumer group (laneim.pushnotify), and tells a product's push
// service (APNs, FCM, email...) about messages its users missed while
// they had no connection.
//
// It coalesces: a user gets at most one notification per conversation
// per Window (default one minute), and one more for messages mentioning
// it, so a busy room does not notify a user per message; the notices in between are dropped (the user catches up
// with Sync when it opens the app). The memory of what was sent is the
// process's: run one instance (or partition users among instances);
// after a restart a user may be notified once more.
//
// A notification is POSTed as JSON to Config.URL:
//
//	{"user":"carol","conversation":"room:lobby","sender":"alice","seq":"12","messageId":"…","serverTimeUnixMs":"…","mention":true}
//
// (mention is absent when false).
//
// A POST that fails is retried by the shared router middleware, then
// dead-lettered, like the webhook example's.
package pushnotify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/fx"

	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
	"github.com/laneim/laneim/wiring/pipeline"
)

// Name is the handler's name; its consumer group is laneim.pushnotify.
const Name = "pushnotify"

// Config says where to post and how much to coalesce.
type Config struct {
	// URL receives one POST per notification.
	URL string
	// Timeout bounds one POST (default 5 s).
	Timeout time.Duration
	// Window: at most one notification per user and conversation per
	// Window (default 1 minute).
	Window time.Duration
	// Now tells the time (default time.Now); tests set it.
	Now func() time.Time
}

// Notification is what is posted: one user to notify of one message.
type Notification struct {
	User             string `json:"user"`
	Conversation     string `json:"conversation"`
	Sender           string `json:"sender"`
	Seq              string `json:"seq"`
	MessageID        string `json:"messageId"`
	ServerTimeUnixMs string `json:"serverTimeUnixMs"`
	// Mention is true when the message mentions User.
	Mention bool `json:"mention,omitempty"`
}

// Handler posts coalesced notifications. It is safe for concurrent use.
type Handler struct {
	cfg    Config
	client *http.Client

	mu        sync.Mutex
	sent      map[key]time.Time // last notification per user and conversation
	lastSweep time.Time
}

// key is what is coalesced: mentions apart, so that a mention is
// notified even right after a plain message of the conversation.
type key struct {
	user, conversation string
	mention            bool
}

// New returns a Handler posting to cfg.URL.
func New(cfg Config) (*Handler, error) {
	if cfg.URL == "" {
		return nil, fmt.Errorf("pushnotify: no URL")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Window <= 0 {
		cfg.Window = time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Handler{cfg: cfg, client: &http.Client{Timeout: cfg.Timeout}, sent: map[key]time.Time{}}, nil
}

// Pipeline returns the pipeline handler consuming topics.OfflineNotices with Handle.
func (h *Handler) Pipeline() pipeline.Handler {
	return pipeline.On(Name, topics.OfflineNotices, h.Handle)
}

// Handle posts a notification to each offline user of n not notified of
// its conversation within the window. A failed post is returned, to be
// retried; the users posted before it stay recorded, so a retry does
// not notify them twice.
func (h *Handler) Handle(ctx context.Context, n *topicpb.OfflineNotice, _ *message.Message) error {
	m := n.GetMessage()
	for _, u := range n.GetUsers() {
		k := key{u, m.GetConversation(), slices.Contains(n.GetMentioned(), u)}
		if !h.due(k) {
			continue
		}
		err := h.post(ctx, Notification{
			User: u, Conversation: m.GetConversation(), Sender: m.GetSender(),
			Seq: strconv.FormatUint(m.GetSeq(), 10), MessageID: m.GetId(),
			ServerTimeUnixMs: strconv.FormatInt(m.GetServerTimeUnixMs(), 10),
			Mention:          k.mention,
		})
		if err != nil {
			return err
		}
		h.mark(k)
	}
	return nil
}

// due reports whether k was not notified within the window.
func (h *Handler) due(k key) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	last, ok := h.sent[k]
	return !ok || h.cfg.Now().Sub(last) >= h.cfg.Window
}

// mark records that k was notified now, and forgets, once a window,
// what is older than the window.
func (h *Handler) mark(k key) {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.cfg.Now()
	h.sent[k] = now
	if now.Sub(h.lastSweep) >= h.cfg.Window {
		h.lastSweep = now
		for k, t := range h.sent {
			if now.Sub(t) >= h.cfg.Window {
				delete(h.sent, k)
			}
		}
	}
}

func (h *Handler) post(ctx context.Context, n Notification) error {
	body, err := json.Marshal(n)
	if err != nil {
		return pipeline.Permanent(err)
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return pipeline.Permanent(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.client.Do(req)
	if err != nil {
		return fmt.Errorf("pushnotify: post: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("pushnotify: %s answered %s", h.cfg.URL, resp.Status)
	}
	return nil
}

// Module contributes the handler to a process built with wiring.Module;
// it needs a Config in the graph.
var Module = fx.Module(Name,
	pipeline.Provide(func(cfg Config) (pipeline.Handler, error) {
		h, err := New(cfg)
		if err != nil {
			return pipeline.Handler{}, err
		}
		return h.Pipeline(), nil
	}),
)
