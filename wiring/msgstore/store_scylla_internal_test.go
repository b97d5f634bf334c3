package msgstore

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/laneim/laneim/proto/clientpb"
)

func TestScyllaStatements(t *testing.T) {
	s := buildStatements("ks")
	tests := []struct {
		name, got string
		names     []string
		want      string
		wantNames string
	}{
		{"insert", s.insert, s.insertNames, "INSERT INTO ks.messages (conversation,bucket,seq,id,sender,body,content_type,server_time_ms,client_msg_id,edits,recalls,mentions) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) IF NOT EXISTS USING TTL ? ", "conversation bucket seq id sender body content_type server_time_ms client_msg_id edits recalls mentions ttl"},
		{"after", s.after, s.afterNames, "SELECT conversation,bucket,seq,id,sender,body,content_type,server_time_ms,client_msg_id,edits,recalls,mentions FROM ks.messages WHERE conversation=? AND bucket=? AND seq>? ORDER BY seq ASC LIMIT ? ", "conversation bucket seq lim"},
		{"before", s.before, s.beforeNames, "SELECT conversation,bucket,seq,id,sender,body,content_type,server_time_ms,client_msg_id,edits,recalls,mentions FROM ks.messages WHERE conversation=? AND bucket=? AND seq<? ORDER BY seq DESC LIMIT ? ", "conversation bucket seq lim"},
		{"latest", s.latest, s.latestNames, "UPDATE ks.conversations SET latest=? WHERE conversation=? ", "latest conversation"},
		{"all latest", s.allLatest, nil, "SELECT conversation,latest FROM ks.conversations ", ""},
		{"insert change", s.insertChange, s.insertChangeNames, "INSERT INTO ks.changes (conversation,bucket,target,seq) VALUES (?,?,?,?) USING TTL ? ", "conversation bucket target seq ttl"},
		{"changes", s.changes, s.changesNames, "SELECT target,seq FROM ks.changes WHERE conversation=? AND bucket=? AND target>=? AND target<=? ", "conversation bucket from to"},
		{"save read", s.saveRead, s.saveReadNames, "UPDATE ks.reads USING TIMESTAMP ? SET seq=? WHERE reader=? AND conversation=? ", "ts seq reader conversation"},
		{"reads", s.reads, s.readsNames, "SELECT conversation,seq FROM ks.reads WHERE reader=? AND conversation IN ? ", "reader conversation"},
		{"one", s.one, s.oneNames, "SELECT conversation,bucket,seq,id,sender,body,content_type,server_time_ms,client_msg_id,edits,recalls,mentions FROM ks.messages WHERE conversation=? AND bucket=? AND seq=? ", "conversation bucket seq"},
	}
	for _, tt := range tests {
		if tt.got != tt.want || strings.Join(tt.names, " ") != tt.wantNames {
			t.Errorf("%s:\n got %q %v\nwant %q %s", tt.name, tt.got, tt.names, tt.want, tt.wantNames)
		}
	}
}

func TestScyllaSchemaBoundsPartitions(t *testing.T) {
	schema := strings.Join(ScyllaSchema("ks", 3), "\n")
	for _, want := range []string{"PRIMARY KEY ((conversation, bucket), seq)", "'replication_factor': 3", "CLUSTERING ORDER BY (seq ASC)"} {
		if !strings.Contains(schema, want) {
			t.Errorf("schema lacks %q", want)
		}
	}
	tests := []struct {
		seq  uint64
		want int64
	}{{0, 0}, {1, 0}, {BucketSize - 1, 0}, {BucketSize, 1}, {5*BucketSize + 3, 5}}
	for _, tt := range tests {
		if got := bucketOf(tt.seq); got != tt.want {
			t.Errorf("bucketOf(%d) = %d, want %d", tt.seq, got, tt.want)
		}
	}
}

func TestScyllaRowRoundTrip(t *testing.T) {
	m := &clientpb.Message{Id: "i", Conversation: "dm:a:b", Seq: 12345, Sender: "a", Body: []byte("x"), ContentType: "text/plain", ServerTimeUnixMs: 99, ClientMsgId: "c", Edits: 12000, Mentions: []string{"b"}}
	r := toRow(m)
	if r.Bucket != 1 || !proto.Equal(r.message(), m) {
		t.Fatalf("round trip: %+v -> %v", r, r.message())
	}
}

func TestScyllaConfig(t *testing.T) {
	if err := (ScyllaConfig{}).Validate(); err == nil {
		t.Error("no hosts accepted")
	}
	if err := (ScyllaConfig{Hosts: []string{"h"}, Consistency: "MOSTLY"}).Validate(); err == nil {
		t.Error("bad consistency accepted")
	}
	c := ScyllaConfig{Hosts: []string{"h"}}
	c.setDefaults()
	if c.Keyspace != "laneim" || c.Consistency != "LOCAL_QUORUM" || c.Validate() != nil {
		t.Errorf("defaults %+v", c)
	}
}
