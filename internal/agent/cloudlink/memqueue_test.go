package cloudlink

import (
	"strings"
	"testing"
)

// TestMemQueue_FloodStaysWithinBoundsAndKeepsReplies: the in-memory outbox drops the
// oldest telemetry first, keeps a diagnostics reply while there is telemetry to drop,
// never holds more than its bounds, and forgets a message once acknowledged.
func TestMemQueue_FloodStaysWithinBoundsAndKeepsReplies(t *testing.T) {
	t.Parallel()
	dropped := map[string]int{}
	q := newMemQueue(1000, 4, func(kind string) { dropped[kind]++ })
	if err := q.put(kindReply, "r1", []byte("reply")); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if err := q.put(kindTelemetry, "", []byte(strings.Repeat("t", 100))); err != nil {
			t.Fatal(err)
		}
		if n, b := q.size(); n > 4 || b > 1000 {
			t.Fatalf("size = %d messages, %d bytes; want at most 4 and 1000", n, b)
		}
	}
	if !q.hasReply("r1") || dropped[kindTelemetry] != 7 || dropped[kindReply] != 0 {
		t.Fatalf("hasReply(r1) = %v, dropped %v; want the reply kept and 7 telemetry dropped", q.hasReply("r1"), dropped)
	}
	// Bytes bound too: one large message pushes out the telemetry, then the reply.
	if err := q.put(kindEvent, "", []byte(strings.Repeat("e", 996))); err != nil {
		t.Fatal(err)
	}
	if n, b := q.size(); n != 1 || b != 996 || q.hasReply("r1") {
		t.Fatalf("size = %d, %d bytes, reply kept %v; want only the event", n, b, q.hasReply("r1"))
	}
	es, data, err := q.next(16, func(uint64) bool { return false })
	if err != nil || len(es) != 1 || es[0].kind != kindEvent || len(data[0]) != 996 {
		t.Fatalf("next = %v, %d, %v", es, len(data), err)
	}
	if err := q.ack(es[0].seq); err != nil {
		t.Fatal(err)
	}
	if n, b := q.size(); n != 0 || b != 0 {
		t.Fatalf("size after ack = %d, %d; want empty", n, b)
	}
}
