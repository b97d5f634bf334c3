package comet

import (
	"sync"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/proto/clientpb"
)

// frame is a ServerFrame encoded at most once per encoding; the same bytes
// go to every connection that receives it. Safe for concurrent use.
type frame struct {
	msg *clientpb.ServerFrame

	pbOnce, jsonOnce sync.Once
	pb, json         []byte
}

func newFrame(f *clientpb.ServerFrame) *frame { return &frame{msg: f} }

// bytes returns the frame in the connection's encoding.
func (f *frame) bytes(useJSON bool) []byte {
	if useJSON {
		f.jsonOnce.Do(func() { f.json, _ = protojson.Marshal(f.msg) })
		return f.json
	}
	f.pbOnce.Do(func() { f.pb, _ = proto.Marshal(f.msg) })
	return f.pb
}
