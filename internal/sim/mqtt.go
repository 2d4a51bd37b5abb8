package sim

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/moat-iot/moat/internal/agent/cloudlink"
	"github.com/moat-iot/moat/internal/telemetry"
)

// A simulated device's MQTT session (cloud.go says why it is not the agent's cloud link):
// one goroutine reads, and writes take cloudDevice.mu. paho's packets package encodes and
// decodes; what the broker sends is bounded by maxPacketBytes before it is read.

// Session timing and bounds, the cloud link's.
const (
	mqttConnectTimeout = 30 * time.Second
	mqttWriteTimeout   = 30 * time.Second
	mqttKeepAlive      = time.Minute
	// maxPacketBytes bounds a packet from the broker: the largest diagnostics request and
	// its topic.
	maxPacketBytes = telemetry.MaxRequestBytes + 1<<10
	subscribeID    = 1 // the SUBSCRIBE's packet ID; publishes use the others
	maxSeenIDs     = 32
	maxDiagnose    = 5 * time.Minute
)

var (
	errPacketTooLarge = errors.New("mqtt: packet too large")
	errRefused        = errors.New("mqtt: refused by the broker")
)

// session connects with cert and serves the session until the connection ends (the broker
// closed it, a read timed out, the certificate changed, ctx ended). up says the broker
// accepted the session.
func (c *cloudDevice) session(ctx context.Context, cert *certificate) (up bool, err error) {
	s := c.d.s
	u, _ := url.Parse(s.cfg.Cloud.Broker) // checked by Validate
	tcfg := &tls.Config{RootCAs: s.cfg.Cloud.CAs, Certificates: []tls.Certificate{cert.tls}, MinVersion: tls.VersionTLS12,
		ServerName: u.Hostname(), Time: s.now}
	dctx, cancel := context.WithTimeout(ctx, mqttConnectTimeout)
	nc, err := (&tls.Dialer{NetDialer: &net.Dialer{KeepAlive: mqttKeepAlive}, Config: tcfg}).DialContext(dctx, "tcp", u.Host)
	cancel()
	if err != nil {
		return false, fmt.Errorf("connect to %s: %w", u.Host, err)
	}
	conn := nc.(*tls.Conn)
	defer conn.Close()                                          //nolint:errcheck // the session is over either way
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() }) // ends a read or write in progress
	defer stop()
	c.live.Store(conn)
	defer c.live.Store(nil)
	if c.renewed.Load() || c.d.cert.Load() != cert {
		// Changed while it connected: certificateChanged may have missed conn.
		c.renewed.Store(true)
		return false, nil
	}

	_ = conn.SetDeadline(s.now().Add(mqttConnectTimeout))
	cp := packets.NewControlPacket(packets.Connect).(*packets.ConnectPacket)
	cp.ProtocolName, cp.ProtocolVersion, cp.CleanSession, cp.Keepalive = "MQTT", 4, false, uint16(mqttKeepAlive/time.Second)
	cp.ClientIdentifier, cp.UsernameFlag, cp.Username = c.d.id, true, s.world.product.Name
	if err := cp.Write(conn); err != nil {
		return false, fmt.Errorf("mqtt connect: %w", err)
	}
	p, err := readPacket(conn)
	if err != nil {
		return false, fmt.Errorf("mqtt connack: %w", err)
	}
	ack, ok := p.(*packets.ConnackPacket)
	if !ok {
		return false, fmt.Errorf("mqtt: %T before the CONNACK", p)
	}
	if ack.ReturnCode != packets.Accepted {
		return false, fmt.Errorf("%w: connack %#x", errRefused, ack.ReturnCode)
	}
	sub := packets.NewControlPacket(packets.Subscribe).(*packets.SubscribePacket)
	sub.MessageID, sub.Topics, sub.Qoss = subscribeID, []string{telemetry.DiagnosticsFilter(c.d.id)}, []byte{1}
	if err := sub.Write(conn); err != nil {
		return false, fmt.Errorf("mqtt subscribe: %w", err)
	}
	_ = conn.SetDeadline(time.Time{})

	// Up: what waits is sent again (with DUP set: the persistent session may hold it).
	c.mu.Lock()
	c.conn = conn
	for _, m := range c.out {
		c.write(publishPacket(m, true))
	}
	c.mu.Unlock()
	s.cloud.connects.Add(1)
	c.up.Store(true)
	defer func() {
		c.up.Store(false)
		c.mu.Lock()
		c.conn = nil
		c.mu.Unlock()
	}()
	pinger := c.pinger(conn)
	defer pinger.Stop()

	for {
		_ = conn.SetReadDeadline(s.now().Add(mqttKeepAlive * 3 / 2))
		p, err := readPacket(conn)
		if err != nil {
			return true, fmt.Errorf("mqtt read: %w", err)
		}
		switch p := p.(type) {
		case *packets.SubackPacket:
			for _, code := range p.ReturnCodes {
				if code > 1 {
					return true, fmt.Errorf("%w: subscription %#x", errRefused, code)
				}
			}
		case *packets.PubackPacket:
			c.acked(p.MessageID)
		case *packets.PublishPacket:
			c.request(ctx, p)
		case *packets.PingrespPacket:
		default:
			return true, fmt.Errorf("mqtt: unexpected %T", p)
		}
	}
}

// pinger sends PINGREQ every keep-alive period while conn is the session's.
func (c *cloudDevice) pinger(conn *tls.Conn) *time.Timer {
	var t *time.Timer
	t = time.AfterFunc(time.Hour, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.conn != conn {
			return
		}
		c.write(packets.NewControlPacket(packets.Pingreq))
		t.Reset(mqttKeepAlive)
	})
	t.Reset(mqttKeepAlive) // armed once t is set: the callback reads it
	return t
}

// write sends p on the session; a failed write ends it. Called with mu held.
func (c *cloudDevice) write(p packets.ControlPacket) {
	if c.conn == nil {
		return
	}
	_ = c.conn.SetWriteDeadline(c.d.s.now().Add(mqttWriteTimeout))
	if err := p.Write(c.conn); err != nil {
		c.conn.Close() //nolint:errcheck // the reader sees the end
		c.conn = nil
	}
}

func publishPacket(m outMessage, dup bool) *packets.PublishPacket {
	p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	p.Qos, p.Dup, p.TopicName, p.MessageID, p.Payload = 1, dup, m.topic, m.id, m.data
	return p
}

// publish queues a message and sends it when the session is up; past cloudQueueMessages
// the oldest telemetry is dropped (a reply only when there is no telemetry to drop).
func (c *cloudDevice) publish(topic string, data []byte, reply bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.out) >= cloudQueueMessages {
		i := max(slices.IndexFunc(c.out, func(m outMessage) bool { return !m.reply }), 0)
		c.out = slices.Delete(c.out, i, i+1)
		c.d.s.cloud.dropped.Add(1)
	}
	m := outMessage{id: c.newID(), reply: reply, topic: topic, data: data}
	c.out = append(c.out, m)
	c.write(publishPacket(m, false))
}

// newID is a packet ID no waiting message holds. Called with mu held.
func (c *cloudDevice) newID() uint16 {
	for {
		c.nextID++
		if c.nextID <= subscribeID {
			continue
		}
		if !slices.ContainsFunc(c.out, func(m outMessage) bool { return m.id == c.nextID }) {
			return c.nextID
		}
	}
}

// acked forgets the message the broker acknowledged.
func (c *cloudDevice) acked(id uint16) {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := slices.IndexFunc(c.out, func(m outMessage) bool { return m.id == id })
	if i < 0 {
		return // dropped meanwhile, or a duplicate PUBACK
	}
	if !c.out[i].reply {
		c.d.s.cloud.sent.Add(1)
	}
	c.out = slices.Delete(c.out, i, i+1)
	if len(c.out) == 0 {
		c.out = nil // an idle device holds no array
	}
}

// request handles a message on the device's diagnostics subscription as the cloud link
// does: acknowledged at once, on the device's own request topic only, each request ID run
// once, decoded strictly, "expired" past its deadline, "busy" while another runs.
func (c *cloudDevice) request(ctx context.Context, p *packets.PublishPacket) {
	if p.Qos > 0 {
		ack := packets.NewControlPacket(packets.Puback).(*packets.PubackPacket)
		ack.MessageID = p.MessageID
		c.mu.Lock()
		c.write(ack)
		c.mu.Unlock()
	}
	addr, err := telemetry.ParseTopic(p.TopicName)
	if err != nil || addr.Kind != telemetry.KindDiagnostics || addr.Device != c.d.id {
		return
	}
	id := addr.Request
	c.mu.Lock()
	seen := slices.Contains(c.seen, id)
	if !seen {
		if len(c.seen) == maxSeenIDs {
			c.seen = c.seen[1:]
		}
		c.seen = append(c.seen, id)
	}
	c.mu.Unlock()
	if seen {
		return
	}
	req, err := telemetry.DecodeRequest(p.Payload)
	if err == nil && req.ID != id {
		err = errors.New("the request's id is not its topic's")
	}
	now := c.d.s.now()
	switch {
	case err != nil:
		c.reply(id, nil, cloudlink.ReplyMalformed)
		return
	case !now.Before(req.Deadline):
		c.reply(id, nil, cloudlink.ReplyExpired)
		return
	}
	c.mu.Lock()
	busy := c.busy
	c.busy = true
	c.mu.Unlock()
	if busy {
		c.reply(id, nil, cloudlink.ReplyBusy)
		return
	}
	go func() {
		defer func() {
			c.mu.Lock()
			c.busy = false
			c.mu.Unlock()
		}()
		dctx, cancel := context.WithTimeout(ctx, min(req.Deadline.Sub(now), maxDiagnose))
		defer cancel()
		res, err := c.diagnose(dctx, req.Command, req.Args)
		switch {
		case ctx.Err() != nil:
			// Ending: not answered; the cloud times the request out.
		case err != nil && dctx.Err() != nil:
			c.reply(id, nil, cloudlink.ReplyTimeout)
		case err != nil:
			c.reply(id, nil, err.Error())
		default:
			c.reply(id, res, "")
		}
	}()
}

// reply queues the answer to request id: the result, or msg when not empty.
func (c *cloudDevice) reply(id string, result json.RawMessage, msg string) {
	r := telemetry.DiagnosticReply{V: telemetry.Version, ID: id, OK: msg == "", Result: result, At: c.d.s.now().UTC()}
	if msg != "" {
		r.Error = strings.ToValidUTF8(msg[:min(len(msg), telemetry.MaxMessageBytes)], "")
	}
	data, err := telemetry.Encode(r)
	if err != nil {
		c.d.s.log.Warn("simulated diagnostics reply refused", "device_id", c.d.id[:16], "err", err)
		return
	}
	c.d.s.cloud.diagnostics.Add(1)
	c.publish(telemetry.ReplyTopic(c.d.id, id), data, true)
}

// readPacket reads one MQTT packet of at most maxPacketBytes: the fixed header first, so
// that a length past the bound is refused before anything is allocated for it.
func readPacket(r io.Reader) (packets.ControlPacket, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:1]); err != nil {
		return nil, err
	}
	n, length, mult := 1, 0, 1
	for {
		if n == len(hdr) {
			return nil, errors.New("mqtt: malformed remaining length")
		}
		if _, err := io.ReadFull(r, hdr[n:n+1]); err != nil {
			return nil, err
		}
		length += int(hdr[n]&0x7f) * mult
		mult *= 128
		n++
		if hdr[n-1]&0x80 == 0 {
			break
		}
	}
	if length > maxPacketBytes {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", errPacketTooLarge, length, maxPacketBytes)
	}
	return packets.ReadPacket(io.MultiReader(bytes.NewReader(hdr[:n]), io.LimitReader(r, int64(length))))
}
