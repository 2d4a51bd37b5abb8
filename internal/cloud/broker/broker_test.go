package broker_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/telemetry"
)

func TestBroker_ValidDevicePublishes(t *testing.T) {
	t.Parallel()
	needMosquitto(t)
	b := open(t, config(t))
	d := newDevice(t)
	if ok, out := publish(t, b, d, telemetry.TelemetryTopic(d.id), `{"v":1}`); !ok {
		t.Fatalf("mosquitto_pub = refused, want PUBACK:\n%s", out)
	}
	if diff := cmp.Diff([]string{`{"v":1}`}, stored(t, b, subj(telemetry.TelemetryTopic(d.id)))); diff != "" {
		t.Errorf("stored (-want +got):\n%s", diff)
	}
}
