package ingest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/problem"
	"github.com/moat-iot/moat/internal/telemetry"
)

// Reasons a message is dropped: the values of moat_cloud_ingest_dropped_total's reason.
const (
	ReasonBadSubject          = "bad_subject"          // not a device subject of the scheme
	ReasonOversized           = "oversized"            // larger than the payload limit
	ReasonUnsupportedEncoding = "unsupported_encoding" // CBOR, reserved for a later version
	ReasonMalformed           = "malformed"            // not one strict JSON payload object
	ReasonInvalid             = "invalid"              // well-formed, but breaks a payload rule
	ReasonRequestMismatch     = "request_mismatch"     // a reply whose topic and payload name different requests
	ReasonRateLimited         = "rate_limited"         // the device sent more than its rate
	ReasonUnknownDevice       = "unknown_device"       // no connection of the device was recorded
	ReasonCertificateExpired  = "certificate_expired"  // arrived after the device's certificate expired
)

// Reasons lists every drop reason.
var Reasons = []string{ReasonBadSubject, ReasonOversized, ReasonUnsupportedEncoding, ReasonMalformed, ReasonInvalid,
	ReasonRequestMismatch, ReasonRateLimited, ReasonUnknownDevice, ReasonCertificateExpired}

func isTimeout(err error) bool {
	return errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded)
}

// pending is a decoded message waiting for its device.
type pending struct {
	msg     jetstream.Msg
	arrived time.Time
	rec     cloudstore.Record
}

// process stores one fetched batch and acknowledges it.
func (in *Ingest) process(ctx context.Context, msgs []jetstream.Msg) error {
	in.m.batch.Observe(float64(len(msgs)))
	undo := in.limiter.begin()
	var (
		good    []pending
		devices = map[string]bool{}
		lastTS  time.Time
		lastPnd uint64
	)
	for _, msg := range msgs {
		meta, err := msg.Metadata()
		if err != nil {
			// Not a JetStream message: nothing to ack or store.
			in.drop(ctx, ReasonBadSubject, "", fmt.Errorf("metadata: %w", err))
			continue
		}
		lastTS, lastPnd = meta.Timestamp, meta.NumPending
		p, reason, err := in.decode(msg, meta)
		if reason != "" {
			in.drop(ctx, reason, p.rec.Device, err)
			continue
		}
		good = append(good, p)
		devices[p.rec.Device] = true
	}
	records, err := in.attribute(ctx, good, devices)
	if err == nil {
		start := time.Now()
		var res cloudstore.BatchResult
		res, err = in.deps.Store.WriteBatch(ctx, records)
		in.m.commit.Observe(time.Since(start).Seconds())
		if err == nil {
			in.ackAll(ctx, msgs)
			in.after(ctx, records, res)
			in.m.pending.Set(float64(lastPnd))
			if !lastTS.IsZero() {
				in.m.lag.Set(max(0, in.deps.Now().Sub(lastTS).Seconds()))
			}
			return nil
		}
	}
	// Nothing was committed: nothing is acknowledged, the batch comes back after
	// RetryDelay, and the rate limiter forgets this batch so the redelivery is judged afresh.
	undo()
	in.m.commitFailures.Inc()
	for _, msg := range msgs {
		_ = msg.NakWithDelay(in.cfg.RetryDelay)
	}
	return fmt.Errorf("store batch of %d messages: %w", len(msgs), err)
}

// decode checks one message's subject, rate and payload.
func (in *Ingest) decode(msg jetstream.Msg, meta *jetstream.MsgMetadata) (pending, string, error) {
	p := pending{msg: msg, arrived: meta.Timestamp}
	addr, err := telemetry.ParseSubject(msg.Subject())
	if err != nil {
		return p, ReasonBadSubject, err
	}
	p.rec = cloudstore.Record{Seq: meta.Sequence.Stream, Device: addr.Device, ReceivedAt: meta.Timestamp.UTC()}
	// Rate before decoding: a flood costs a map lookup per message, not a JSON parse.
	if !in.limiter.allow(addr.Device, meta.Timestamp) {
		return p, ReasonRateLimited, errors.New("device over its message rate")
	}
	data := msg.Data()
	switch addr.Kind {
	case telemetry.KindTelemetry:
		var t telemetry.Telemetry
		if t, err = telemetry.DecodeTelemetry(data); err == nil {
			p.rec.Telemetry = &t
		}
	case telemetry.KindEvents:
		var e telemetry.Event
		if e, err = telemetry.DecodeEvent(data); err == nil {
			p.rec.Event = &e
		}
	case telemetry.KindDiagnosticReply:
		var r telemetry.DiagnosticReply
		if r, err = telemetry.DecodeReply(data); err == nil {
			if r.ID != addr.Request {
				return p, ReasonRequestMismatch, fmt.Errorf("reply on the topic of request %s names request %s", addr.Request, r.ID)
			}
			p.rec.Reply = &r
		}
	default: // a diagnostics request: the cloud's own, never a device's to publish
		return p, ReasonBadSubject, fmt.Errorf("subject %s is not one devices publish on", msg.Subject())
	}
	if err != nil {
		return p, decodeReason(err), err
	}
	return p, "", nil
}

// decodeReason maps a telemetry decoding error to a drop reason.
func decodeReason(err error) string {
	pe, ok := errors.AsType[*problem.Error](err)
	switch {
	case !ok:
		return ReasonMalformed
	case pe.Kind == problem.TooLarge:
		return ReasonOversized
	case pe.Code == "unsupported_encoding":
		return ReasonUnsupportedEncoding
	case pe.Code == "malformed_payload" || pe.Code == "empty_payload" || pe.Code == "invalid_utf8":
		return ReasonMalformed
	}
	return ReasonInvalid
}

// attribute fills in each record's product and drops what its device may not send.
// Enforces the certificate expiry (ATTACKS rows 8, 34); attacked by
// TestIngest_DropsMessagesAfterCertificateExpiry.
func (in *Ingest) attribute(ctx context.Context, good []pending, devices map[string]bool) ([]cloudstore.Record, error) {
	if len(good) == 0 {
		return nil, nil
	}
	ids := make([]string, 0, len(devices))
	for id := range devices {
		ids = append(ids, id)
	}
	known, err := in.deps.Store.Devices(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("look up devices: %w", err)
	}
	records := make([]cloudstore.Record, 0, len(good))
	for _, p := range good {
		d, ok := known[p.rec.Device]
		switch {
		case !ok:
			in.drop(ctx, ReasonUnknownDevice, p.rec.Device, errors.New("no connection of the device is recorded"))
			continue
		case p.arrived.After(d.CertNotAfter):
			in.drop(ctx, ReasonCertificateExpired, p.rec.Device,
				fmt.Errorf("arrived %s, after the certificate expired at %s", p.arrived.UTC().Format(time.RFC3339), d.CertNotAfter.Format(time.RFC3339)))
			continue
		}
		p.rec.Product = d.Product
		records = append(records, p.rec)
	}
	return records, nil
}

// ackAll acknowledges every message of a committed batch: stored, duplicate and dropped.
func (in *Ingest) ackAll(ctx context.Context, msgs []jetstream.Msg) {
	var failed int
	var last error
	for _, msg := range msgs {
		if err := msg.Ack(); err != nil {
			failed, last = failed+1, err
		}
	}
	if failed > 0 {
		// Harmless: JetStream redelivers them and the store skips their sequences.
		in.log.WarnContext(ctx, "acknowledge stored messages", "failed", failed, "err", last)
	}
}

// after counts a committed batch and hands its new records to the hook.
func (in *Ingest) after(ctx context.Context, records []cloudstore.Record, res cloudstore.BatchResult) {
	in.m.stored.Add(float64(len(res.Stored)))
	in.m.duplicates.Add(float64(res.Duplicates))
	in.m.unmatched.Add(float64(res.UnmatchedReplies))
	if in.deps.Hook == nil || len(res.Stored) == 0 {
		return
	}
	samples := make([]Sample, len(res.Stored))
	for i, idx := range res.Stored {
		samples[i] = records[idx]
	}
	in.deps.Hook(ctx, samples)
}

// drop counts a dropped message and logs it, at most once per reason every 10 seconds.
func (in *Ingest) drop(ctx context.Context, reason, device string, err error) {
	in.m.dropped.WithLabelValues(reason).Inc()
	if n, ok := in.logs.allow(reason, in.deps.Now()); ok {
		in.log.WarnContext(ctx, "dropped device message", "reason", reason, "device_id", device, "err", err, "suppressed", n)
	}
}
