package broker

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/moat-iot/moat/internal/deviceca"
	"github.com/moat-iot/moat/internal/telemetry"
)

// authenticator is the server's CustomClientAuthentication: it admits devices over
// MQTT with their certificate, and the broker's own in-process client with its
// secret, and nothing else (DESIGN rule 1; ATTACKS rows 8 and 32 to 34).
type authenticator struct {
	trust     trust
	now       func() time.Time
	log       *slog.Logger
	onConnect func(Device)
	// internalUser and internalSecret are what the in-process client presents. The
	// secret is 32 random bytes made at Open and never leaves the process; no NATS
	// client port is bound (Options.DontListen), so only an in-process connection
	// could present it at all.
	internalUser   string
	internalSecret string
}

// Check admits or refuses a client. nats-server calls it on the connection's own
// goroutine, once, when the CONNECT arrives.
func (a *authenticator) Check(c server.ClientAuthentication) bool {
	if c.Kind() != server.CLIENT {
		return false
	}
	if c.GetTLSConnectionState() == nil {
		// Only the MQTT listener exists for the network, and it is TLS only: a
		// client without TLS is an in-process one.
		return a.checkInternal(c)
	}
	d, err := a.checkDevice(c)
	if err != nil {
		a.log.Warn("device refused", slog.String("remote_addr", remoteAddr(c)), slog.Any("error", err))
		return false
	}
	c.RegisterUser(&server.User{
		Username:    d.ID,
		Permissions: devicePermissions(d.ID),
		// The connection ends when the certificate does (rule 1: a device whose
		// software stops attesting gets no new certificate and so loses its cloud
		// within a day). The timer runs on the wall clock, so the remaining validity
		// by a.now is carried over to it. Attacked by
		// TestBroker_RetainedAndWillOfExpiredDeviceReachNoOne.
		ConnectionDeadline: time.Now().Add(d.CertNotAfter.Sub(a.now())),
	})
	a.log.Info("device connected", slog.String("device_id", d.ID), slog.String("product", d.Product),
		slog.String("serial", d.Serial), slog.Time("cert_not_after", d.CertNotAfter))
	if a.onConnect != nil {
		a.onConnect(d)
	}
	return true
}

func (a *authenticator) checkInternal(c server.ClientAuthentication) bool {
	o := c.GetOpts()
	if o == nil || o.Username != a.internalUser ||
		subtle.ConstantTimeCompare([]byte(o.Password), []byte(a.internalSecret)) != 1 {
		a.log.Warn("non-MQTT client refused", slog.String("remote_addr", remoteAddr(c)))
		return false
	}
	c.RegisterUser(&server.User{Username: a.internalUser, Permissions: internalPermissions()})
	return true
}

// Refusal reasons (logged; the device sees only CONNACK "not authorized").
var (
	errNoCertificate = errors.New("no client certificate")
	errClientID      = errors.New("client ID is not the certificate's device ID")
	errProduct       = errors.New("user name is not a product name")
	errTenant        = errors.New("device of another tenant")
)

func (a *authenticator) checkDevice(c server.ClientAuthentication) (Device, error) {
	st := c.GetTLSConnectionState()
	if len(st.PeerCertificates) == 0 {
		return Device{}, errNoCertificate
	}
	leaf := st.PeerCertificates[0]
	// Only the CAs of the chain file are intermediates, never what the client
	// presents: a CA the tenant did not download is no CA here. Attacked by
	// TestBroker_RejectsBadCertificates.
	tenant, id, _, err := deviceca.VerifyDevice(leaf, a.trust.cas, a.trust.root, a.now())
	if err != nil {
		return Device{}, err
	}
	if tenant != a.trust.tenant {
		return Device{}, fmt.Errorf("%w: %s", errTenant, tenant)
	}
	// Row 32: with the certificate of A and the client ID of B, A would take over
	// B's persistent session (its QoS 1 subscriptions and the requests queued for
	// it). Attacked by TestBroker_RejectsClientIDOfAnotherDevice and, for "#",
	// TestBroker_RejectsWildcards.
	cid, ok := mqttClientID(fmt.Sprint(c), c.GetID())
	if !ok || cid != id {
		return Device{}, fmt.Errorf("%w: device %s", errClientID, id)
	}
	product := ""
	if o := c.GetOpts(); o != nil {
		product = o.Username
	}
	if !nameRE.MatchString(product) {
		return Device{}, fmt.Errorf("%w: device %s: %.80q", errProduct, id, product)
	}
	return Device{
		ID:           id,
		Tenant:       tenant,
		Product:      product,
		CertNotAfter: leaf.NotAfter,
		Serial:       leaf.SerialNumber.Text(16),
	}, nil
}

// mqttClientID returns the MQTT client ID of the connection whose String() is s.
//
// nats-server does not give an authenticator the MQTT client ID. It does store it in
// the connection's description right before authenticating (mqtt.go,
// mqttPacketConnect: c.ncs.Store(fmt.Sprintf("%s - %q", c, c.mqtt.cid))), which then
// reads `<addr> - mid:<n> - "<client id>"`, where n is the connection's ID. That form
// is all there is, so it is parsed strictly, and anything else (a nats-server upgrade
// that changes it) refuses every device rather than admitting one under an ID it did
// not check. TestBroker_ValidDevicePublishes (mosquitto) and TestBroker_PahoPublishes
// fail if the form changes; FuzzMQTTClientID feeds it junk.
func mqttClientID(s string, connID uint64) (string, bool) {
	const mid = " - mid:"
	i := strings.Index(s, mid)
	if i < 0 {
		return "", false
	}
	n, quoted, ok := strings.Cut(s[i+len(mid):], " - ")
	if !ok || n != strconv.FormatUint(connID, 10) {
		return "", false
	}
	cid, err := strconv.Unquote(quoted)
	if err != nil || cid == "" || strconv.Quote(cid) != quoted {
		return "", false
	}
	return cid, true
}

// devicePermissions are the NATS subjects device id may use (the topics of
// internal/telemetry, '/' mapped to '.'):
//
//	publish   devices.<id>.telemetry, devices.<id>.events, devices.<id>.diagnostics.*.reply
//	subscribe devices.<id>.diagnostics.*, $MQTT.sub.>
//
// $MQTT.sub.> is the one internal subject nats-server's MQTT needs in a restricted
// user's permissions: a QoS 1 subscription is a JetStream consumer that delivers to
// $MQTT.sub.<nuid>, subscribed with the client's own permissions (mqtt.go,
// processQOS12Sub). A device cannot use it to read others' deliveries: nats-server
// refuses an MQTT SUBSCRIBE to any filter under $MQTT. (mqtt.go,
// mqttProcessSubs), and the inbox names are random. Storing a QoS 1 publish, the
// session and the acknowledgements go through the account's internal client, not the
// device's permissions. $MQTT.deliver.pubrel.> (QoS 2 deliveries) is not granted, so a
// QoS 2 subscription gets a failure SUBACK: devices use QoS 1.
//
// Everything else is refused: another device's topics (publish: dropped, nothing
// stored; subscribe: SUBACK 0x80), and every wildcard that reaches beyond
// devices.<id>.diagnostics.*. Attacked by TestBroker_RejectsPublishToAnotherDevice and
// TestBroker_RejectsWildcards.
func devicePermissions(id string) *server.Permissions {
	p := telemetry.SubjectPrefix + "." + id + "."
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			p + telemetry.KindTelemetry,
			p + telemetry.KindEvents,
			p + telemetry.KindDiagnostics + ".*." + telemetry.KindDiagnosticReply,
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{
			p + telemetry.KindDiagnostics + ".*",
			"$MQTT.sub.>",
		}},
	}
}

// internalPermissions let the in-process client do anything but speak as a device:
// what a device publishes (plain or as nats-server's MQTT stores it) comes only from
// that device. Attacked by TestBroker_InternalClientCannotForgeDevice.
func internalPermissions() *server.Permissions {
	var deny []string
	for _, s := range deviceSubjects {
		deny = append(deny, s, StoredPrefix+s)
	}
	return &server.Permissions{Publish: &server.SubjectPermission{Deny: deny}}
}

// deviceSubjects are the subjects devices publish on, any device.
var deviceSubjects = []string{
	telemetry.SubjectPrefix + ".*." + telemetry.KindTelemetry,
	telemetry.SubjectPrefix + ".*." + telemetry.KindEvents,
	telemetry.SubjectPrefix + ".*." + telemetry.KindDiagnostics + ".*." + telemetry.KindDiagnosticReply,
}

func remoteAddr(c server.ClientAuthentication) string {
	if a := c.RemoteAddress(); a != nil {
		return a.String()
	}
	return ""
}
