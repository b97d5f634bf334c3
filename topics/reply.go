package topics

import (
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
)

// Reply encodes a frame for one connection, with an optional control
// applied before it: the comet's delivery topic and the message to
// publish there.
func Reply(s *topicpb.Session, frame *clientpb.ServerFrame, ctl *topicpb.Control) (topic string, msg *message.Message, err error) {
	msg, err = Deliveries.Encode(&topicpb.Delivery{Conns: []string{s.GetConn()}, Frame: frame, Control: ctl})
	return Delivery(s.GetComet()), msg, err
}

// ErrorFrame is an Error frame answering request requestID.
func ErrorFrame(requestID uint64, code clientpb.Error_Code, text string) *clientpb.ServerFrame {
	return &clientpb.ServerFrame{
		RequestId: requestID,
		Body:      &clientpb.ServerFrame_Error{Error: &clientpb.Error{Code: code, Text: text}},
	}
}

// RetryAfterMs is the retry_after_ms of a RATE_LIMITED answer telling to
// wait d: rounded up to the millisecond, at least 1 and at most an hour,
// so that a client waiting that long finds the budget refilled.
func RetryAfterMs(d time.Duration) uint32 {
	d = min(max(d, time.Millisecond), time.Hour)
	return uint32((d + time.Millisecond - 1) / time.Millisecond)
}
