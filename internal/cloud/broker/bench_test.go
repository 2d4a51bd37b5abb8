package broker_test

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/moat-iot/moat/internal/telemetry"
)

// BenchmarkBroker_Admission times one device connection: TLS handshake with the device
// certificate, CONNECT, the authenticator's checks, CONNACK. Its baseline is a bare
// mutual-TLS handshake with the same certificates against crypto/tls in the same run.
func BenchmarkBroker_Admission(b *testing.B) {
	p := testPKI(b)
	d := newDevice(b)
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(p.serverCA)
	if err != nil {
		b.Fatal(err)
	}
	pool.AppendCertsFromPEM(caPEM)
	clientTLS := &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{d.tlsCert}, MinVersion: tls.VersionTLS12}

	var baseline, admission float64
	b.Run("baseline_mtls_handshake", func(b *testing.B) {
		ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{p.serverCert}, ClientAuth: tls.RequireAnyClientCert, MinVersion: tls.VersionTLS12})
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { _ = c.(*tls.Conn).Handshake(); c.Close() }()
			}
		}()
		for b.Loop() {
			c, err := tls.Dial("tcp", ln.Addr().String(), clientTLS)
			if err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
		baseline = float64(b.Elapsed().Microseconds()) / float64(b.N)
		b.ReportMetric(baseline, "µs/conn")
	})
	for _, sync := range []bool{true, false} {
		name := "mqtt_admission_sync_always"
		if !sync {
			name = "mqtt_admission_sync_off"
		}
		b.Run(name, func(b *testing.B) {
			cfg := config(b)
			cfg.SyncAlways = sync
			br := open(b, cfg)
			opts := mqtt.NewClientOptions().AddBroker("tls://" + br.MQTTAddr().String()).SetClientID(d.id).
				SetUsername(product).SetProtocolVersion(4).SetAutoReconnect(false).SetTLSConfig(clientTLS)
			for b.Loop() {
				c := mqtt.NewClient(opts)
				if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
					b.Fatalf("connect: %v", tok.Error())
				}
				c.Disconnect(0)
			}
			if sync {
				admission = float64(b.Elapsed().Microseconds()) / float64(b.N)
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/conn")
		})
	}
	if baseline > 0 && admission > 0 {
		b.Logf("admission %.0f µs, bare mTLS handshake %.0f µs, ratio %.1f", admission, baseline, admission/baseline)
	}
}

// BenchmarkBroker_PublishQoS1 is the QoS 1 publish→PUBACK rate of one paho client with
// up to 64 messages in flight, with SyncAlways on (an fsync per stored message) and
// off, in the same run.
func BenchmarkBroker_PublishQoS1(b *testing.B) {
	rates := map[bool]float64{}
	for _, sync := range []bool{false, true} {
		name := "sync_off"
		if sync {
			name = "sync_always"
		}
		b.Run(name, func(b *testing.B) {
			cfg := config(b)
			cfg.SyncAlways = sync
			cfg.MaxMsgsPerDevice = 1 << 30
			br := open(b, cfg)
			d := newDevice(b)
			c, err := pahoClient(b, br, d, true)
			if err != nil {
				b.Fatal(err)
			}
			payload := []byte(`{"v":1,"at":"2026-03-01T12:00:00Z","cycle":"c1","readings":{"drying_temp":{"value":71.5,"unit":"Cel"}}}`)
			topic := telemetry.TelemetryTopic(d.id)
			window := make(chan mqtt.Token, 64)
			n := 0
			for b.Loop() {
				if len(window) == cap(window) {
					waitToken(b, <-window)
				}
				window <- c.Publish(topic, 1, false, payload)
				n++
			}
			for len(window) > 0 {
				waitToken(b, <-window)
			}
			rate := float64(n) / b.Elapsed().Seconds()
			rates[sync] = rate
			b.ReportMetric(rate, "msgs/s")
		})
	}
	if rates[false] > 0 && rates[true] > 0 {
		b.Logf("QoS 1 publish→PUBACK: sync off %.0f msgs/s, sync always %.0f msgs/s (%.0f%%)", rates[false], rates[true], 100*rates[true]/rates[false])
	}
}

func waitToken(b *testing.B, tok mqtt.Token) {
	if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		b.Fatalf("publish: %v", tok.Error())
	}
}
