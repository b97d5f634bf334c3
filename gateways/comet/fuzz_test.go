package comet

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/proto/clientpb"
	"github.com/laneim/laneim/proto/topicpb"
	"github.com/laneim/laneim/topics"
)

// decodeClientFrame decodes one client WebSocket message as conn.read
// does (decodeFrame). It returns the reply read sends for an undecodable
// frame.
func decodeClientFrame(text bool, data []byte) (*clientpb.ClientFrame, *clientpb.ServerFrame) {
	f, req, err := decodeFrame(text, data)
	if err != nil {
		return nil, topics.ErrorFrame(req, clientpb.Error_BAD_FRAME, strings.ToValidUTF8("undecodable frame: "+err.Error(), "?"))
	}
	return f, nil
}

// TestRequestID: the request id of a frame that does not decode is read
// where it can be, and is 0 where it cannot.
func TestRequestID(t *testing.T) {
	for _, tt := range []struct {
		name string
		text bool
		data string
		want uint64
	}{
		{"json string", true, `{"requestId":"12","send":{"room":"a","user":"b"}}`, 12},
		{"json number", true, `{"requestId":13,"ping":{},"join":{}}`, 13},
		{"json snake case", true, `{"request_id":"14","login":{"token":1}}`, 14},
		{"json after the bad member", true, `{"send":{"body":"not base64!"},"requestId":"15"}`, 15},
		{"json largest", true, `{"requestId":"18446744073709551615","x":{}}`, 1<<64 - 1},
		{"json negative", true, `{"requestId":"-1"}`, 0},
		{"json beyond 64 bits", true, `{"requestId":"18446744073709551616"}`, 0},
		{"json fraction", true, `{"requestId":1.5}`, 0},
		{"json without", true, `{"send":{"room":"a","user":"b"}}`, 0},
		{"json cut short after it", true, `{"requestId":"3"`, 3},
		{"json cut short in the body", true, `{"requestId":"47","ping":{`, 47},
		{"json with a brace too many", true, `{"requestId":"48","ping":{}}}`, 48},
		{"json with a trailing comma", true, `{"requestId":"49","ping":{},}`, 49},
		{"json broken before it", true, `{"ping":{,"requestId":"50"}`, 0},
		{"json cut short in it", true, `{"requestId":"5`, 0},
		{"json twice", true, `{"requestId":"7","request_id":"8"}`, 7},
		{"json of another type", true, `{"requestId":{"n":1}}`, 0},
		{"not json", true, `requestId: 3`, 0},
		{"json array", true, `[1]`, 0},
		{"protobuf first", false, "\x08\x07\x6a\x80\x80\x80\x80\x08", 7},
		{"protobuf after another field", false, "\x6a\x00\x08\x2a\x6a\xff", 42},
		{"protobuf without", false, "\x6a\x00", 0},
		{"protobuf broken before it", false, "\x6a\x80\x80\x80\x80\x08\x08\x07", 0},
		{"protobuf id of another type", false, "\x0a\x01\x07", 0},
		{"empty", false, "", 0},
	} {
		if got := requestID(tt.text, []byte(tt.data)); got != tt.want {
			t.Errorf("%s: requestID(%q) = %d, want %d", tt.name, tt.data, got, tt.want)
		}
	}
}

// FuzzClientFrame feeds arbitrary WebSocket messages (text: JSON, binary:
// protobuf) to the comet's decoding. It must never panic; an undecodable
// frame's BAD_FRAME reply encodes in both encodings (not replaced by the
// UNAVAILABLE fallback); a decoded frame encodes again in both encodings
// to the same frame, and the topic payloads the comet builds from it
// (LoginRequest, Submitted, HistoryRequest) encode.
func FuzzClientFrame(f *testing.F) {
	seeds := []*clientpb.ClientFrame{
		{RequestId: 1, Body: &clientpb.ClientFrame_Login{Login: &clientpb.Login{Token: "a.b.c", Device: "ios"}}},
		{RequestId: 2, Body: &clientpb.ClientFrame_Join{Join: &clientpb.JoinRoom{Room: "lobby"}}},
		{RequestId: 3, Body: &clientpb.ClientFrame_Leave{Leave: &clientpb.LeaveRoom{Room: "lobby"}}},
		{RequestId: 4, Body: &clientpb.ClientFrame_Send{Send: &clientpb.Send{ClientMsgId: "m-1", To: &clientpb.Send_Room{Room: "lobby"}, Body: []byte("hi"), ContentType: "text/plain"}}},
		{RequestId: 5, Body: &clientpb.ClientFrame_Send{Send: &clientpb.Send{ClientMsgId: "m-2", To: &clientpb.Send_User{User: "bob"}, Body: []byte{0, 0xff}}}},
		{RequestId: 6, Body: &clientpb.ClientFrame_Ack{Ack: &clientpb.Ack{Conversation: "dm:alice:bob", Seq: 9}}},
		{RequestId: 7, Body: &clientpb.ClientFrame_Ping{Ping: &clientpb.Ping{ClientTimeUnixMs: 1}}},
		{RequestId: 8, Body: &clientpb.ClientFrame_Sync{Sync: &clientpb.Sync{Conversation: "room:lobby", AfterSeq: 3, Limit: 500}}},
		{RequestId: 9, Body: &clientpb.ClientFrame_Conversations{Conversations: &clientpb.Conversations{Cursor: "x", Limit: 10}}},
		{RequestId: 10},
	}
	for _, s := range seeds {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(false, b)
		j, err := protojson.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(true, j)
	}
	for _, s := range []string{
		`{"requestId":"1","login":{"token":"t","device":"web"}}`,
		`{"request_id":1,"send":{"client_msg_id":"m","room":"lobby","body":"aGVsbG8="}}`,
		`{"requestId":"1","unknownField":{"deep":[[[[1]]]]},"ping":{}}`,
		`{"requestId":"1","login":{},"join":{}}`, // two members of the oneof
		`{"requestId":"-1"}`,
		`{"requestId":"18446744073709551616"}`,
		`{"send":{"body":"not base64!"}}`,
		`{"send":{"contentType":"\ud800"}}`,
		"{\"login\":{\"token\":\"\xff\xfe\"}}",
		strings.Repeat("[", 1000),
		strings.Repeat(`{"a":`, 200) + "1" + strings.Repeat("}", 200),
		"", "null", "[]", "\"x\"",
	} {
		f.Add(true, []byte(s))
	}
	f.Add(false, []byte{0x52, 0x03, 0x0a, 0x01, 0xff})           // login token not UTF-8
	f.Add(false, []byte{0x6a, 0x80, 0x80, 0x80, 0x80, 0x08})     // length beyond the frame
	f.Add(false, []byte(strings.Repeat("\x6a\x02\x6a\x00", 64))) // nested sends
	f.Add(false, []byte{0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, text bool, data []byte) {
		if len(data) > 64<<10 { // the comet's default read limit
			return
		}
		frame, reply := decodeClientFrame(text, data)
		if reply != nil {
			for _, useJSON := range []bool{false, true} {
				e := encProto
				if useJSON {
					e = encJSON
				}
				b := newFrame(reply).bytes(e)
				var got clientpb.ServerFrame
				var err error
				if useJSON {
					err = protojson.Unmarshal(b, &got)
				} else {
					err = proto.Unmarshal(b, &got)
				}
				if err != nil || got.GetError().GetCode() != clientpb.Error_BAD_FRAME {
					t.Fatalf("BAD_FRAME reply (json=%v) encodes as %q (%v)", useJSON, b, err)
				}
			}
			return
		}
		for _, useJSON := range []bool{false, true} {
			var b []byte
			var err error
			if useJSON {
				b, err = protojson.Marshal(frame)
			} else {
				b, err = proto.Marshal(frame)
			}
			if err != nil {
				t.Fatalf("decoded %v, cannot encode it again (json=%v): %v", frame, useJSON, err)
			}
			again, reply := decodeClientFrame(useJSON, b)
			if reply != nil {
				t.Fatalf("%v re-decoded (json=%v): %v", frame, useJSON, reply)
			}
			same := proto.Equal(frame, again)
			if useJSON {
				// JSON drops unknown fields: compare what JSON keeps.
				b2, err := protojson.Marshal(again)
				same = err == nil && string(b2) == string(b)
			}
			if !same {
				t.Fatalf("%v re-decoded (json=%v) as %v", frame, useJSON, again)
			}
		}
		// What serve forwards to the pipeline must encode.
		sess := &topicpb.Session{Comet: "c1", Conn: "x.1"}
		var err error
		switch b := frame.GetBody().(type) {
		case *clientpb.ClientFrame_Login:
			_, err = topics.LoginRequests.Encode(&topicpb.LoginRequest{Session: sess, RequestId: frame.GetRequestId(), User: "alice", TokenExpiresUnixMs: 1, Device: b.Login.GetDevice()})
		case *clientpb.ClientFrame_Send:
			sub := &topicpb.Submitted{Origin: sess, Sender: "alice", ClientMsgId: b.Send.GetClientMsgId(), Body: b.Send.GetBody(), ContentType: b.Send.GetContentType()}
			switch to := b.Send.GetTo().(type) {
			case *clientpb.Send_Room:
				sub.To = &topicpb.Submitted_Room{Room: to.Room}
			case *clientpb.Send_User:
				sub.To = &topicpb.Submitted_User{User: to.User}
			}
			_, err = topics.Submitted.Encode(sub)
		case *clientpb.ClientFrame_Sync:
			_, err = topics.HistoryRequests.Encode(&topicpb.HistoryRequest{Session: sess, User: "alice", Conversation: b.Sync.GetConversation(), AfterSeq: b.Sync.GetAfterSeq(), Limit: b.Sync.GetLimit()})
		case *clientpb.ClientFrame_Conversations:
			_, err = topics.HistoryRequests.Encode(&topicpb.HistoryRequest{Session: sess, User: "alice", Conversations: b.Conversations})
		}
		if err != nil {
			t.Fatalf("frame %v: its topic payload does not encode: %v", frame, err)
		}
	})
}
