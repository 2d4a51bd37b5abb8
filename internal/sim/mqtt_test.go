package sim

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/moat-iot/moat/internal/agent/cloudlink"
	"github.com/moat-iot/moat/internal/telemetry"
)

// testCloudDevice is a device's cloud side without a session: what it publishes waits in
// its outbox.
func testCloudDevice(failing bool) *cloudDevice {
	s := &Sim{cfg: Config{Cloud: &CloudConfig{Interval: 10 * time.Millisecond}}, now: time.Now, log: slog.New(slog.DiscardHandler)}
	d := &device{s: s, id: strings.Repeat("ab", 32)}
	d.cloud = &cloudDevice{d: d, failing: failing}
	return d.cloud
}

func requestPacket(t *testing.T, device, id string, req telemetry.DiagnosticRequest) *packets.PublishPacket {
	t.Helper()
	data, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	p.Qos, p.MessageID, p.TopicName, p.Payload = 1, 7, telemetry.DiagnosticsTopic(device, id), data
	return p
}

// replies waits until n replies are queued and returns them by request ID.
func replies(t *testing.T, c *cloudDevice, n int) map[string]telemetry.DiagnosticReply {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mu.Lock()
		out := append([]outMessage(nil), c.out...)
		c.mu.Unlock()
		if len(out) >= n || time.Now().After(deadline) {
			got := map[string]telemetry.DiagnosticReply{}
			for _, m := range out {
				r, err := telemetry.DecodeReply(m.data)
				if err != nil || !m.reply || m.topic != telemetry.ReplyTopic(c.d.id, r.ID) {
					t.Fatalf("queued %q on %s (reply %v): %v", m.data, m.topic, m.reply, err)
				}
				got[r.ID] = r
			}
			return got
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, not timing one
	}
}

// TestRequest_AnswersOnceAndRefusesExpiredMalformedAndForeign: the simulated device keeps
// the cloud link's rules for diagnostics requests. A request is run once however often it
// is delivered; one past its deadline is answered "expired" without running; one whose body
// names another ID is "malformed request"; a request on another device's topic is ignored;
// the heater self-test of a failing heater says so.
func TestRequest_AnswersOnceAndRefusesExpiredMalformedAndForeign(t *testing.T) {
	t.Parallel()
	c := testCloudDevice(true)
	ctx := t.Context()
	soon := time.Now().Add(time.Minute)
	run := telemetry.DiagnosticRequest{V: 1, ID: "run", Command: "heater-self-test", Args: json.RawMessage(`{"seconds":1}`), Deadline: soon}
	c.request(ctx, requestPacket(t, c.d.id, "run", run))
	c.request(ctx, requestPacket(t, c.d.id, "run", run)) // redelivered
	c.request(ctx, requestPacket(t, c.d.id, "old", telemetry.DiagnosticRequest{V: 1, ID: "old", Command: "heater-self-test", Deadline: time.Now().Add(-time.Second)}))
	c.request(ctx, requestPacket(t, c.d.id, "lie", telemetry.DiagnosticRequest{V: 1, ID: "other", Command: "heater-self-test", Deadline: soon}))
	c.request(ctx, requestPacket(t, strings.Repeat("cd", 32), "foreign", telemetry.DiagnosticRequest{V: 1, ID: "foreign", Command: "heater-self-test", Deadline: soon}))
	// The redelivery was dropped at once (a second run would have been answered "busy"
	// at once, as the first runs for 10 ms): three replies, one each.
	got := replies(t, c, 3)
	c.mu.Lock()
	queued := len(c.out)
	c.mu.Unlock()
	if len(got) != 3 || queued != 3 {
		t.Fatalf("replies = %+v (%d queued), want one each to run, old and lie", got, queued)
	}
	if r := got["run"]; !r.OK || !bytes.Contains(r.Result, []byte(`"verdict":"heater_failing"`)) {
		t.Errorf("reply to run = %+v, want the failing heater's verdict", r)
	}
	if r := got["old"]; r.OK || r.Error != cloudlink.ReplyExpired {
		t.Errorf("reply to old = %+v, want %q", r, cloudlink.ReplyExpired)
	}
	if r := got["lie"]; r.OK || r.Error != cloudlink.ReplyMalformed {
		t.Errorf("reply to lie = %+v, want %q", r, cloudlink.ReplyMalformed)
	}
	if n := c.d.s.cloud.diagnostics.Load(); n != 3 {
		t.Errorf("diagnostics answered = %d, want 3", n)
	}
}

// TestPublish_FullOutboxDropsOldestTelemetryKeepsReplies: a device offline for long holds
// at most cloudQueueMessages, dropping the oldest telemetry first and keeping replies.
func TestPublish_FullOutboxDropsOldestTelemetryKeepsReplies(t *testing.T) {
	t.Parallel()
	c := testCloudDevice(false)
	c.publish("reply", []byte("r"), true)
	for i := range 3 * cloudQueueMessages {
		c.publish("telemetry", []byte{byte(i)}, false)
	}
	if len(c.out) != cloudQueueMessages || !c.out[0].reply || c.out[len(c.out)-1].data[0] != 3*cloudQueueMessages-1 {
		t.Fatalf("outbox holds %d messages, first a reply %v; want %d with the reply and the newest telemetry", len(c.out), c.out[0].reply, cloudQueueMessages)
	}
	ids := map[uint16]bool{}
	for _, m := range c.out {
		if m.id <= subscribeID || ids[m.id] {
			t.Fatalf("packet ID %d reused or reserved", m.id)
		}
		ids[m.id] = true
	}
	if n := c.d.s.cloud.dropped.Load(); n != 2*cloudQueueMessages+1 {
		t.Errorf("dropped = %d, want %d", n, 2*cloudQueueMessages+1)
	}
}

// TestReadPacket_RefusesOversizedPacket: a broker that announces a packet past
// maxPacketBytes is refused from the fixed header, before anything is allocated for it; a
// malformed length is refused too.
func TestReadPacket_RefusesOversizedPacket(t *testing.T) {
	t.Parallel()
	huge := []byte{0x30, 0xff, 0xff, 0xff, 0x7f} // PUBLISH of 256 MiB - 1
	if _, err := readPacket(bytes.NewReader(huge)); !errors.Is(err, errPacketTooLarge) {
		t.Errorf("readPacket(256 MiB header) = %v, want errPacketTooLarge", err)
	}
	if _, err := readPacket(bytes.NewReader([]byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x01})); err == nil {
		t.Error("readPacket(five length bytes) = nil error")
	}
	var b bytes.Buffer
	p := publishPacket(outMessage{id: 9, topic: "devices/x/diagnostics/y", data: []byte(`{}`)}, false)
	if err := p.Write(&b); err != nil {
		t.Fatal(err)
	}
	got, err := readPacket(&b)
	if pp, ok := got.(*packets.PublishPacket); err != nil || !ok || pp.MessageID != 9 || string(pp.Payload) != `{}` {
		t.Errorf("readPacket(publish) = %v, %v", got, err)
	}
}

// FuzzReadPacket: whatever the broker sends, readPacket returns a packet or an error within
// its bound, and never panics.
func FuzzReadPacket(f *testing.F) {
	for _, seed := range [][]byte{{0x20, 0x02, 0x00, 0x00}, {0x40, 0x02, 0x00, 0x09}, {0xd0, 0x00}, {0x30, 0xff, 0xff, 0xff, 0x7f},
		{0x90, 0x03, 0x00, 0x01, 0x01}, {0x32, 0x07, 0x00, 0x01, 'a', 0x00, 0x05, '{', '}'}} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := readPacket(bytes.NewReader(data))
		if err == nil && p == nil {
			t.Fatal("no packet and no error")
		}
	})
}
